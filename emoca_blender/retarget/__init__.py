"""Retargeting: any take onto any character's shape keys and bones (docs/retarget.md).

The package owns the way from a take (or a Live Link Face CSV) to keys on a character that is not an EMOCA rig:
* bpy-free steps (stdlib + numpy + the contract; unit-tested with plain pytest): :mod:`.naming` (match channel
  names to shape-key names across the naming schemes artists use), :mod:`.mapping` (the editable mapping: source
  channel -> target keys with gain, offset and clamp, bone settings, JSON presets), :mod:`.bones` (axis remaps,
  the jaw from ``jawOpen``, quaternions to the bones' rotation modes), :mod:`.sources` (a take's "source curves":
  channel names and values (N, C), head and jaw rotations), :mod:`.engine` (sampling at scene frames, source
  curves -> key curves and bone rotations), :mod:`.options` (:class:`~.options.RetargetOptions`);
* Blender steps: :mod:`.write` (``write_key_curves``: the one validate-then-write writer with rollback, also used
  by the landmark solve), :mod:`.run` (``retarget``: plan, then write), :mod:`.props`, :mod:`.ops`, :mod:`.panel`
  (the panel's mapping, operators and subpanel), :mod:`.command` (``blender -c emoca retarget``), :mod:`.bench`
  (``python -m emoca_blender.retarget.bench``: the benchmark and its procedurally built test character);
* other sources of curves: :mod:`.flame` (a FLAME take through the FLAME <-> ARKit map, and the map it needs),
  :mod:`.landmarks` (the landmark-driven solve for keys with any names: detection on a headless render, the
  landmark empties, each key's effect, the solve), :mod:`.landmark_ops` (Detect Landmarks), :mod:`.methods`
  (which source a retarget uses: options ``method`` and ``flame_channels``).
"""
