"""Rig export: which head becomes the Blender rig file (FLAME from the user's files, or the synthetic test head)."""
