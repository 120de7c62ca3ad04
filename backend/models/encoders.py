"""DECA/EMOCA image encoders: a ResNet-50 backbone and an MLP head (emoca.md 1.2, 1.3).

``ResnetEncoder(outsize)``: ``.encoder`` (ResNet-50 without fc) -> 2048 -> ``.layers`` =
Linear(2048, 1024) -> ReLU -> Linear(1024, outsize); keys ``encoder.*``, ``layers.0.*``, ``layers.2.*``.
Input: RGB float in [0, 1], (B, 3, 224, 224), no mean/std normalisation.
"""

from __future__ import annotations

import torch
from torch import nn

from backend.models.resnet import ResNet50

FEATURE_SIZE = 2048


def mlp_head(outsize: int) -> nn.Sequential:
    """Linear(2048, 1024) -> ReLU -> Linear(1024, outsize); no final activation."""
    return nn.Sequential(nn.Linear(FEATURE_SIZE, 1024), nn.ReLU(inplace=True), nn.Linear(1024, outsize))


class ResnetEncoder(nn.Module):
    """E_flame (236), E_expression with ``deca_clone`` (50[+3/6]), E_detail (128)."""

    def __init__(self, outsize: int):
        super().__init__()
        self.outsize = outsize
        self.encoder = ResNet50(num_classes=None)
        self.layers = mlp_head(outsize)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) -> (B, 2048)."""
        return self.encoder.features(images)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 2048) -> (B, outsize)."""
        return self.layers(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class SecondHeadResnet(nn.Module):
    """E_expression with ``deca_parallel``: a second MLP head on a shared (frozen) ResnetEncoder's features.

    ``.resnet`` IS the shared encoder (E_flame), so its weights appear twice in a state_dict
    (``E_expression.resnet.*`` and ``E_flame.*``) [derived: emoca.md 2.3]. The head layout is assumed to be the
    same MLP as ResnetEncoder's (``layers.0``, ``layers.2``) [unverified]; the strict loader reports any
    difference key by key.
    """

    def __init__(self, resnet: ResnetEncoder, outsize: int):
        super().__init__()
        self.outsize = outsize
        self.resnet = resnet
        self.layers = mlp_head(outsize)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 2048) shared features -> (B, outsize)."""
        return self.layers(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.resnet.features(images))
