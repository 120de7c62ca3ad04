"""The emotion plot of a take (``--plot``): valence/arousal and the class probabilities over time, as a PNG; a
take with ARKit scores (an open take, or an EMOCA take whose detector gave them) adds its most active channels.

matplotlib's object API only (no pyplot: no global state, safe in the capture's threads); frames without a face
are shaded grey and left out of the curves.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from emoca_contract.take import Take, read_take


def top_columns(values: np.ndarray, valid: np.ndarray, k: int, by: str = "mean") -> np.ndarray:
    """Indices of the ``k`` columns of (N, C) ``values`` that score highest over the valid rows (most first):
    ``by="mean"`` (class probabilities: the classes the clip is mostly in) or ``"range"`` (ARKit scores: the
    channels the performance moves, not the ones that sit high at rest; 5th to 95th percentile)."""
    if not valid.any():
        return np.arange(min(k, values.shape[1]))
    rows = values[valid]
    if by == "range":
        score = np.percentile(rows, 95, axis=0) - np.percentile(rows, 5, axis=0)
    else:
        score = rows.mean(axis=0)
    return np.argsort(-score, kind="stable")[:k]


def plot_emotion(
    take: Take | str | os.PathLike, out_png: str | os.PathLike, top_classes: int = 8, top_arkit: int = 8
) -> Path:
    """Valence/arousal (smoothed solid, raw faint), the class probabilities and (when the take has them) the
    ``top_arkit`` most active ARKit scores over time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, thread-safe

    if not isinstance(take, Take):
        take = read_take(take)
    t = take["time"]
    valid = take["valid"]
    classes = take.classes or [f"class {i}" for i in range(take["expression"].shape[1])]
    va_note = take.meta.get("emotion", {}).get("valence_arousal", "")
    arkit = take.arkit_names
    fig = Figure(figsize=(10, 8.5 if arkit else 6), dpi=100, layout="constrained")
    axes = fig.subplots(3 if arkit else 2, 1, sharex=True)
    ax1, ax2 = axes[0], axes[1]

    def masked(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64).copy()
        a[~valid] = np.nan
        return a

    for key, color in (("valence", "tab:blue"), ("arousal", "tab:red")):
        if "raw_" + key in take:
            ax1.plot(t, masked(take["raw_" + key]), color=color, alpha=0.3, lw=1)
        ax1.plot(t, masked(take[key]), color=color, lw=1.8, label=key)
    ax1.axhline(0, color="grey", lw=0.5)
    ax1.set_ylim(-1.05, 1.05)
    ax1.set_ylabel("valence / arousal")
    ax1.legend(loc="upper right")
    title = f"{Path(str(take.meta.get('source', {}).get('path', ''))).name}: emotion"
    if va_note:
        title += f" (valence/arousal {va_note})"
    ax1.set_title(title, fontsize=9)
    probs = take["expression"]
    for c in top_columns(probs, valid, top_classes):
        ax2.plot(t, masked(probs[:, c]), lw=1.2, label=classes[c])
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("probability")
    ax2.legend(loc="upper right", fontsize=7, ncol=2)
    if arkit:
        scores = take["arkit"]
        for c in top_columns(scores, valid, top_arkit, by="range"):
            axes[2].plot(t, masked(scores[:, c]), lw=1.2, label=arkit[c])
        axes[2].set_ylim(0, 1)
        axes[2].set_ylabel("ARKit score")
        axes[2].legend(loc="upper right", fontsize=7, ncol=2)
    axes[-1].set_xlabel("time (s)")
    for ax in axes:  # shade frames without a face
        if (~valid).any():
            ax.fill_between(t, 0, 1, where=~valid, transform=ax.get_xaxis_transform(), color="grey", alpha=0.15, lw=0)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial.png")
    fig.savefig(tmp)
    os.replace(tmp, out)
    return out
