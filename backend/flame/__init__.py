"""FLAME: safe loaders for the official files, the LBS layer, landmarks, camera, and the rig export."""
