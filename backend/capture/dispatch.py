"""Where a batch runs: here (backend.capture.batch.run_batch: ``--jobs N`` worker processes) or on a Ray cluster
(backend.capture.ray_backend.run_ray_batch: ``--ray``). Above both, so neither imports the other; ray (slow to
import) is imported only when a batch goes to Ray.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from backend.capture.batch import BatchOptions, BatchReport, ClipProgress, ClipResult, run_batch
from backend.capture.manifest import ClipJob
from backend.capture.options import Warn


def capture_batch(
    jobs: list[ClipJob],
    options: BatchOptions | None = None,
    ray: Any = None,
    progress: ClipProgress | None = None,
    on_clip: Callable[[int, ClipResult], None] | None = None,
    cancel: threading.Event | None = None,
    warn: Warn | None = None,
) -> BatchReport:
    """Run the batch here (:func:`run_batch`) or, with ``ray`` (a backend.capture.ray_backend.RayOptions), on Ray
    (per-frame ``progress`` is reported here only: Ray reports each clip's end)."""
    if ray is None:
        return run_batch(jobs, options, progress, on_clip, cancel, warn)
    from backend.capture.ray_backend import run_ray_batch  # here: it imports ray (slow)

    if options is not None:
        ray = dataclasses.replace(ray, overwrite=options.overwrite)
    return run_ray_batch(jobs, ray, on_clip, cancel, warn)
