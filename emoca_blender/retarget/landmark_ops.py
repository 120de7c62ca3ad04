"""The Retarget panel's Detect Landmarks operator (thin: :mod:`.landmarks` does the work).

It renders the character's face, asks the backend's detector for its landmarks and leaves one empty per landmark
on the mesh (move them to adjust; the landmark solve reads them). One call, undoable; it blocks for the render and
the detector (seconds). Operator properties are Blender's annotations holding ``bpy.props`` calls: no types for
the type checker (``valid-type``).
"""

# mypy: disable-error-code="valid-type"
from __future__ import annotations

import bpy
from bpy.props import EnumProperty, IntProperty

from emoca_contract.errors import EmocaError

from .landmarks import FRONTS, DetectOptions, detect_landmarks
from .write import target_mesh

AXES = [(k, k, f"The world's {k} axis") for k in FRONTS]


class EMOCA_OT_retarget_landmarks(bpy.types.Operator):
    """Find the character's face landmarks: render its face, run the backend's detector on it, cast the points
    back onto the mesh and show them as empties (move them to adjust)"""

    bl_idname = "emoca.retarget_landmarks"
    bl_label = "Detect Landmarks"
    bl_options = {"REGISTER", "UNDO"}

    front: EnumProperty(name="Face Looks", items=AXES, default="-Y",
                        description="The world direction the face looks (Blender's front view: -Y)")  # fmt: skip
    up: EnumProperty(name="Up", items=AXES, default="+Z", description="The world direction of the head's top")
    pixels: IntProperty(name="Render Size", default=768, min=256, max=4096, description="The render's side, pixels")

    def execute(self, context):
        settings = context.scene.emoca_retarget
        try:
            mesh = target_mesh(settings.target or context.active_object)
            if context.window is not None:
                context.window.cursor_set("WAIT")
            detect_landmarks(mesh, DetectOptions(front=self.front, up=self.up, pixels=self.pixels))
        except EmocaError as exc:
            self.report({"ERROR"}, exc.report())
            return {"CANCELLED"}
        finally:
            if context.window is not None:
                context.window.cursor_set("DEFAULT")
        self.report({"INFO"}, f"68 landmarks on {mesh.name}: move its _lmNN empties to adjust them")
        return {"FINISHED"}


CLASSES = (EMOCA_OT_retarget_landmarks,)
