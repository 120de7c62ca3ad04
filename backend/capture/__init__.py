"""Capture: footage in, one take file per tracked face out (options, the reader thread, the networks, the
batching pipeline). The entry point is :func:`backend.capture.pipeline.capture`."""
