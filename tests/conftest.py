"""Shared test harness: markers (blender, slow, gpu, torch), visible skips, temp folders with non-ASCII names."""

from __future__ import annotations

import importlib.util

import pytest

HAS_TORCH = importlib.util.find_spec("torch") is not None


def _cuda_available() -> bool:
    if not HAS_TORCH:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    cuda = _cuda_available()
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU: none on this machine (run on a lent GPU machine)")
    skip_torch = pytest.mark.skip(reason="needs torch: not installed in this environment (Blender 4.2 test env)")
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)
        if "torch" in item.keywords and not HAS_TORCH:
            item.add_marker(skip_torch)


@pytest.fixture
def unicode_tmp(tmp_path):
    """A temp folder whose name is not ASCII (paths with accents and CJK must work end to end)."""
    d = tmp_path / "prise de vue é 顔"
    d.mkdir()
    return d
