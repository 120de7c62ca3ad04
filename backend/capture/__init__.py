"""Capture: footage in, one take file per tracked face out; one clip, a batch of many, or a Ray cluster.

options.py (CaptureOptions and the words that build them), reader.py (the decode/detect/track/crop front end: a
thread here), networks.py (loading and running the reconstructor + emotion network), output.py (the output checked,
locked and written safely: nothing lost), pipeline.py (capture(): the batcher, track selection, finalisation).
Many clips: manifest.py (inputs, folders, globs and manifests -> one ClipJob per clip), batch.py (resume, one
clip's run, the report; the networks loaded once), workers.py (the front end in worker processes: ``--jobs N``),
ray_backend.py (the clips on Ray actors: ``--ray``; imports ray), dispatch.py (capture_batch: here or on Ray).
The public API is re-exported here.
"""

from backend.capture.batch import BatchOptions, BatchReport, run_batch
from backend.capture.dispatch import capture_batch
from backend.capture.manifest import ClipJob, clip_jobs
from backend.capture.networks import load_networks
from backend.capture.options import CaptureOptions
from backend.capture.pipeline import capture, summary

__all__ = [
    "BatchOptions",
    "BatchReport",
    "CaptureOptions",
    "ClipJob",
    "capture",
    "capture_batch",
    "clip_jobs",
    "load_networks",
    "run_batch",
    "summary",
]
