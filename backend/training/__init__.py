"""EMOCA training: losses, data, Lightning modules and the `python -m backend train` command (docs/training.md)."""
