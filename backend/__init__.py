"""EMOCA for Blender: the PyTorch backend (runs in its own Python environment, never inside Blender)."""

from emoca_contract import __version__

__all__ = ["__version__"]
