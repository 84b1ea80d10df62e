"""Helpers for the classical plugin tests: rendered test images, small videos, JSONL reading."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def render_bar(x0: float, width: float, size=(60, 200), angle: float = 0.0, ss: int = 16,
               bg: int = 220, fg: int = 40) -> np.ndarray:
    """A dark bar of exact ``width`` px, anti-aliased by area-averaging a 16x supersampled rendering.

    Coordinates: pixel centres at integers (OpenCV's convention), so with ``angle`` 0 the bar's
    left edge lies at x = x0 - 0.5 and its right edge at x0 + width - 0.5. With an angle, the bar is
    rotated (counter-clockwise, image y down) about the image centre.
    """
    h, w = size
    if angle == 0:  # exact area coverage of each pixel [i - 0.5, i + 0.5] by the bar [x0 - 0.5, x0 + width - 0.5]
        i = np.arange(w, dtype=np.float64)
        cover = np.clip(np.minimum(i + 0.5, x0 + width - 0.5) - np.maximum(i - 0.5, x0 - 0.5), 0, 1)
        row = bg + (fg - bg) * cover
        return np.repeat(np.round(row)[None, :], h, axis=0).astype(np.uint8)
    big = np.full((h * ss, w * ss), bg, np.uint8)
    cx, cy = w / 2.0, h / 2.0
    corners = np.array([[x0, -10 * h], [x0 + width, -10 * h], [x0 + width, 11 * h], [x0, 11 * h]], np.float64)
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    pts = (corners - [cx, cy]) @ rot.T + [cx, cy]
    shift = 8  # subpixel vertices: 1/256 of a supersampled pixel
    poly = np.round(pts * ss * (1 << shift)).astype(np.int64).astype(np.int32)
    cv2.fillPoly(big, [poly], fg, lineType=cv2.LINE_8, shift=shift)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)


def write_video(path: Path, n: int = 12, size=(160, 120), fps: float = 10.0) -> list[int]:
    """An MJPG AVI whose frame i is a flat gray of level 20 * i + 10 with a white square; returns the levels."""
    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert vw.isOpened(), "cv2.VideoWriter cannot write MJPG here"
    levels = []
    for i in range(n):
        level = 10 + 20 * i
        img = np.full((h, w, 3), level, np.uint8)
        cv2.rectangle(img, (5 + 5 * i, 5), (25 + 5 * i, 25), (255, 255, 255), -1)
        vw.write(img)
        levels.append(level)
    vw.release()
    return levels


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
