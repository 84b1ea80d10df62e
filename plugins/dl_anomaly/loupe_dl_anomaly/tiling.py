"""Tiling of large images with small defects (numpy + OpenCV, shared by the trainer and the runtime).

A model trained with ``--tile T`` sees T x T pixel tiles of the original images
(resized to the model input only when T differs from it), so a defect a few
pixels wide keeps its size instead of shrinking with the whole image. At
inference the image is covered by tiles that overlap by ``overlap`` (a fraction
of the tile), the last tile of each row and column flush with the image edge;
each tile is scored, the image score is the maximum over tiles and the anomaly
map is stitched at the image's resolution (the maximum where tiles overlap).
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


def score_tiled(run: Callable[[np.ndarray], tuple[np.ndarray, float]], rgb: np.ndarray, tile: tuple[int, int],
                overlap: float) -> tuple[np.ndarray, float, int]:
    """Score an RGB image tile by tile: (stitched map (H, W) float32, max score, number of tiles).

    ``run(rgb_tile) -> (anomaly map at the model's size, score)``.
    """
    h, w = rgb.shape[:2]
    out = np.full((h, w), -np.inf, np.float32)
    best = -np.inf
    boxes = tile_boxes(h, w, tile, overlap)
    for y0, x0, y1, x1 in boxes:
        amap, score = run(rgb[y0:y1, x0:x1])
        if amap.shape != (y1 - y0, x1 - x0):
            amap = cv2.resize(amap, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        np.maximum(out[y0:y1, x0:x1], amap, out=out[y0:y1, x0:x1])
        best = max(best, float(score))
    return out, best, len(boxes)
