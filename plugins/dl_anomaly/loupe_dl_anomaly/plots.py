"""Evaluation figures drawn with OpenCV (no matplotlib): heatmap overlays, ROC curve, score histogram."""
from __future__ import annotations

import cv2
import numpy as np

from .data import to_rgb8

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, regs, title: str, anomalous: bool,
                    gt: np.ndarray | None = None) -> np.ndarray:
    """The image with the heatmap blended in (JET), region contours (red), ground truth (green), a title bar."""
    bgr = cv2.cvtColor(to_rgb8(image), cv2.COLOR_RGB2BGR)
    h, w = bgr.shape[:2]
    hm = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((hm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (0.15 + 0.45 * hm)[..., None]
    vis = (bgr * (1 - alpha) + colour * alpha).astype(np.uint8)
    if gt is not None and gt.any():
        cs, _ = cv2.findContours(gt.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(vis, cs, -1, (0, 255, 0), 1, cv2.LINE_AA)
    for pts, _area, _peak in regs:
        cv2.polylines(vis, [np.round(pts).astype(np.int32)], True, (0, 0, 255), 2, cv2.LINE_AA)
    bar = np.full((22, w, 3), 40, np.uint8)
    cv2.putText(bar, title, (4, 16), _FONT, 0.45, (0, 0, 255) if anomalous else (0, 200, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, vis])


def _axes(size: int = 420, margin: int = 50):
    img = np.full((size, size, 3), 255, np.uint8)
    x0, y0, x1, y1 = margin, size - margin, size - 15, 15
    cv2.rectangle(img, (x0, y1), (x1, y0), (0, 0, 0), 1)
    return img, (x0, y0, x1, y1)


def roc_plot(fpr: np.ndarray, tpr: np.ndarray, auc: float, size: int = 420) -> np.ndarray:
    img, (x0, y0, x1, y1) = _axes(size)
    for t in np.linspace(0, 1, 6):
        x = int(x0 + t * (x1 - x0))
        y = int(y0 - t * (y0 - y1))
        cv2.line(img, (x, y0), (x, y0 + 4), (0, 0, 0), 1)
        cv2.line(img, (x0 - 4, y), (x0, y), (0, 0, 0), 1)
        cv2.putText(img, f"{t:.1f}", (x - 10, y0 + 18), _FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"{t:.1f}", (x0 - 30, y + 4), _FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.line(img, (x0, y0), (x1, y1), (180, 180, 180), 1, cv2.LINE_AA)
    pts = np.stack([x0 + fpr * (x1 - x0), y0 - tpr * (y0 - y1)], 1).round().astype(np.int32)
    cv2.polylines(img, [pts], False, (200, 80, 0), 2, cv2.LINE_AA)
    cv2.putText(img, "false positive rate", (x0 + 90, size - 12), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "TPR", (5, y1 + 12), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"image AUROC {auc:.4f}", (x0 + 120, y0 - 20), _FONT, 0.5, (200, 80, 0), 1, cv2.LINE_AA)
    return img


def histogram_plot(good: np.ndarray, bad: np.ndarray, threshold: float = 1.0, bins: int = 40,
                   size: tuple[int, int] = (420, 640)) -> np.ndarray:
    """Normalised-score histograms of good (green) and defective (red) images, the threshold (black line)."""
    h, w = size
    img = np.full((h, w, 3), 255, np.uint8)
    x0, y0, x1, y1 = 50, h - 50, w - 15, 20
    allv = np.r_[good, bad, threshold]
    lo, hi = float(allv.min()), float(allv.max())
    pad = 0.05 * (hi - lo + 1e-6)
    lo, hi = lo - pad, hi + pad
    edges = np.linspace(lo, hi, bins + 1)
    cg, _ = np.histogram(good, edges)
    cb, _ = np.histogram(bad, edges)
    top = max(1, int(max(cg.max(initial=0), cb.max(initial=0))))
    bw = (x1 - x0) / bins

    def X(v):
        return int(round(x0 + (v - lo) / (hi - lo) * (x1 - x0)))

    for i in range(bins):
        for counts, colour, off in ((cg, (60, 170, 60), 0.0), (cb, (60, 60, 220), 0.5)):
            if counts[i]:
                xa = int(x0 + (i + off) * bw)
                cv2.rectangle(img, (xa, int(y0 - counts[i] / top * (y0 - y1))), (int(xa + bw / 2), y0), colour, -1)
    cv2.rectangle(img, (x0, y1), (x1, y0), (0, 0, 0), 1)
    for t in np.linspace(lo, hi, 7):
        cv2.putText(img, f"{t:.2f}", (X(t) - 14, y0 + 16), _FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"{top}", (8, y1 + 10), _FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.line(img, (X(threshold), y1), (X(threshold), y0), (0, 0, 0), 2)
    cv2.putText(img, f"threshold {threshold:.2f}", (X(threshold) + 4, y1 + 14), _FONT, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.putText(img, "normalised score (score / threshold)", (x0 + 150, h - 14), _FONT, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.putText(img, f"good n={len(good)}", (x0 + 8, y1 + 32), _FONT, 0.45, (60, 170, 60), 1, cv2.LINE_AA)
    cv2.putText(img, f"defective n={len(bad)}", (x0 + 8, y1 + 50), _FONT, 0.45, (60, 60, 220), 1, cv2.LINE_AA)
    return img
