"""Evaluation figures: charts with matplotlib (Agg, no display), per-image panels with OpenCV.

Charts (ROC, score histogram) are drawn by ``host.charts`` (matplotlib's object API, ``Figure`` + the Agg
canvas, no pyplot state), like every other chart Loupe writes (the classifier's confusion matrix, the dataset
size chart) and the desktop app's.
Per-image panels are pictures, not charts: the image with its heatmap and regions beside the ground truth,
drawn with OpenCV, with a colour-scale legend under them.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from host import VERDICT_COLOURS

from .data import to_rgb8

_FONT = cv2.FONT_HERSHEY_SIMPLEX
GT_COLOUR = (255, 0, 255)  # ground truth: magenta (BGR), a colour no verdict and no heatmap uses


def _bgr(status: str) -> tuple[int, int, int]:
    c = VERDICT_COLOURS.get(status, VERDICT_COLOURS["info"]).lstrip("#")
    return int(c[4:6], 16), int(c[2:4], 16), int(c[0:2], 16)


def figure(width_in: float = 5.2, height_in: float = 4.0):
    """A matplotlib ``Figure`` on an Agg canvas (no pyplot, safe in threads and without a display)."""
    from host import charts

    return charts.figure(width_in, height_in)


def save(fig, path: Path) -> None:
    from host import charts

    charts.save(fig, path)


# ------------------------------------------------------------------ charts (host.charts, as the desktop app)


def roc_plot(fpr: np.ndarray, tpr: np.ndarray, auc: float, path: Path,
             operating_point: tuple[float, float] | None = None) -> None:
    """The image-level ROC curve, with the model's operating point (its stored threshold) marked."""
    from host import charts

    fig = figure(4.6, 4.9)
    ax = fig.add_subplot()
    charts.draw_roc(ax, fpr, tpr, auc, operating_point, threshold_label="threshold (score 1.0)")
    charts.style(fig, ax, title="Image-level ROC", xlabel="false positive rate (good parts rejected)",
                 ylabel="true positive rate (defects found)")
    ax.set_aspect("equal")
    charts.legend_below(fig, ax)
    save(fig, path)


def histogram_plot(good: np.ndarray, bad: np.ndarray, path: Path, threshold: float = 1.0, bins: int = 30) -> None:
    """Normalised-score histograms of good and defective images and the threshold; the legend sits under
    the axes, where it cannot cover a bar."""
    from host import charts

    fig = figure(6.0, 3.8)
    ax = fig.add_subplot()
    charts.draw_score_histogram(ax, [("good", good), ("defective", bad)], threshold, bins=bins)
    charts.style(fig, ax, title="Scores of the test images", xlabel="anomaly score (1.0 = the model's threshold)",
                 ylabel="images", grid="y")
    charts.legend_below(fig, ax)
    save(fig, path)


# ------------------------------------------------------------------ per-image panels


