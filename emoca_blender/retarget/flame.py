"""FLAME takes through the FLAME <-> ARKit map (docs/retarget.md "The FLAME <-> ARKit map"): the map a take needs,
its ARKit source curves, and the FLAME coefficients of an open take (numpy + the contract; the backend only builds
the map).

* :func:`map_fields` / :func:`load_map`: the map of the head a take was captured on: the given file, else the
  backend's (an ``arkit_map`` request: built once per FLAME model and cached, so later calls only read it). A
  FLAME take captured on the synthetic test head gets the synthetic head's map; an open take (ARKit channels, no
  FLAME) the installed FLAME's, else the synthetic head's (it only needs the map's ICT landmarks);
* :func:`flame_source`: a FLAME take's source curves: ``emoca_contract.arkit_map.flame_to_arkit`` of its exp and
  jaw, the channels FLAME cannot show (gaze, tongue: ``meta.not_carried``) left out so their keys keep their
  values; the jaw bone keeps following FLAME's own jaw rotation;
* :func:`open_to_flame`: an open take's FLAME expression and jaw (``arkit_to_flame``), for a FLAME rig.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from emoca_contract.arkit_map import ArkitMap, arkit_to_flame, flame_to_arkit, read_arkit_map
from emoca_contract.errors import EmocaError
from emoca_contract.take import Take

from .. import client
from ..preferences import backend_python
from .sources import SourceCurves


def captured_on_synthetic(take: Take) -> bool:
    """Whether a FLAME take says it was captured on the synthetic test head (meta.model.flame)."""
    return "not FLAME" in str(take.meta.get("model", {}).get("flame", ""))


def map_fields(take: Take, flame: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ``arkit_map`` request's fields for the head behind ``take`` (module docstring); ``flame`` a FLAME file
    to use instead of the installed one."""
    if take.kind == "flame" and captured_on_synthetic(take):
        return {"head": "synthetic"}
    fields: dict[str, Any] = {"head": "flame", "n_exp": max(take.n_exp, 50)}
    if flame:
        fields["flame"] = str(flame)
    return fields


def request_map(fields: dict[str, Any], python: str | None = None) -> Path:
    """Ask the backend for a map (built and cached there when missing); its path."""
    result = client.run_request(python or backend_python(), "arkit_map", **fields)
    return Path(result["files"][0])


def load_map(take: Take, arkit_map: str | os.PathLike | ArkitMap | None = None, python: str | None = None,
             flame: str | os.PathLike | None = None) -> ArkitMap:  # fmt: skip
    """The map for ``take``: ``arkit_map`` (a map, or a map file) when given, else the backend's. An open take
    with no FLAME installed falls to the synthetic head's map (it needs only the ICT landmarks every map holds)."""
    if isinstance(arkit_map, ArkitMap):
        return arkit_map
    if arkit_map:
        return read_arkit_map(arkit_map)
    fields = map_fields(take, flame)
    if take.kind == "open":
        try:
            return read_arkit_map(request_map(fields, python))
        except EmocaError as exc:
            if exc.code != "asset_missing":
                raise
            fields = {"head": "synthetic"}
    return read_arkit_map(request_map(fields, python))


def flame_source(take: Take, m: ArkitMap) -> SourceCurves:
    """A FLAME take's source curves: the carried ARKit channels from its exp and jaw_pose (module docstring)."""
    values = flame_to_arkit(m, take["exp"], take["jaw_pose"]).astype(np.float64)
    keep = [i for i, c in enumerate(m.carried) if c]
    figures = m.meta.get("figures", {})
    note = (f"FLAME take through the FLAME <-> ARKit map of {m.meta.get('model', 'its FLAME model')} "
            f"(landmark error {figures.get('forward_error_pct', '?')} % of the face size)")  # fmt: skip
    return SourceCurves(
        names=[m.names[i] for i in keep],
        values=values[:, keep],
        head=np.asarray(take["global_pose"], np.float64),
        jaw=np.asarray(take["jaw_pose"], np.float64),
        note=note,
        unobserved=[n for n, c in zip(m.names, m.carried) if not c],
    )


def open_to_flame(take: Take, m: ArkitMap) -> tuple[np.ndarray, np.ndarray]:
    """An open take's FLAME (exp (N, E), jaw axis-angle (N, 3)) through the map's inverse."""
    values = np.zeros((take.n_frames, len(m.names)))
    for column, name in enumerate(take.arkit_names):
        values[:, m.names.index(name)] = take["arkit"][:, column]
    return arkit_to_flame(m, values)
