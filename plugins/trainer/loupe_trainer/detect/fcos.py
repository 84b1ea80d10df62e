"""An FCOS-style head on the same trunk and features, for the measured comparison with CenterNet.

FCOS (Tian et al. 2019) at one level (stride 8: the parts of these images are 16-60 px, so
the coarser pyramid levels would be almost empty): every cell within 1.5 strides of a box
centre (centre sampling) and inside the box is a positive of that box's class (the smallest
box where two claim a cell); it regresses the distances to the four sides (``exp`` of the
output, in stride units, GIoU loss weighted by the centreness target) and a centreness;
the class branch learns with the sigmoid focal loss (alpha 0.25, gamma 2) over all cells.

The exported graph keeps the bundle contract of ``loupe_dl_detect.model``: the heatmap is
``sqrt(class score x centreness)`` (FCOS's ranking score), and the side distances become the
CenterNet size and offset (centre = cell centre + (r - l) / 2, width = l + r), so the one
runtime decodes both heads (3 x 3 peaks, top-k, NMS).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .net import DetNet, _branch


class FcosNet(DetNet):
    head = "fcos"

    def __init__(self, n_classes: int, width: int = 64, pretrained: bool = True, backbone: str = "lite0"):
        super().__init__(n_classes, width, pretrained, backbone)
        prior = 0.01
        self.heatmap = _branch(width, n_classes, -math.log((1 - prior) / prior))   # class logits
        self.size = _branch(width, 4, math.log(2.0))                                # log l, t, r, b (strides)
        self.offset = _branch(width, 1, 0.0)                                        # centreness logit

    def decoded(self, x: torch.Tensor):
        cls, reg, ctr = self(x)
        heat = torch.sqrt(torch.sigmoid(cls) * torch.sigmoid(ctr))
        d = torch.exp(reg.clamp(-6.0, 6.0))
        l, t, r, b = d[:, 0:1], d[:, 1:2], d[:, 2:3], d[:, 3:4]
        size = torch.log(torch.cat([l + r, t + b], 1))
        off = torch.cat([0.5 + (r - l) / 2, 0.5 + (b - t) / 2], 1)
        return heat, size, off


def fcos_targets(boxes: np.ndarray, labels: np.ndarray, n_classes: int, shape: tuple[int, int], stride: int = 8,
                 radius: float = 1.5):
    """Class targets [C, h, w] (0/1), side distances [4, h, w] (strides), centreness [h, w], positives [h, w],
    and the class-loss weight [h, w] (0 in the cells of boxes labelled -1, parts cut by the crop)."""
    H, W = shape
    h, w = H // stride, W // stride
    cls = np.zeros((n_classes, h, w), np.float32)
    ltrb = np.zeros((4, h, w), np.float32)
    ctr = np.zeros((h, w), np.float32)
    pos = np.zeros((h, w), np.float32)
    weight = np.ones((h, w), np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4) / stride
    labels = np.asarray(labels)
    for x1, y1, x2, y2 in boxes[labels < 0]:
        weight[int(y1):int(math.ceil(y2)), int(x1):int(math.ceil(x2))] = 0.0
    keep = labels >= 0
    boxes, labels = boxes[keep], labels[keep]
    px, py = np.meshgrid(np.arange(w, dtype=np.float32) + 0.5, np.arange(h, dtype=np.float32) + 0.5)
    best = np.full((h, w), np.inf, np.float32)
    for (x1, y1, x2, y2), c in zip(boxes, labels):
        l, t, r, b = px - x1, py - y1, x2 - px, y2 - py
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        inside = (np.minimum(np.minimum(l, t), np.minimum(r, b)) > 0) & \
            (np.abs(px - cx) <= radius) & (np.abs(py - cy) <= radius)
        if not inside.any():       # a tiny box: its centre cell
            ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
            inside = np.zeros((h, w), bool)
            inside[iy, ix] = True
            l, t, r, b = (np.maximum(v, 0.05) for v in (l, t, r, b))
        area = (x2 - x1) * (y2 - y1)
        sel = inside & (area < best)
        best[sel] = area
        cls[:, sel] = 0.0
        cls[int(c), sel] = 1.0
        for k, v in enumerate((l, t, r, b)):
            ltrb[k][sel] = np.maximum(v[sel], 0.05)
        pos[sel] = 1.0
        weight[sel] = 1.0
    lr, tb = ltrb[[0, 2]], ltrb[[1, 3]]
    ctr = np.where(pos > 0, np.sqrt(lr.min(0) / np.maximum(lr.max(0), 1e-6) * tb.min(0) / np.maximum(tb.max(0), 1e-6)),
                   0.0).astype(np.float32)
    return cls, ltrb, ctr, pos, weight


def _giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """GIoU loss of side distances [K, 4] (l, t, r, b) from the same point."""
    pl, pt, pr, pb = pred.unbind(1)
    tl, tt, tr, tb = target.unbind(1)
    pa, ta = (pl + pr) * (pt + pb), (tl + tr) * (tt + tb)
    iw = torch.min(pl, tl) + torch.min(pr, tr)
    ih = torch.min(pt, tt) + torch.min(pb, tb)
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    union = pa + ta - inter
    iou = inter / union.clamp(min=1e-6)
    enc = (torch.max(pl, tl) + torch.max(pr, tr)) * (torch.max(pt, tt) + torch.max(pb, tb))
    return 1 - (iou - (enc - union) / enc.clamp(min=1e-6))


def fcos_losses(out, cls_t, ltrb_t, ctr_t, pos, weight) -> dict[str, torch.Tensor]:
    cls, reg, ctr = out
    n = pos.sum().clamp(min=1.0)
    p = torch.sigmoid(cls)
    ce = F.binary_cross_entropy_with_logits(cls, cls_t, reduction="none")
    pt = p * cls_t + (1 - p) * (1 - cls_t)
    focal = ce * (1 - pt) ** 2 * (0.25 * cls_t + 0.75 * (1 - cls_t))
    cls_loss = (focal * weight.unsqueeze(1)).sum() / n
    m = pos > 0
    if m.any():
        pr = torch.exp(reg.clamp(-6.0, 6.0)).permute(0, 2, 3, 1)[m]
        tr = ltrb_t.permute(0, 2, 3, 1)[m]
        cw = ctr_t[m]
        box_loss = (_giou_loss(pr, tr) * cw).sum() / cw.sum().clamp(min=1e-6)
        ctr_loss = F.binary_cross_entropy_with_logits(ctr[:, 0][m], cw, reduction="sum") / n
    else:
        box_loss = ctr_loss = reg.sum() * 0.0
    return {"class": cls_loss, "box": box_loss, "centreness": ctr_loss}
