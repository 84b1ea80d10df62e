"""A frame result as a JPEG for the operator screen: the image with its heatmaps blended in.

Overlays are not burnt in: the page draws them as SVG over the JPEG (crisp at any
size, and their labels stay text). Runs in the screen's own process, on request,
never in the station's process.
"""
from __future__ import annotations

import cv2
import numpy as np

def _bgr8(image: np.ndarray) -> np.ndarray:
    a = image
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        f = np.nan_to_num(a.astype(np.float32))
        hi = float(f.max()) if f.size else 1.0
        a = np.clip(f * (255.0 if hi <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        return cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)
    if a.shape[2] == 4:
        return cv2.cvtColor(a, cv2.COLOR_BGRA2BGR)
    if a.shape[2] == 1:
        return cv2.cvtColor(a[:, :, 0], cv2.COLOR_GRAY2BGR)
    return a.copy()


def _blend(bgr: np.ndarray, heat: np.ndarray, roi) -> None:
    """Blend a [0, 1] heatmap over ``bgr`` (or its ROI) in place; cool values fade out."""
    x, y, w, h = roi if roi is not None else (0, 0, bgr.shape[1], bgr.shape[0])
    region = bgr[y:y + h, x:x + w]
    if region.size == 0:
        return
    hm = cv2.resize(np.nan_to_num(heat.astype(np.float32)), (region.shape[1], region.shape[0]),
                    interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.clip(hm * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    w8 = (0.65 * np.clip((hm - 0.15) / 0.45, 0.0, 1.0))[:, :, None]
    region[:] = (region * (1 - w8) + colour * w8).astype(np.uint8)


def render_jpeg(image: np.ndarray | None, heatmaps=(), max_side: int = 1024,
                quality: int = 82) -> tuple[bytes, int, int] | None:
    """JPEG bytes and the *source* image size (overlay coordinates), or ``None`` without an image.
    ``heatmaps``: (heatmap in [0, 1], roi or None) per step that made one."""
    if image is None:
        return None
    bgr = _bgr8(image)
    for heat, roi in heatmaps:
        _blend(bgr, heat, roi)
    h, w = bgr.shape[:2]
    f = max_side / max(h, w)
    if f < 1:
        bgr = cv2.resize(bgr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return None
    return buf.tobytes(), w, h
