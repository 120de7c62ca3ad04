"""The ICT-FaceKit head (MIT, USC ICT), the open head model beside FLAME: loading the vendored reduced copy
(:mod:`.data`), rebuilding it from the full model (:mod:`.reduce`, developer tool) and its open rig
(:mod:`.rig`: ARKit-named shapes, bones, skinning, drivers; the rig file and a numpy evaluation of it)."""
