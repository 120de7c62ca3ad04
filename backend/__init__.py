"""EMOCA for Blender: the PyTorch backend (runs in its own Python environment, never inside Blender)."""

__version__ = "0.1.0"
