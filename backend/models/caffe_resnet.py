"""Caffe-style ResNet-50 (the VGGFace2 face-recognition layout), in plain torch.

This is the backbone of the official image-based emotion network (``EmoCnnModule`` with ResNet-50, spec §6).
It differs from the torchvision layout used by the EMOCA/DECA encoders (``backend.models.resnet``) in two
places, while sharing every parameter name and shape:

* the stride of a downsampling bottleneck sits in its first 1x1 conv (torchvision: in the 3x3 conv);
* the stem max-pool is ``MaxPool2d(3, 2, padding=0, ceil_mode=True)`` (torchvision: padding 1).

Because the key names are identical, a checkpoint of one loads into the other without any error and gives
wrong features; callers must decide the layout from the checkpoint's config, never from its keys.

The module also carries the unused 8631-way VGGFace2 identity classifier ``fc`` so that its ``state_dict``
matches the official checkpoints key for key (``backbone.fc.*`` in the emotion ckpt).
"""

from __future__ import annotations

import torch
from torch import nn

VGGFACE2_IDENTITIES = 8631  # classes of the VGGFace2 training set (the size of the unused fc)


class CaffeBottleneck(nn.Module):
    """1x1 (stride here, Caffe style) -> 3x3 -> 1x1 (x4 channels), with a projection shortcut when needed."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class CaffeResNet50(nn.Module):
    """VGGFace2 ResNet-50: ``conv1, bn1, layer1..4, fc`` (fc unused by ``features``).

    ``features(x)``: x (B,3,H,W) -> (B,2048) global-average-pooled feature (224 input -> 7x7 final map).
    ``forward(x)``: the same feature (the emotion network never uses the identity classifier).
    """

    blocks = (3, 4, 6, 3)

    def __init__(self, num_identities: int = VGGFACE2_IDENTITIES):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
        in_channels = 64
        for i, (n, width) in enumerate(zip(self.blocks, (64, 128, 256, 512))):
            stride = 1 if i == 0 else 2
            layer = []
            for j in range(n):
                layer.append(CaffeBottleneck(in_channels, width, stride if j == 0 else 1))
                in_channels = width * CaffeBottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.fc = nn.Linear(in_channels, num_identities)  # VGGFace2 identities: kept only for key parity
        self.feature_dim = in_channels

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """x (B,3,H,W) -> (B,2048,H/32,W/32) (7x7 for 224 input)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (B,3,H,W) -> (B,2048): mean over the final map (= AvgPool2d(7) at 224)."""
        return self.feature_map(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class EmoCnnResNet50(nn.Module):
    """The image-based emotion network (``EmoCnnModule`` with the VGGFace2 ResNet-50), spec §6.

    State-dict keys: ``backbone.*`` (the Caffe ResNet-50 incl. the unused 8631-way ``backbone.fc``) and
    ``linear.{weight,bias}`` (2048 -> n_expression + 2).
    ``forward(x)``: x (B,3,224,224) RGB in [0,1], no normalisation -> (B, n_expression + 2) raw outputs laid out as
    [expression logits | valence | arousal] (see :func:`split_outputs`).
    """

    def __init__(self, n_expression: int = 8):
        super().__init__()
        self.n_expression = n_expression
        self.backbone = CaffeResNet50()
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
