"""What a take gives a retarget: its "source curves" (numpy + the contract).

:class:`SourceCurves` is the one interface between takes and the engine: channel names and values (N, C) at the
take's rows, the head rotation and (when the take has one) the jaw rotation, and a note saying where the channels
come from. Any producer of channels (the FLAME <-> ARKit map, a landmark solve) plugs in by giving one.
* open take (or a Live Link Face CSV, read as an open take): its 52 ARKit channels; channels the detector never
  estimates (``meta.arkit.unobserved``, e.g. ``tongueOut``) are left out, so their keys are not animated; the
  jaw bone follows ``jawOpen`` (see :mod:`.bones`);
* FLAME take: its own detector ARKit channels when it carries them (said in the note; FLAME's expression is not
  converted here), and FLAME's jaw rotation (``jaw_pose``) for the jaw bone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emoca_contract.arkit import ARKIT_NAMES
from emoca_contract.livelink import read_csv, take_arkit
from emoca_contract.take import Take, read_take


@dataclass
class SourceCurves:
    """Channels of a take at its N rows (docstring above). ``jaw`` None: the jaw bone follows ``jawOpen``."""

    names: list[str]  # C channel names
    values: np.ndarray  # (N, C) float64
    head: np.ndarray | None  # (N, 3) axis-angle, the take's camera frame
    jaw: np.ndarray | None  # (N, 3) axis-angle
    note: str
    unobserved: list[str] = field(default_factory=list)  # channels the take holds but never observed

    def channel(self, name: str) -> np.ndarray | None:
        """One channel's values (N,), None when the source has no such channel."""
        return self.values[:, self.names.index(name)] if name in self.names else None


def load_take(take: str | os.PathLike | Take, fps: float | None = None, angles: str = "radians") -> Take:
    """A take file (.npz), a Live Link Face CSV (.csv: ``fps`` and ``angles`` as :func:`~emoca_contract.livelink.
    read_csv` takes them) or a Take, read and checked."""
    if isinstance(take, Take):
        return take
    path = Path(take)
    if path.suffix.lower() == ".csv":
        return read_csv(path, fps=fps, angles=angles)
    return read_take(path)


def source_curves(take: Take) -> SourceCurves:
    """The source curves of ``take`` (module docstring); a take with no channels to retarget is config_invalid."""
    curves = take_arkit(take)
    unobserved = [n for n in take.meta.get("arkit", {}).get("unobserved", []) if n in ARKIT_NAMES]
    keep = [i for i, n in enumerate(ARKIT_NAMES) if n not in unobserved]
    jaw = np.asarray(take["jaw_pose"], np.float64) if take.kind == "flame" else None
    return SourceCurves(
        names=[ARKIT_NAMES[i] for i in keep],
        values=curves.values[:, keep],
        head=np.asarray(take["global_pose"], np.float64),
        jaw=jaw,
        note=curves.note,
        unobserved=unobserved,
    )
