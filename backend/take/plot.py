"""The emotion plot of a take (``--plot``): valence/arousal and the class probabilities over time, as a PNG.

matplotlib's object API only (no pyplot: no global state, safe in the capture's threads); frames without a face
are shaded grey and left out of the curves.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from emoca_contract.take import Take, read_take


def plot_emotion(take: Take | str | os.PathLike, out_png: str | os.PathLike, top_classes: int = 8) -> Path:
    """Valence/arousal (smoothed solid, raw faint) and the class probabilities over time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, thread-safe

    if not isinstance(take, Take):
        take = read_take(take)
    t = take["time"]
    valid = take["valid"]
    classes = take.classes or [f"class {i}" for i in range(take["expression"].shape[1])]
    va_note = take.meta.get("emotion", {}).get("valence_arousal", "")
    fig = Figure(figsize=(10, 6), dpi=100, layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, sharex=True)

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
    order = np.argsort(
        -np.nanmean(np.where(valid[:, None], probs, np.nan), axis=0) if valid.any() else np.zeros(len(classes))
    )[:top_classes]
    for c in order:
        ax2.plot(t, masked(probs[:, c]), lw=1.2, label=classes[c])
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("probability")
    ax2.set_xlabel("time (s)")
    ax2.legend(loc="upper right", fontsize=7, ncol=2)
    for ax in (ax1, ax2):  # shade frames without a face
        if (~valid).any():
            ax.fill_between(t, 0, 1, where=~valid, transform=ax.get_xaxis_transform(), color="grey", alpha=0.15, lw=0)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial.png")
    fig.savefig(tmp)
    os.replace(tmp, out)
    return out
