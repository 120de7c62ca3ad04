"""This folder's tests run torch on one CPU thread (see tests/fixtures/torch_threads.py)."""

from tests.fixtures.torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)
