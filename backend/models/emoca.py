"""The EMOCA/DECA network: configuration from an official ``cfg.yaml`` and the encode/decode-detail graph.

Inference graph (emoca.md 10.1): ``E_flame`` -> 236 DECA parameters, split [shape 100 | tex 50 | exp 50 |
pose 6 (global 3, jaw 3) | cam 3 | light 27 -> (9, 3)]; EMOCA's ``E_expression`` replaces ``exp`` (and, when
``exp_deca_global_pose`` / ``exp_deca_jaw_pose`` are set, the corresponding pose parts); ``E_detail`` -> 128;
``D_detail(jaw | exp | detail)`` -> 256x256 UV displacement.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from backend.models.detail import DetailGenerator
from backend.models.encoders import ResnetEncoder, SecondHeadResnet
from emoca_contract.errors import EmocaError

DECA_CLASSES = ("DECA", "ExpDECA")
EXPRESSION_BACKBONES = ("deca_clone", "deca_parallel")
DEPRECATED_BACKBONES = ("emonet_trainable", "emonet_static")
CONDITIONING = ("jawpose", "expression", "detail")
# Order of the extra E_expression outputs after the n_exp expression values when both pose flags are set
# [derived: not visible in the spec; chosen to mirror DECA's pose layout [global | jaw]]. Override with
# EmocaConfig.expression_pose_order if a checkpoint proves otherwise.
DEFAULT_EXPRESSION_POSE_ORDER = ("global", "jaw")


@dataclass
class EmocaConfig:
    """What is needed to rebuild the network (cfg.yaml ``model`` section, emoca.md 2.4)."""

    deca_class: str = "DECA"
    expression_backbone: str | None = None
    exp_deca_jaw_pose: bool = False
    exp_deca_global_pose: bool = False
    n_shape: int = 100
    n_tex: int = 50
    n_exp: int = 50
    n_pose: int = 6
    n_cam: int = 3
    n_light: int = 27
    n_detail: int = 128
    mode: str = "detail"
    detail_conditioning: tuple[str, ...] = CONDITIONING
    expression_pose_order: tuple[str, ...] = DEFAULT_EXPRESSION_POSE_ORDER
    stage: str = ""  # "coarse" / "detail": which section of cfg.yaml this came from ("" = not from a cfg)
    extra: dict = field(default_factory=dict)

    # ---- constructors -------------------------------------------------------------------------------------
    @classmethod
    def deca(cls) -> EmocaConfig:
        """DECA (deca_model.tar): no expression encoder."""
        return cls()

    @classmethod
    def emoca(cls) -> EmocaConfig:
        """Released EMOCA v1/v2: ExpDECA with a cloned backbone predicting 50 expression values."""
        return cls(deca_class="ExpDECA", expression_backbone="deca_clone")

    @classmethod
    def from_cfg(cls, cfg: Any, source: str = "cfg.yaml") -> EmocaConfig:
        """From the OmegaConf (or plain dict) ``cfg.yaml`` of an EMOCA model folder.

        Takes ``cfg.detail.model`` when a ``detail`` section exists, else ``cfg.coarse.model``; a bare section or
        a bare ``model`` mapping is accepted too. Raises EmocaError('config_invalid') naming the key.
        """
        stage, model = _model_section(_to_plain(cfg), source)
        where = f"{source}: {stage + '.' if stage else ''}model"
        get = _typed_getter(model, where)
        deca_class = _deca_class(get("deca_class", "DECA", str), where)
        backbone = _expression_backbone(model.get("expression_backbone"), deca_class, where)
        _check_encoder_types(model, where)
        conditioning = _detail_conditioning(model.get("detail_conditioning", list(CONDITIONING)), where)
        mode = get("mode", stage or "detail", str)
        if mode not in ("coarse", "detail"):
            raise EmocaError("config_invalid", f"{where}.mode = {mode!r}: expected coarse or detail")
        out = cls(
            deca_class=deca_class,
            expression_backbone=backbone,
            exp_deca_jaw_pose=get("exp_deca_jaw_pose", False, bool),
            exp_deca_global_pose=get("exp_deca_global_pose", False, bool),
            n_shape=get("n_shape", 100, int),
            n_tex=get("n_tex", 50, int),
            n_exp=get("n_exp", 50, int),
            n_pose=get("n_pose", 6, int),
            n_cam=get("n_cam", 3, int),
            n_light=get("n_light", 27, int),
            n_detail=get("n_detail", 128, int),
            mode=mode,
            detail_conditioning=conditioning,
            stage=stage,
        )
        out.validate(where)
        return out

    # ---- derived sizes -------------------------------------------------------------------------------------
    def validate(self, where: str = "config") -> None:
        if self.n_pose != 6 or self.n_cam != 3 or self.n_light % 3:
            raise EmocaError(
                "config_invalid",
                f"{where}: n_pose={self.n_pose}, n_cam={self.n_cam}, n_light={self.n_light}; expected 6, 3, 3*k",
            )
        if self.deca_class == "ExpDECA" and self.expression_backbone not in EXPRESSION_BACKBONES:
            raise EmocaError("config_invalid", f"{where}.expression_backbone = {self.expression_backbone!r}")
        if sorted(self.expression_pose_order) != ["global", "jaw"]:
            raise EmocaError("config_invalid", f"{where}: expression_pose_order must hold 'global' and 'jaw'")

    @property
    def n_code(self) -> int:
        """Size of E_flame's output (236 for the released models)."""
        return self.n_shape + self.n_tex + self.n_exp + self.n_pose + self.n_cam + self.n_light

    @property
    def has_expression(self) -> bool:
        return self.deca_class == "ExpDECA"

    @property
    def n_exp_param(self) -> int:
        """E_expression output size: n_exp, +3 per exp_deca pose flag (emoca.md 1.3)."""
        return self.n_exp + 3 * int(self.exp_deca_jaw_pose) + 3 * int(self.exp_deca_global_pose)

    @property
    def n_detail_latent(self) -> int:
        sizes = {"jawpose": 3, "expression": self.n_exp, "detail": self.n_detail}
        return sum(sizes[c] for c in self.detail_conditioning)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["detail_conditioning"] = list(self.detail_conditioning)
        d["expression_pose_order"] = list(self.expression_pose_order)
        return d


