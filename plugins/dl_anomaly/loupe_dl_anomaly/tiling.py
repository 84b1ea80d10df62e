"""Tiling of large images with small defects (numpy + OpenCV, shared by the trainer and the runtime).

A model trained with ``--tile T`` sees T x T pixel tiles of the original images
(resized to the model input only when T differs from it), so a defect a few
pixels wide keeps its size instead of shrinking with the whole image. At
inference the image is covered by tiles that overlap by ``overlap`` (a fraction
of the tile), the last tile of each row and column flush with the image edge;
each tile is scored, the image score is the maximum over tiles and the anomaly
map is stitched at the image's resolution.

Stitching blends overlapping tiles with a raised-cosine (Hann) window: each
tile's map is weighted by ``hann(y) * hann(x)`` (highest in the tile's middle,
falling towards its edges) and the stitched map is the weighted mean. A tile's
edge pixels see only part of their neighbourhood and score a little differently
from the same pixels seen mid-tile, so taking the maximum (as before) left
visible steps along tile borders; the window hands each pixel to the tile that
sees it best and fades between tiles. On the image border a tile's window is
flat towards the border (no other tile covers those pixels).
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np


def axis_starts(n: int, tile: int, overlap: float) -> list[int]:
    """Tile origins along one axis of length ``n``: step ``tile * (1 - overlap)``, the last flush with the end."""
    if n <= tile:
        return [0]
    step = max(1, int(round(tile * (1.0 - overlap))))
    starts = list(range(0, n - tile, step))
    starts.append(n - tile)
    return sorted(set(starts))


def tile_boxes(h: int, w: int, tile: tuple[int, int], overlap: float) -> list[tuple[int, int, int, int]]:
    """(y0, x0, y1, x1) boxes covering an h x w image; a side shorter than the tile gets one full-length tile."""
    th, tw = tile
    return [(y, x, min(h, y + th), min(w, x + tw)) for y in axis_starts(h, th, overlap)
            for x in axis_starts(w, tw, overlap)]


def blend_window(h: int, w: int, top: bool = False, left: bool = False, bottom: bool = False,
                 right: bool = False) -> np.ndarray:
    """(h, w) float32 raised-cosine weights; a side flagged True (on the image border) is kept flat at 1.

    The half-sample offset keeps every weight above zero, so a pixel covered by one tile only keeps that
    tile's value exactly.
    """
    def axis(n: int, lo: bool, hi: bool) -> np.ndarray:
        v = 0.5 - 0.5 * np.cos(2.0 * np.pi * (np.arange(n) + 0.5) / n)
        mid = n // 2
        if lo:
            v[:mid] = 1.0
        if hi:
            v[mid:] = 1.0
        return np.maximum(v, 1e-3)

    return np.outer(axis(h, top, bottom), axis(w, left, right)).astype(np.float32)


def score_tiled(run: Callable[[np.ndarray], tuple[np.ndarray, float]], rgb: np.ndarray, tile: tuple[int, int],
                overlap: float, blend: str = "hann") -> tuple[np.ndarray, float, int]:
    """Score an RGB image tile by tile: (stitched map (H, W) float32, max score, number of tiles).

    ``run(rgb_tile) -> (anomaly map at the model's size, score)``. ``blend``: ``hann`` (the weighted mean
    described above) or ``max`` (the maximum where tiles overlap: the old stitching, kept for comparison).
    """
    if blend not in ("hann", "max"):
        raise ValueError(f"blend must be 'hann' or 'max', not {blend!r}")
    h, w = rgb.shape[:2]
    acc = np.zeros((h, w), np.float64)
    weight = np.zeros((h, w), np.float64)
    best = -np.inf
    boxes = tile_boxes(h, w, tile, overlap)
    windows: dict[tuple, np.ndarray] = {}
    for y0, x0, y1, x1 in boxes:
        amap, score = run(rgb[y0:y1, x0:x1])
        if amap.shape != (y1 - y0, x1 - x0):
            amap = cv2.resize(amap, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        best = max(best, float(score))
        if blend == "max":
            np.maximum(acc[y0:y1, x0:x1], amap, out=acc[y0:y1, x0:x1], where=weight[y0:y1, x0:x1] > 0)
            np.copyto(acc[y0:y1, x0:x1], amap, where=weight[y0:y1, x0:x1] == 0)
            weight[y0:y1, x0:x1] = 1.0
            continue
        key = (y1 - y0, x1 - x0, y0 == 0, x0 == 0, y1 == h, x1 == w)
        win = windows.get(key)
        if win is None:
            win = windows[key] = blend_window(*key)
        acc[y0:y1, x0:x1] += amap * win
        weight[y0:y1, x0:x1] += win
    return (acc / np.maximum(weight, 1e-12)).astype(np.float32), best, len(boxes)
