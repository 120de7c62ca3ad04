"""Which curves a retarget keys: the options ``method`` and ``flame_channels`` (docs/retarget.md).

* ``method="names"`` (the default): the take's ARKit channels, matched to the character's keys by name (or by the
  mapping given). For a FLAME take they come, with ``flame_channels="map"`` (the default), from its FLAME
  expression and jaw through the FLAME <-> ARKit map (:mod:`.flame`); with ``"detector"`` from the detector's
  own ARKit scores stored in the take;
* ``method="landmarks"``: the landmark-driven solve over the character's own keys, whatever their names
  (:mod:`.landmarks`); the take's curves are named after the keys and an identity mapping keys them (a given
  mapping is used instead, its sources being key names).

``arkit_map``: a map file to use; empty: the backend's map for the take's FLAME model (built once, cached).
"""

from __future__ import annotations

from typing import Any

from emoca_contract.landmark_solve import SolveOptions
from emoca_contract.take import Take

from .flame import flame_source, load_map
from .landmarks import landmark_source
from .options import RetargetOptions
from .sources import SourceCurves, source_curves


def take_source(mesh_obj: Any, take: Take, options: RetargetOptions, mapping: Any,
                python: str | None = None) -> tuple[SourceCurves, Any]:  # fmt: skip
    """(source curves, the mapping to key them with) for ``take`` on ``mesh_obj`` (module docstring)."""
    arkit_map = options.arkit_map or None
    if options.method == "landmarks":
        solve = SolveOptions(smoothness=options.smoothness)
        source, identity = landmark_source(mesh_obj, take, load_map(take, arkit_map, python), solve)
        return source, identity if mapping is None else mapping
    if take.kind == "flame" and options.flame_channels == "map":
        return flame_source(take, load_map(take, arkit_map, python)), mapping
    return source_curves(take), mapping
