"""One torch CPU thread for this folder's tests: the tensors are small, and several threads thrash a shared,
busy CPU (measured: 0.27 s vs 2-11 s per tiny training step). Restored afterwards."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    try:
        import torch
    except ImportError:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
