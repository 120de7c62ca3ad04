"""FaceReconstructor: the one object that turns 224x224 face crops into FLAME parameters and geometry.

    rec = FaceReconstructor.from_paths(model, flame)       # given files; no model: an UNTRAINED demo network
    out = rec.reconstruct(crops)                           # crops: (B,3,224,224) float [0,1] or (B,224,224,3) uint8

Encoders run in eval mode under ``torch.inference_mode``. Precision (``precision=``, :data:`PRECISIONS`):

* ``"fp32"`` (the default): the plain float32 network in NCHW, bit for bit what ``EmocaNet.encode`` gives.
* ``"bf16"``: bf16 autocast with channels_last weights and inputs, on CUDA and on CPUs with native bf16
  (x86 ``avx512_bf16`` / ``amx_bf16``, Arm ``bf16``; elsewhere oneDNN emulates it, slowly, with a warning).
* ``"auto"``: bf16 where it is native (measured on a 2-core avx512_bf16 CPU: about 2x faster, exp within a few
  thousandths of fp32, vertices within half a millimetre: docs/benchmarks.md "CPU precision"), fp32 elsewhere.

The FLAME decode always runs in float32 and every output is float32. Without a trained model the network is
randomly initialised (seeded), driven on the synthetic test head, and says so: ``info['trained'] is False``
plus a warning.
"""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from backend.flame.camera import CROP_SIZE, project
from backend.flame.data import FlameData
from backend.flame.io import load_flame
from backend.flame.landmarks import (
    LandmarkEmbedding,
    MediapipeEmbedding,
    load_landmark_embedding,
    load_mediapipe_embedding,
)
from backend.flame.layer import FLAME
from backend.models import loading
from backend.models.emoca import EmocaConfig, EmocaNet
from backend.synthetic.head import synthetic_head, synthetic_landmark_embedding
from emoca_contract.errors import EmocaError

UNTRAINED_WARNING = (
    "no trained EMOCA/DECA model is installed: using an UNTRAINED network (random weights) on the synthetic test "
    "head (not FLAME); results are meaningless. Import the official assets (python -m backend assets)."
)


