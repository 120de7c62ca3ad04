"""EmoDECA: emotion from EMOCA's 3D codes (the released ``EMOCA-emorec`` / ``EMOCA_detail-emorec``, spec §6).

A frozen EMOCA supplies shape (100), expression (50) and jaw pose (3); their concatenation (153) goes through an
MLP with 4 hidden layers of 2048 units (Linear -> BatchNorm1d -> LeakyReLU(0.2)) and a final Linear to
``n_expression + 2`` outputs: [expression logits | valence | arousal].

State-dict keys follow the official checkpoint: ``mlp.model.{0,1,3,4,6,7,9,10,12}.*`` (Linear at 0,3,6,9,12,
BatchNorm1d at 1,4,7,10; the LeakyReLUs at 2,5,8,11 hold no parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from emoca_contract.errors import EmocaError


@dataclass(frozen=True)
class EmoDecaConfig:
    """What the MLP sees and how big it is (defaults: the released EMOCA-emorec)."""

    n_shape: int = 100
    n_exp: int = 50
    use_identity: bool = True
    use_expression: bool = True
    use_jaw_pose: bool = True
    hidden: int = 2048
    n_hidden: int = 4
    n_expression: int = 8
    negative_slope: float = 0.2

    @property
    def in_features(self) -> int:
        return self.n_shape * self.use_identity + self.n_exp * self.use_expression + 3 * self.use_jaw_pose

    @property
    def out_features(self) -> int:
        return self.n_expression + 2


class _MLP(nn.Module):
    """Holds ``model`` so the keys read ``mlp.model.<i>.*`` from the EmoDECA root."""

    def __init__(self, cfg: EmoDecaConfig):
        super().__init__()
        layers: list[nn.Module] = []
        width = cfg.in_features
        for _ in range(cfg.n_hidden):
            layers += [nn.Linear(width, cfg.hidden), nn.BatchNorm1d(cfg.hidden), nn.LeakyReLU(cfg.negative_slope)]
            width = cfg.hidden
        layers.append(nn.Linear(width, cfg.out_features))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class EmoDeca(nn.Module):
    """``forward(x)``: x (B, in_features) -> (B, n_expression + 2) raw outputs [expr logits | V | A]."""

    def __init__(self, cfg: EmoDecaConfig | None = None):
        super().__init__()
        self.cfg = cfg or EmoDecaConfig()
        self.mlp = _MLP(self.cfg)

    def assemble_input(self, codes: dict) -> torch.Tensor:
        """EMOCA codes -> (B, in_features): concat[shape | exp | jaw] in that order.

        ``codes``: ``shape`` (B,>=n_shape), ``exp`` (B,>=n_exp), ``pose`` (B,6) = [global(3) | jaw(3)]
        (a ``jaw_pose`` (B,3) entry is used instead of ``pose`` when present).
        """
        parts: list[torch.Tensor] = []
        need = []
        if self.cfg.use_identity:
            need.append("shape")
        if self.cfg.use_expression:
            need.append("exp")
        if self.cfg.use_jaw_pose and "jaw_pose" not in codes:
            need.append("pose")
        missing = [k for k in need if codes is None or k not in codes]
        if missing:
            raise EmocaError(
                "config_invalid",
                f"EmoDECA needs the EMOCA codes {need}; missing: {missing}",
                "Pass codes=dict(shape=..., exp=..., pose=...) from the face reconstructor.",
            )
        if self.cfg.use_identity:
            parts.append(_take(codes["shape"], self.cfg.n_shape, "shape"))
        if self.cfg.use_expression:
            parts.append(_take(codes["exp"], self.cfg.n_exp, "exp"))
        if self.cfg.use_jaw_pose:
            jaw = codes["jaw_pose"] if "jaw_pose" in codes else _take(codes["pose"], 6, "pose")[:, 3:6]
            parts.append(jaw)
        ref = next(self.mlp.parameters())  # the first Linear's weight: the net's device and dtype
        return torch.cat([p.to(device=ref.device, dtype=ref.dtype) for p in parts], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def _take(t: torch.Tensor, n: int, name: str) -> torch.Tensor:
    """The leading ``n`` columns of a (B, >=n) code, with a clear error when it is too short."""
    if t.ndim != 2 or t.shape[1] < n:
        raise EmocaError(
            "config_invalid",
            f"EmoDECA code '{name}' must be (B, >={n}); got {tuple(t.shape)}",
            "Pass the EMOCA codes as (batch, size) tensors.",
        )
    return t[:, :n]
