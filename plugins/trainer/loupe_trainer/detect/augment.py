"""Few-sample augmentation for detection, on uint8 RGB images with pixel boxes (numpy + OpenCV).

Per sample, in this order:

* **copy-paste** (``paste`` probability): parts cut (their box) from other training images are
  pasted at free places, so each batch shows more parts on more backgrounds;
* **scale and crop**: a random zoom in ``[1/scale, scale]`` and a random crop (or pad, with
  mean grey) to the training crop size;
* **rot90** (0-3 quarter turns) and **flips**: exact for axis-aligned boxes;
* **colour**: brightness, contrast, saturation and a per-channel gain.

Boxes are clipped to the crop; a box keeping less than ``min_visible`` of its area is dropped.
With ``keep_cut``, the visible rest of each dropped box is returned too, with the label -1:
the trainer ignores those places in the heatmap loss (a part cut by the crop is neither a
part to find nor background to reject; penalising it as background taught the model
contradicting things about the image borders).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Augment:
    scale: float = 1.35
    rot90: bool = True
    hflip: bool = True
    vflip: bool = True
    colour: float = 0.25
    paste: float = 0.5
    min_visible: float = 0.45
    keep_cut: bool = False

    def __call__(self, rng: np.random.Generator, img: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                 crop: tuple[int, int], bank: list | None = None):
        img = img.copy()
        boxes = boxes.astype(np.float32).reshape(-1, 4).copy()
        labels = labels.copy()
        if bank and self.paste > 0 and rng.random() < self.paste:
            img, boxes, labels = _paste(rng, img, boxes, labels, bank, int(rng.integers(1, 4)))
        img, boxes, labels = _scale_crop(rng, img, boxes, labels, crop, self.scale, self.min_visible, self.keep_cut)
        if self.rot90 and crop[0] == crop[1]:
            k = int(rng.integers(4))
            for _ in range(k):
                img, boxes = _rot90(img, boxes)
        if self.hflip and rng.random() < 0.5:
            img, boxes = _hflip(img, boxes)
        if self.vflip and rng.random() < 0.5:
            img = img[::-1]
            h = img.shape[0]
            boxes = np.stack([boxes[:, 0], h - boxes[:, 3], boxes[:, 2], h - boxes[:, 1]], 1)
        if self.colour > 0:
            img = _colour(rng, img, self.colour)
        return np.ascontiguousarray(img), boxes.reshape(-1, 4).astype(np.float32), labels


def _rot90(img: np.ndarray, boxes: np.ndarray):
    """A quarter turn counter-clockwise: (x, y) -> (y, W - x)."""
    w = img.shape[1]
    out = np.ascontiguousarray(np.rot90(img))
    b = np.stack([boxes[:, 1], w - boxes[:, 2], boxes[:, 3], w - boxes[:, 0]], 1) if len(boxes) else boxes
    return out, b


def _hflip(img: np.ndarray, boxes: np.ndarray):
    """A mirror left to right: x -> W - x (the image as a view)."""
    w = img.shape[1]
    return img[:, ::-1], np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)


def _scale_crop(rng, img, boxes, labels, crop, scale, min_visible, keep_cut=False):
    H, W = img.shape[:2]
    ch, cw = crop
    s = float(np.exp(rng.uniform(-np.log(scale), np.log(scale))))
    nh, nw = max(1, int(round(H * s))), max(1, int(round(W * s)))
    im = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    b = boxes * s
    fill = img.reshape(-1, 3).mean(0)
    canvas = np.empty((max(ch, nh), max(cw, nw), 3), np.uint8)
    canvas[:] = fill.astype(np.uint8)
    oy = int(rng.integers(0, canvas.shape[0] - nh + 1))
    ox = int(rng.integers(0, canvas.shape[1] - nw + 1))
    canvas[oy:oy + nh, ox:ox + nw] = im
    b = b + np.array([ox, oy, ox, oy], np.float32)
    y0 = int(rng.integers(0, canvas.shape[0] - ch + 1))
    x0 = int(rng.integers(0, canvas.shape[1] - cw + 1))
    out = canvas[y0:y0 + ch, x0:x0 + cw]
    b = b - np.array([x0, y0, x0, y0], np.float32)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    c = b.copy()
    c[:, [0, 2]] = c[:, [0, 2]].clip(0, cw)
    c[:, [1, 3]] = c[:, [1, 3]].clip(0, ch)
    vis = (c[:, 2] - c[:, 0]).clip(0) * (c[:, 3] - c[:, 1]).clip(0)
    keep = (vis >= min_visible * np.maximum(area, 1e-6)) & (c[:, 2] - c[:, 0] >= 2) & (c[:, 3] - c[:, 1] >= 2)
    if keep_cut:
        cut = ~keep & (vis > 0)
        return out, np.concatenate([c[keep], c[cut]]), np.concatenate([labels[keep], np.full(int(cut.sum()), -1,
                                                                                              labels.dtype)])
    return out, c[keep], labels[keep]


def _colour(rng, img, amount):
    x = img.astype(np.float32)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(1 - amount, 1 + amount)            # saturation
    x = (x - x.mean()) * rng.uniform(1 - amount, 1 + amount) + x.mean()    # contrast
    x = x * rng.uniform(1 - amount, 1 + amount) * rng.uniform(1 - amount / 3, 1 + amount / 3, 3)  # brightness, tint
    return np.clip(x, 0, 255).astype(np.uint8)


def _paste(rng, img, boxes, labels, bank, n):
    """Paste up to ``n`` parts (box crops from ``bank`` = [(image, boxes, labels)]) at free places."""
    H, W = img.shape[:2]
    out = img.copy()
    bl, ll = list(boxes), list(labels)
    for _ in range(n):
        src, sb, sl = bank[int(rng.integers(len(bank)))]
        if len(sb) == 0:
            continue
        j = int(rng.integers(len(sb)))
        x1, y1, x2, y2 = (int(round(v)) for v in sb[j])
        patch = src[y1:y2, x1:x2]
        ph, pw = patch.shape[:2]
        if ph < 2 or pw < 2 or ph >= H or pw >= W:
            continue
        for _try in range(10):
            px, py = int(rng.integers(0, W - pw)), int(rng.integers(0, H - ph))
            cand = np.array([px, py, px + pw, py + ph], np.float32)
            if all(cand[2] < b[0] or b[2] < cand[0] or cand[3] < b[1] or b[3] < cand[1] for b in bl):
                out[py:py + ph, px:px + pw] = patch
                bl.append(cand)
                ll.append(int(sl[j]))
                break
    return out, np.asarray(bl, np.float32).reshape(-1, 4), np.asarray(ll, np.int64)
