"""The detector: EfficientNet-Lite0 trunk (ImageNet; ``backbone`` lite1 / lite2: the larger members of the family)
+ a light CenterNet head at stride 8.

Why CenterNet rather than FCOS: with tens of images, every parameter and every
hyper-parameter counts. CenterNet needs one output level (stride 8, where parts of
16-60 px in a 320 px image are 2-8 cells wide), no anchor or level-assignment rules,
no centreness branch and no NMS in training; its targets are a Gaussian per part
on a per-class heatmap plus the size and the sub-cell offset at the centre cell. The
decoding is a 3 x 3 max-pool and a top-k, cheap in numpy. FCOS would add a
multi-level FPN (strides 8-128, mostly empty at this image size) and per-level
regression ranges, more to tune for no gain on parts of one scale range.

Network::

    stage3 (stride 8, 40 ch) --1x1--> 64 --+
    stage5 (stride 16, 112 ch) --1x1--> 64 -> x2 nearest --+--> 3x3 conv-BN-ReLU (64)
        -> heatmap: 3x3 conv-ReLU, 1x1 -> C (logits; sigmoid in the exported graph)
        -> size:    3x3 conv-ReLU, 1x1 -> 2 (log width, log height, in stride units)
        -> offset:  3x3 conv-ReLU, 1x1 -> 2 (sub-cell x, y)

The trunk runs only as far as stage5 (block 10 of 16): the deeper blocks are not
needed at stride 8 and would cost a third of the time.

Lite1 has the channels of Lite0 and one block more in stages 2-6 (stage3 ends at block 7, stage5 at 15);
Lite2 is also wider (stage3 48, stage5 120 channels). The head's 1x1 laterals take each variant's widths, and
the frozen part is always "up to stage3" (``frozen_blocks``), so the head and its cost stay the same.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import build_backbone, normalize, stage_channels

STRIDE = 8
LOW, HIGH = "stage3", "stage5"
#: the trunk up to this stage (strides 2-8) keeps its ImageNet weights and runs without gradients (the
#: backward pass through the high-resolution layers would cost most of a step)
FROZEN_STAGE = LOW
#: MBConv blocks of stages 1-3 of Lite0 (``frozen_blocks`` gives them for any variant)
FROZEN_BLOCKS = 5
#: the trunks ``DetNet`` takes (``backbone.VARIANTS``)
BACKBONES = ("lite0", "lite1", "lite2")


def frozen_blocks(variant: str = "lite0") -> int:
    """MBConv blocks up to the end of ``FROZEN_STAGE`` in ``variant`` (Lite0: 5; Lite1 / Lite2: 7)."""
    from ..backbone import variant_block_args

    return sum(a[4] for a in variant_block_args(variant)[:int(FROZEN_STAGE[5:])])


def _branch(cin: int, cout: int, bias: float = 0.0) -> nn.Sequential:
    last = nn.Conv2d(cin, cout, 1)
    nn.init.normal_(last.weight, std=0.01)
    nn.init.constant_(last.bias, bias)
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1), nn.ReLU(inplace=True), last)


class DetNet(nn.Module):
    def __init__(self, n_classes: int, width: int = 64, pretrained: bool = True, backbone: str = "lite0"):
        super().__init__()
        self.variant = backbone
        self.backbone = build_backbone(pretrained=pretrained, variant=backbone)
        self.backbone._conv_head = None     # not used: the trunk stops at stage5
        self.backbone._fc = None
        self.lateral = nn.Conv2d(stage_channels(HIGH, backbone), width, 1)
        self.skip = nn.Conv2d(stage_channels(LOW, backbone), width, 1)
        self.fuse = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        prior = 0.1
        self.heatmap = _branch(width, n_classes, -math.log((1 - prior) / prior))
        self.size = _branch(width, 2, 1.0)
        self.offset = _branch(width, 2, 0.5)
        self.n_classes = n_classes

    def trunk_parameters(self):
        return [p for n, p in self.backbone.named_parameters() if p.requires_grad]

    def head_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.") and p.requires_grad]

    def freeze_early(self, blocks: int | None = None) -> None:
        """Freeze the stem and the first ``blocks`` MBConv blocks (None: up to ``FROZEN_STAGE`` of this trunk)."""
        if blocks is None:
            blocks = frozen_blocks(self.variant)
        for m in [self.backbone._conv_stem, self.backbone._bn0, *self.backbone._blocks[:blocks]]:
            for p in m.parameters():
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor):
        """Normalised NCHW input -> (heatmap logits [N, C, h, w], log size [N, 2, h, w], offset [N, 2, h, w])."""
        f = self.backbone.stages(x, [LOW, HIGH])
        p = self.skip(f[LOW]) + F.interpolate(self.lateral(f[HIGH]), scale_factor=2.0, mode="nearest")
        p = self.fuse(p)
        return self.heatmap(p), self.size(p), self.offset(p)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()            # frozen BatchNorm statistics in the trunk (batches of a few images)
        return self

    def decoded(self, x: torch.Tensor):
        """The bundle's outputs: (heatmap in 0..1, log size, offset), as ``model.onnx`` gives them."""
        h, s, o = self(x)
        return torch.sigmoid(h), s, o


