"""Synthetic test material with known ground truth, honestly named: the synthetic test head (not FLAME), generated
test clips (encoded with PyAV), rendered head clips and synthetic takes. Used by tests, the demo, benchmarks and
the untrained fallback; never presented as a real capture."""