def _label(img: np.ndarray, text: str, org: tuple[int, int], colour, scale: float = 0.45) -> None:
    """Text with a dark outline, readable on any heatmap colour."""
    cv2.putText(img, text, org, _FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, _FONT, scale, colour, 1, cv2.LINE_AA)


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, shapes, verdict: str) -> np.ndarray:
    """The image with the heatmap blended in and the region outlines in the verdict's colour (BGR).

    ``shapes``: ``host.Shape`` polygons from ``runtime.region_overlays`` (deferred statuses are resolved
    against ``verdict`` here, as every drawing does)."""
    from host import overlay_status

    bgr = cv2.cvtColor(to_rgb8(image), cv2.COLOR_RGB2BGR)
    h, w = bgr.shape[:2]
    hm = cv2.resize(heat.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((np.clip(hm, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    alpha = (0.1 + 0.5 * np.clip(hm, 0, 1))[..., None]
    vis = (bgr * (1 - alpha) + colour * alpha).astype(np.uint8)
    for s in shapes:
        st = overlay_status(s.status, verdict)
        if st is None:
            continue
        pts = np.round(np.asarray(s.points)).astype(np.int32)
        cv2.polylines(vis, [pts], True, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.polylines(vis, [pts], True, _bgr(st), 2, cv2.LINE_AA)
        if s.label:
            x, y = int(pts[:, 0].min()), int(pts[:, 1].min()) - 4
            _label(vis, s.label, (max(2, min(x, w - 60)), max(12, y)), _bgr(st))
    return vis


def ground_truth_view(image: np.ndarray, gt: np.ndarray | None, note: str = "no defect marked") -> np.ndarray:
    """The image, dimmed, with the ground-truth mask filled and outlined in magenta (BGR); ``note`` is written
    on it when the mask is empty or missing."""
    bgr = cv2.cvtColor(to_rgb8(image), cv2.COLOR_RGB2BGR)
    vis = (bgr * 0.75).astype(np.uint8)
    if gt is not None and gt.any():
        m = gt.astype(bool)
        vis[m] = (0.5 * vis[m] + 0.5 * np.array(GT_COLOUR)).astype(np.uint8)
        cs, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(vis, cs, -1, GT_COLOUR, 2, cv2.LINE_AA)
    else:
        _label(vis, note, (6, 18), (230, 230, 230))
    return vis


def legend_strip(width: int, heat_scale: float = 1.5) -> np.ndarray:
    """A strip under a panel: the heatmap colour scale with the threshold, and what the outlines mean."""
    h = 58
    strip = np.full((h, width, 3), 255, np.uint8)
    x0, x1, y0, y1 = 10, max(60, width // 2 - 20), 8, 22
    ramp = np.linspace(0, 255, x1 - x0).astype(np.uint8)[None, :].repeat(y1 - y0, 0)
    strip[y0:y1, x0:x1] = cv2.applyColorMap(ramp, cv2.COLORMAP_TURBO)
    for v in (0.0, 1.0, heat_scale):
        x = int(x0 + (x1 - x0 - 1) * v / heat_scale)
        cv2.line(strip, (x, y0), (x, y1 + 4), (0, 0, 0), 1)
        cv2.putText(strip, f"{v:g}" if v else "good", (max(0, x - 10), y1 + 16), _FONT, 0.38, (0, 0, 0), 1,
                    cv2.LINE_AA)
    cv2.putText(strip, "score (1 = threshold)", (x0, h - 4), _FONT, 0.36, (60, 60, 60), 1, cv2.LINE_AA)
    lx = x1 + 20
    items = [("region, anomalous", _bgr("fail")), ("region, passed", _bgr("pass")), ("ground truth", GT_COLOUR)]
    for k, (text, col) in enumerate(items):
        y = 14 + 16 * k
        cv2.rectangle(strip, (lx, y - 8), (lx + 14, y + 2), col, -1)
        cv2.putText(strip, text, (lx + 20, y + 1), _FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def panel(image: np.ndarray, heat: np.ndarray, shapes, verdict: str, gt: np.ndarray | None, title: str,
          side: int = 320, gt_note: str = "no defect marked") -> np.ndarray:
    """Heatmap view | ground-truth view, side by side, a title bar above and the legend below (BGR).

    The image is brought to the panel's size first and everything is drawn at that size, so outlines and
    labels have the same weight whatever the image's own size."""
    bgr = cv2.cvtColor(to_rgb8(image), cv2.COLOR_RGB2BGR)
    h, w = bgr.shape[:2]
    s = side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_NEAREST)
    gt_small = None if gt is None else cv2.resize(gt.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    left = heatmap_overlay(small, heat, [_scaled(sh, s) for sh in shapes], verdict)
    right = ground_truth_view(small, gt_small, gt_note)
    gap = np.full((size[1], 6, 3), 255, np.uint8)
    body = np.hstack([left, gap, right])
    bar = np.full((24, body.shape[1], 3), 40, np.uint8)
    cv2.putText(bar, title, (6, 17), _FONT, 0.45, _bgr(verdict), 1, cv2.LINE_AA)
    if cv2.getTextSize(title, _FONT, 0.45, 1)[0][0] + 12 < size[0] + 6:
        cv2.putText(bar, "ground truth", (size[0] + 12, 17), _FONT, 0.45, (220, 220, 220), 1, cv2.LINE_AA)
    return np.vstack([bar, body, legend_strip(body.shape[1])])


def _scaled(shape, s: float):
    from host import Shape

    return Shape(shape.kind, [(x * s, y * s) for x, y in shape.points], shape.label, shape.radius * s,
                 shape.axes, shape.angle, shape.status)