def _to_plain(cfg: Any) -> Any:
    """OmegaConf containers -> plain python (without importing omegaconf when it is not one)."""
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=False)
    return cfg


def _model_section(cfg: Any, source: str) -> tuple[str, Mapping]:
    """(stage, model mapping): ``detail.model``, else ``coarse.model``, else a bare section or ``model``."""
    if not isinstance(cfg, Mapping):
        raise EmocaError("config_invalid", f"{source}: expected a mapping, found {type(cfg).__name__}")
    stage = ""
    section: Any = cfg
    for name in ("detail", "coarse"):
        if isinstance(cfg.get(name), Mapping):
            stage, section = name, cfg[name]
            break
    model = section.get("model", section) if isinstance(section, Mapping) else None
    if not isinstance(model, Mapping):
        raise EmocaError("config_invalid", f"{source}: no 'model' section under {stage or 'the top level'}")
    return stage, model


def _typed_getter(model: Mapping, where: str) -> Callable[[str, Any, type], Any]:
    """``get(key, default, kind)``: ``model[key]`` converted to ``kind`` (None -> default; bools must be bools)."""

    def get(key: str, default: Any, kind: type) -> Any:
        value = model.get(key, default)
        if value is None:
            return default
        try:
            if kind is bool and not isinstance(value, bool):
                raise ValueError
            return kind(value)
        except (TypeError, ValueError):
            raise EmocaError("config_invalid", f"{where}.{key} = {value!r}: expected {kind.__name__}") from None

    return get


def _deca_class(deca_class: str, where: str) -> str:
    if deca_class not in DECA_CLASSES:
        raise EmocaError(
            "config_invalid",
            f"{where}.deca_class = {deca_class!r} is not supported (supported: {', '.join(DECA_CLASSES)})",
            "EMICA (MICA identity) models are not supported; use the released EMOCA/DECA models.",
        )
    return deca_class


def _expression_backbone(backbone: Any, deca_class: str, where: str) -> str | None:
    """None for DECA (no expression encoder); ExpDECA defaults to ``deca_clone``; emonet ones are deprecated."""
    if deca_class == "DECA":
        return None
    if backbone is None:
        return "deca_clone"
    if backbone not in EXPRESSION_BACKBONES:
        why = "is deprecated" if backbone in DEPRECATED_BACKBONES or "emonet" in str(backbone) else "is unknown"
        raise EmocaError(
            "config_invalid",
            f"{where}.expression_backbone = {backbone!r} {why} (supported: {', '.join(EXPRESSION_BACKBONES)})",
        )
    return str(backbone)


def _check_encoder_types(model: Mapping, where: str) -> None:
    """Only ResNet encoders exist here (SWIN and other E_flame/E_detail types are refused)."""
    for key in ("e_flame_type", "e_detail_type"):
        kind = model.get(key)
        if kind not in (None, "ResnetEncoder"):
            raise EmocaError("config_invalid", f"{where}.{key} = {kind!r} is not supported (only ResnetEncoder)")


