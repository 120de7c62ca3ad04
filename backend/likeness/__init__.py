"""The performer's likeness from a take and its footage (docs/likeness.md): identity, texture and detail maps.

identity.py (a robust per-clip identity: FLAME shape codes averaged over confident frames, or ICT's identity modes
fitted to the clip's landmarks with each frame's expression and pose held; the identity file), embedding.py (where
the Face Landmarker's points lie on the ICT head: the vendored calibration the open fit uses), texture.py (the
visible face unwrapped into the rig's UV layout over the clip, mirrored and filled, saved as a PNG), detail.py
(EMOCA's per-frame UV displacement maps as a 16-bit PNG sequence), run.py (``likeness()``: what the command and
the protocol request run, writing the files beside the take and the sidecar that says where they are).
"""