class ExportGraph(nn.Module):
    """What goes into model.onnx: normalised input -> (sigmoid heatmap, size, offset)."""

    def __init__(self, net: DetNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net.decoded(x)


# ----------------------------------------------------------------- targets


def make_targets(boxes: np.ndarray, labels: np.ndarray, n_classes: int, shape: tuple[int, int],
                 stride: int = STRIDE, alpha: float = 0.54):
    """Heatmap [C, h, w] (an elliptical Gaussian per box, TTFNet's sigma = alpha * side / 6), size and offset
    targets [2, h, w], their mask [h, w] (1 at each box's centre cell), and the heatmap loss weight [h, w]
    (0 in the cells of boxes labelled -1: parts cut by the crop, neither found nor rejected)."""
    H, W = shape
    h, w = H // stride, W // stride
    heat = np.zeros((n_classes, h, w), np.float32)
    size = np.zeros((2, h, w), np.float32)
    off = np.zeros((2, h, w), np.float32)
    mask = np.zeros((h, w), np.float32)
    weight = np.ones((h, w), np.float32)
    cut = np.asarray(labels) < 0
    for x1, y1, x2, y2 in np.asarray(boxes, np.float32).reshape(-1, 4)[cut] / stride:
        weight[int(y1):int(math.ceil(y2)), int(x1):int(math.ceil(x2))] = 0.0
    boxes, labels = np.asarray(boxes, np.float32).reshape(-1, 4)[~cut], np.asarray(labels)[~cut]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # small boxes last, so that their centre cell keeps their own size where two centres share a cell
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) if len(boxes) else []
    for i in order:
        x1, y1, x2, y2 = boxes[i] / stride
        bw, bh = max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
        sx, sy = max(alpha * bw / 6, 0.35), max(alpha * bh / 6, 0.35)
        g = np.exp(-((xx - ix) ** 2 / (2 * sx * sx) + (yy - iy) ** 2 / (2 * sy * sy)))
        c = int(labels[i])
        np.maximum(heat[c], g, out=heat[c])
        heat[c, iy, ix] = 1.0
        size[:, iy, ix] = (math.log(bw), math.log(bh))
        off[:, iy, ix] = (cx - ix, cy - iy)
        mask[iy, ix] = 1.0
        weight[iy, ix] = 1.0
    return heat, size, off, mask, weight


def focal_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of centres; ``weight`` [N, h, w]
    scales the negative term (0: ignored cells)."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p ** 2 * (1 - target) ** 4 * (1 - pos)
    if weight is not None:
        neg_loss = neg_loss * weight.unsqueeze(1)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def losses(out, heat, size, off, mask, weight=None) -> dict[str, torch.Tensor]:
    hl, sl, ol = out
    n = mask.sum().clamp(min=1.0)
    m = mask.unsqueeze(1)
    return {"heatmap": focal_loss(hl, heat, weight),
            "size": (F.l1_loss(sl, size, reduction="none") * m).sum() / n,
            "offset": (F.l1_loss(ol, off, reduction="none") * m).sum() / n}


def to_input(rgb_batch: np.ndarray) -> torch.Tensor:
    """uint8 NHWC RGB -> normalised NCHW (the runtime's normalisation)."""
    t = torch.from_numpy(np.ascontiguousarray(rgb_batch)).permute(0, 3, 1, 2).float()
    return normalize(t)
