"""ResNet-50 in plain torch, in the two layouts EMOCA's checkpoints use (torchvision is not a dependency).

One class, one layout flag (emoca.md 1.2 and §6). Both layouts have Bottleneck blocks [3, 4, 6, 3], a stem conv
7x7/2 + max-pool k3 s2, and a global average over the final map -> 2048 features (7x7 at a 224 input, where the
originals' ``AvgPool2d(7)`` and this mean agree to float rounding). They differ in two places only:

* ``"torchvision"`` (the DECA/EMOCA encoders): the stride of a downsampling bottleneck sits in its 3x3 conv;
  the stem max-pool has padding 1.
* ``"caffe"`` (the VGGFace2 face-recognition net, backbone of the image-based emotion network ``EmoCnnModule``):
  the stride sits in the first 1x1 conv; the stem max-pool has padding 0 and ``ceil_mode=True`` (112 -> 56).

Parameter names and shapes are torchvision's (``conv1, bn1, layer1..layer4[, fc]``) in both layouts, so a
checkpoint of one loads into the other without any error and gives wrong features: callers decide the layout
from the checkpoint's config, never from its keys. Weights are never downloaded.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from emoca_contract.errors import EmocaError

Layout = Literal["torchvision", "caffe"]
LAYOUTS: tuple[Layout, ...] = ("torchvision", "caffe")
FEATURE_DIM = 2048  # 512 * Bottleneck.expansion
VGGFACE2_IDENTITIES = 8631  # classes of the VGGFace2 training set: the size of the Caffe net's unused fc


def check_layout(layout: str) -> Layout:
    """The layout name, or ``config_invalid`` naming the two that exist."""
    for known in LAYOUTS:
        if layout == known:
            return known
    raise EmocaError("config_invalid", f"ResNet-50 layout {layout!r} is not one of {', '.join(LAYOUTS)}")


def stem_maxpool(layout: Layout) -> nn.MaxPool2d:
    """k3 s2: padding 1 (torchvision) or padding 0 with ceil mode (Caffe); both halve 112 to 56."""
    if layout == "caffe":
        return nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), plus the identity or a strided 1x1 projection (``downsample``).

    The stride sits in the 3x3 conv (torchvision) or in the first 1x1 conv (Caffe). (B, C, H, W) ->
    (B, 4 * planes, H / stride, W / stride).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, layout: Layout = "torchvision"):
        super().__init__()
        out = planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if layout == "caffe" else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride_1x1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride_3x3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_stage(inplanes: int, planes: int, blocks: int, stride: int, layout: Layout) -> nn.Sequential:
    """``blocks`` bottlenecks; only the first one strides and projects. Keys ``{i}.conv1 ... {0}.downsample``."""
    out = planes * Bottleneck.expansion
    return nn.Sequential(
        Bottleneck(inplanes, planes, stride, layout), *(Bottleneck(out, planes, 1, layout) for _ in range(1, blocks))
    )


class ResNet50(nn.Module):
    """ResNet-50 in the torchvision or the Caffe layout (see the module docstring).

    ``num_classes=None`` builds no ``fc`` (DECA/EMOCA encoders: 322 state-dict keys); ``forward`` then returns
    the pooled (B, 2048) features, else the (B, num_classes) ``fc`` output. The emotion network's VGGFace2
    backbone is ``ResNet50(VGGFACE2_IDENTITIES, layout="caffe")``: its ``fc`` exists for key parity only.
    """

    layers_per_stage = (3, 4, 6, 3)
    feature_dim = FEATURE_DIM

    def __init__(self, num_classes: int | None = None, layout: Layout = "torchvision"):
        super().__init__()
        self.layout = check_layout(layout)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = stem_maxpool(self.layout)
        n1, n2, n3, n4 = self.layers_per_stage
        self.layer1 = make_stage(64, 64, n1, 1, self.layout)
        self.layer2 = make_stage(256, 128, n2, 2, self.layout)
        self.layer3 = make_stage(512, 256, n3, 2, self.layout)
        self.layer4 = make_stage(1024, 512, n4, 2, self.layout)
        self.fc = nn.Linear(FEATURE_DIM, num_classes) if num_classes else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He init for convs, BN at identity (torchvision's scheme); only matters for untrained use."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 2048, H/32, W/32) (7x7 for a 224 input)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) -> (B, 2048): the mean over the final map (the originals' AvgPool2d(7) at 224)."""
        return self.feature_map(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return f if self.fc is None else self.fc(f)
