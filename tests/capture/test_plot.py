"""The emotion plot picks the ARKit channels a performance moves, not the ones that sit high at rest."""

from __future__ import annotations

import numpy as np

from backend.take.plot import top_columns


def test_arkit_channels_are_ranked_by_how_much_they_move():
    t = np.linspace(0, 1, 100)
    resting_high = np.full(100, 0.6)  # e.g. eyeSquint on a face at rest
    moving = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))  # e.g. jawOpen during the performance
    small = 0.1 * np.sin(2 * np.pi * t) + 0.1
    values = np.stack([resting_high, small, moving], 1)
    valid = np.ones(100, bool)
    assert list(top_columns(values, valid, 2, by="range")) == [2, 1]
    assert list(top_columns(values, valid, 1, by="mean")) == [0]  # class probabilities: the dominant class
    valid[:] = False
    assert list(top_columns(values, valid, 2)) == [0, 1]  # no valid row: a stable choice, no NaN warnings