Precision = Literal["fp32", "bf16", "auto"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "auto")
# /proc/cpuinfo flags that mean the CPU computes bf16 dot products natively (oneDNN's bf16 kernels use them)
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EmocaError("device_unavailable", f"device {device!r} was asked for, but CUDA is not available")
    return dev


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first processor (x86 ``flags``, Arm ``Features``); empty where unreadable
    (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when oneDNN has bf16 kernels here (torch's check) AND the CPU computes bf16 natively (its flags);
    torch's check alone is also true on plain AVX-512, where bf16 is emulated and slower than fp32."""
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    return bool((cpu_flags() if flags is None else flags) & NATIVE_BF16_FLAGS)


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Ampere or newer (compute capability 8+): bf16 tensor cores."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype | None, list[str]]:
    """(autocast dtype or None for plain float32, warnings) for ``precision`` on ``device``.

    ``auto`` picks bf16 only where it is native; an explicit ``bf16`` where it is emulated runs, with a warning.
    """
    if precision not in PRECISIONS:
        raise EmocaError(
            "config_invalid",
            f"precision {precision!r} is not one of {', '.join(PRECISIONS)}",
            "fp32 is the exact reference; bf16 is faster on CUDA and on CPUs with native bf16; auto picks.",
        )
    if precision == "fp32":
        return None, []
    native = cuda_has_native_bf16(device) if device.type == "cuda" else cpu_has_native_bf16()
    if precision == "auto":
        return (torch.bfloat16 if native else None), []
    if native:
        return torch.bfloat16, []
    where = "this GPU (before compute capability 8)" if device.type == "cuda" else f"this CPU ({platform.machine()})"
    return torch.bfloat16, [f"bf16 is emulated on {where}: it is likely slower than fp32 (--precision fp32|auto)"]


def _load_flame(flame: Any) -> FlameData:
    """A FlameData as given, or loaded from a FLAME file."""
    if isinstance(flame, FlameData):
        return flame
    return load_flame(flame)


def _load_landmarks(landmarks: Any) -> LandmarkEmbedding | None:
    """A LandmarkEmbedding (or None) as given, or loaded from ``landmark_embedding.npy``."""
    if landmarks is None or isinstance(landmarks, LandmarkEmbedding):
        return landmarks
    return load_landmark_embedding(landmarks)


def _load_mediapipe(mp: Any) -> MediapipeEmbedding | None:
    """A MediapipeEmbedding (or None) as given, or loaded from ``mediapipe_landmark_embedding.npz``."""
    if mp is None or isinstance(mp, MediapipeEmbedding):
        return mp
    return load_mediapipe_embedding(mp)


def calibrate_untrained(net: EmocaNet, head: Any, scale: float = 0.02, fill: float = 0.8) -> None:
    """Make a random network usable as a demo: small code variations around a camera that frames ``head``.

    The last Linear of each encoder is scaled down (outputs ~scale) and E_flame's cam bias is set so the
    template's x/y extent fills ``fill`` of the crop, centred.
    """
    v = np.asarray(head.v_template, np.float64)
    lo, hi = v[:, :2].min(axis=0), v[:, :2].max(axis=0)
    centre, half = (lo + hi) / 2.0, float((hi - lo).max() / 2.0)
    c = net.config
    with torch.no_grad():
        for enc in (net.E_flame, net.E_expression, net.E_detail):
            if enc is not None:
                _code_layer(enc).weight.mul_(scale)
                _code_layer(enc).bias.zero_()
        cam0 = c.n_shape + c.n_tex + c.n_exp + c.n_pose
        cam = _code_layer(net.E_flame)
        cam.weight[cam0 : cam0 + 3] *= 0.05  # cam is in metres: keep jitter ~1 mm
        cam.bias[cam0 : cam0 + 3] = torch.tensor([fill / half, -centre[0], -centre[1]])


def _code_layer(encoder: Any) -> torch.nn.Linear:
    """An encoder's output Linear (``layers[2]``), whose rows produce the codes."""
    return encoder.layers[2]


def _as_cpu_or_device_tensor(crops: Any) -> torch.Tensor:
    """A 4-D tensor sharing ``crops``' memory where it can: uint8 stays uint8 (B,H,W,3), floats become float32."""
    if isinstance(crops, np.ndarray):
        arr = crops[None] if crops.ndim == 3 else crops
        if arr.dtype == np.uint8:
            if arr.shape[-1] != 3:
                raise ValueError(f"uint8 crops must be (B, H, W, 3), got {crops.shape}")
            return torch.from_numpy(np.ascontiguousarray(arr))
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if isinstance(crops, torch.Tensor):
        return crops[None] if crops.ndim == 3 else crops
    raise TypeError(f"crops must be a numpy array or a torch tensor, got {type(crops).__name__}")


class FaceReconstructor:
    """EMOCA/DECA network + FLAME layer on one device. ``info``: name, trained, flame, device, dtype
    (float32 | bfloat16: what the encoders compute in), precision (as asked), warnings."""

    def __init__(
        self,
        net: EmocaNet,
        flame_layer: torch.nn.Module,
        device: torch.device,
        precision: str = "fp32",
        info: dict | None = None,
    ):
        self.device = device
        self.autocast_dtype, notes = resolve_precision(precision, device)
        # channels_last goes with bf16 only: in fp32 it changes the convolutions' summation order (~1e-6)
        self.channels_last = self.autocast_dtype is not None
        self.net = net.to(device).eval()
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.flame = flame_layer.to(device=device, dtype=torch.float32).eval()
        self.info = dict(info or {})
        self.info.setdefault("warnings", [])
        self.info["warnings"] = [*self.info["warnings"], *notes]
        for note in notes:
            warnings.warn(note, stacklevel=3)
        self.info["device"] = str(device)
        self.info["precision"] = precision
        self.info["dtype"] = str(self.autocast_dtype or torch.float32).replace("torch.", "")

    # ---- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_paths(
        cls,
        model: str | os.PathLike | None = None,
        flame: Any = None,
        device: str = "auto",
        precision: str = "fp32",
        landmarks: Any = None,
        mediapipe: Any = None,
        checkpoint_mode: str = "best",
        strict_flame: bool = False,
        seed: int = 0,
    ) -> FaceReconstructor:
        """model: EMOCA model folder or ``deca_model.tar``; flame: ``generic_model.pkl`` (or a FlameData);
        landmarks: ``landmark_embedding.npy`` (default: beside the FLAME file, the official layout). With no
        model, an UNTRAINED network on the synthetic head (``info['trained'] = False``). What is installed is
        the caller's to find (``backend.assets.resolve_capture``). precision: fp32 (the default: exact, what
        every caller gets unless it asks) | bf16 | auto (module docstring; capture passes ``--precision``)."""
        dev = resolve_device(device)
        if flame is not None and not isinstance(flame, FlameData):
            beside = Path(flame).parent
            if landmarks is None and (beside / "landmark_embedding.npy").is_file():
                landmarks = beside / "landmark_embedding.npy"
            if mediapipe is None and (beside / "mediapipe_landmark_embedding.npz").is_file():
                mediapipe = beside / "mediapipe_landmark_embedding.npz"

        if model is None:
            return cls._untrained(dev, precision, flame, landmarks, mediapipe, seed)

        if flame is None:
            raise EmocaError(
                "asset_missing",
                f"the model {model} needs the FLAME model (generic_model.pkl) to decode geometry; none was given "
                "or installed",
                "Pass --flame PATH/generic_model.pkl or import the FLAME assets (python -m backend assets import).",
            )
        flame_data = _load_flame(flame)
        model = Path(model)
        if model.is_dir() and not (model / "cfg.yaml").is_file() and model.name.startswith("deca_model"):
            loading.load_deca_tar(model)  # raises the "not a tar archive" message
        if model.is_dir():
            net, info = loading.load_emoca_folder(model, "cpu", checkpoint_mode, flame_data, strict_flame)
        else:
            net, info = loading.load_deca_tar(model)
        emb, mp = _load_landmarks(landmarks), _load_mediapipe(mediapipe)
        if emb is None:
            info["warnings"].append(
                "no landmark embedding (landmark_embedding.npy next to the FLAME file): landmarks are not computed"
            )
        info["flame"] = flame_data.name
        info["flame_source"] = str(flame_data.source)
        for w in info["warnings"]:
            warnings.warn(w, stacklevel=2)
        return cls(net, FLAME(flame_data, emb, mp), dev, precision, info)

    @classmethod
    def _untrained(cls, dev, precision, flame, landmarks, mediapipe, seed) -> FaceReconstructor:
        if flame is not None:
            head, emb = _load_flame(flame), _load_landmarks(landmarks)
        else:
            head = synthetic_head(seed)
            emb = synthetic_landmark_embedding(head)
        g_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            net = EmocaNet(EmocaConfig.emoca())
        finally:
            torch.random.set_rng_state(g_state)
        calibrate_untrained(net, head)
        warnings.warn(UNTRAINED_WARNING, stacklevel=3)
        info = {
            "name": "untrained (random weights)",
            "kind": "EMOCA",
            "trained": False,
            "checkpoint": None,
            "config": net.config.to_dict(),
            "flame": head.name,
            "seed": seed,
            "warnings": [UNTRAINED_WARNING],
        }
        return cls(net, FLAME(head, emb, _load_mediapipe(mediapipe)), dev, precision, info)

    # ---- inference -------------------------------------------------------------------------------------------
    def to_tensor(self, crops: Any) -> torch.Tensor:
        """(B,3,224,224) float [0,1] tensor/array, or (B,224,224,3) / (224,224,3) uint8 -> float32 on device.

        uint8 crops travel as uint8 (a quarter of the bytes) and become float on the device; on CUDA the host
        copy is pinned so that the transfer is asynchronous."""
        t = _as_cpu_or_device_tensor(crops)
        if t.device.type == "cpu" and self.device.type == "cuda":
            t = t.pin_memory()
        t = t.to(self.device, non_blocking=True)
        if t.dtype == torch.uint8:
            t = (t.permute(0, 3, 1, 2) if t.shape[-1] == 3 else t).float().div_(255.0)
        if t.ndim != 4 or t.shape[1:] != (3, CROP_SIZE, CROP_SIZE):
            raise ValueError(
                f"crops must be (B, 3, {CROP_SIZE}, {CROP_SIZE}) float or (B, {CROP_SIZE}, {CROP_SIZE}, 3) uint8; "
                f"got {tuple(t.shape)}"
            )
        return t.to(torch.float32)

    def encode(self, crops: Any, detail: bool = True) -> dict[str, torch.Tensor]:
        """-> shape (B,100), tex (B,50), exp (B,50), pose (B,6), cam (B,3), light (B,9,3), detail (B,128) float32."""
        x = self.to_tensor(crops)
        with torch.inference_mode():
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.autocast_dtype is not None:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    codes = self.net.encode(x, detail=detail)
            else:
                codes = self.net.encode(x, detail=detail)
        return {k: v.float() for k, v in codes.items()}

    def decode(self, codes: dict[str, Any]) -> dict[str, torch.Tensor]:
        """FLAME in float32 -> vertices (B,V,3) and joints (B,5,3) in model space; landmarks2d (B,68,2) in
        normalised crop coords [-1,1] (+y down, dynamic contour); landmarks3d (B,68,3) the static 68-point
        embedding in model space (before projection, as the encode contract says); landmarks_mp (B,105,2)
        projected like landmarks2d, when embedded."""

        def t(name):
            return torch.as_tensor(codes[name], dtype=torch.float32, device=self.device)

        with torch.inference_mode():
            cam = t("cam")
            out = self.flame(t("shape"), t("exp"), t("pose"))
            res = {"vertices": out.vertices, "joints": out.joints}
            if out.landmarks2d is not None:
                res["landmarks2d"] = project(out.landmarks2d, cam)[..., :2]
            if out.landmarks3d is not None:
                res["landmarks3d"] = out.landmarks3d
            if out.landmarks_mp is not None:
                res["landmarks_mp"] = project(out.landmarks_mp, cam)[..., :2]
        return res

    def decode_detail(self, codes: dict[str, Any]) -> torch.Tensor:
        """-> (B, 1, 256, 256) UV displacement (needs codes['detail'])."""
        with torch.inference_mode():
            c = {k: torch.as_tensor(v, dtype=torch.float32, device=self.device) for k, v in codes.items()}
            return self.net.decode_detail(c).float()

    def reconstruct(self, crops: Any, as_numpy: bool = True, detail: bool = True) -> dict:
        """encode + decode: the codes and the geometry in one dict (numpy float32 arrays, or torch tensors)."""
        codes = self.encode(crops, detail=detail)
        out = {**codes, **self.decode(codes)}
        if as_numpy:
            return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in out.items()}
        return out