def _detail_conditioning(cond: Any, where: str) -> tuple[str, ...]:
    """A non-empty subset of :data:`CONDITIONING` (a bare string is one entry)."""
    entries = tuple(str(c) for c in ([cond] if isinstance(cond, str) else cond))
    if not entries or any(c not in CONDITIONING for c in entries):
        raise EmocaError(
            "config_invalid",
            f"{where}.detail_conditioning = {list(entries)!r}: supported entries are {', '.join(CONDITIONING)}",
        )
    return entries


class EmocaNet(nn.Module):
    """DECA / EMOCA networks with the checkpoint's submodule names (``E_flame``, ``E_expression``, ``E_detail``,
    ``D_detail``), so ``state_dict()`` keys equal the checkpoint's keys without the ``deca.`` prefix."""

    def __init__(self, config: EmocaConfig | None = None):
        super().__init__()
        self.config = config = config or EmocaConfig.deca()
        config.validate()
        self.E_flame = ResnetEncoder(config.n_code)
        self.E_expression: nn.Module | None = None
        if config.expression_backbone == "deca_clone":
            self.E_expression = ResnetEncoder(config.n_exp_param)
        elif config.expression_backbone == "deca_parallel":
            self.E_expression = SecondHeadResnet(self.E_flame, config.n_exp_param)
        self.E_detail = ResnetEncoder(config.n_detail)
        self.D_detail = DetailGenerator(config.n_detail_latent)

    def split_code(self, code: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 236) -> shape, tex, exp, pose (global|jaw), cam, light (B, 9, 3) (emoca.md 1.2)."""
        c = self.config
        names = ("shape", "tex", "exp", "pose", "cam", "light")
        sizes = [c.n_shape, c.n_tex, c.n_exp, c.n_pose, c.n_cam, c.n_light]
        parts = dict(zip(names, torch.split(code, sizes, dim=1)))
        parts["light"] = parts["light"].reshape(code.shape[0], -1, 3)
        return parts

    def apply_expression(self, codes: dict[str, torch.Tensor], exp_out: torch.Tensor) -> dict[str, torch.Tensor]:
        """ExpDECA: E_expression's (B, n_exp[+3|+6]) output replaces exp and, per flags, pose parts.

        Layout [derived]: [exp (n_exp) | extra poses in ``config.expression_pose_order`` among those enabled].
        """
        c = self.config
        out = dict(codes)
        out["exp"] = exp_out[:, : c.n_exp]
        enabled = {"global": c.exp_deca_global_pose, "jaw": c.exp_deca_jaw_pose}
        offset = c.n_exp
        pose = codes["pose"]
        global_pose, jaw_pose = pose[:, :3], pose[:, 3:6]
        for name in c.expression_pose_order:
            if not enabled[name]:
                continue
            part = exp_out[:, offset : offset + 3]
            offset += 3
            if name == "global":
                global_pose = part
            else:
                jaw_pose = part
        if offset > c.n_exp:
            out["pose"] = torch.cat([global_pose, jaw_pose], dim=1)
        return out

    def encode(self, images: torch.Tensor, detail: bool = True) -> dict[str, torch.Tensor]:
        """images (B, 3, 224, 224) float RGB in [0, 1], not normalised.

        Returns shape (B, n_shape), tex (B, n_tex), exp (B, n_exp), pose (B, 6) [global | jaw] axis-angle,
        cam (B, 3) [s, tx, ty], light (B, 9, 3), and detail (B, n_detail) when ``detail`` is true.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        features = self.E_flame.features(images)
        codes = self.split_code(self.E_flame.head(features).float())
        if self.E_expression is not None:
            if isinstance(self.E_expression, SecondHeadResnet):
                exp_out = self.E_expression.head(features)  # shared frozen backbone: reuse its features
            else:
                exp_out = self.E_expression(images)
            codes = self.apply_expression(codes, exp_out.float())
        if detail:
            codes["detail"] = self.E_detail(images).float()
        return codes

    def detail_latent(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate the conditioning in config order (default jaw 3 | exp 50 | detail 128 = 181)."""
        pieces = {
            "jawpose": lambda: codes["pose"][:, 3:6],
            "expression": lambda: codes["exp"],
            "detail": lambda: codes["detail"],
        }
        return torch.cat([pieces[c]() for c in self.config.detail_conditioning], dim=1)

    def decode_detail(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """codes with pose, exp, detail -> (B, 1, 256, 256) UV displacement."""
        if "detail" not in codes and "detail" in self.config.detail_conditioning:
            raise ValueError("decode_detail needs codes['detail'] (encode with detail=True)")
        return self.D_detail(self.detail_latent(codes))
