"""Capture: footage in, one take file per tracked face out.

options.py (CaptureOptions and the words that build them), reader.py (the decode/detect/track/crop thread),
networks.py (loading and running the reconstructor + emotion network), pipeline.py (capture(): the batcher, track
selection, finalisation). The public API is re-exported here.
"""

from backend.capture.networks import load_networks
from backend.capture.options import CaptureOptions
from backend.capture.pipeline import capture, summary

__all__ = ["CaptureOptions", "capture", "load_networks", "summary"]
