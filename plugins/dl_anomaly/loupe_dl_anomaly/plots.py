"""Evaluation figures: charts with matplotlib (Agg, no display), per-image panels with OpenCV.

Charts (ROC, score histogram) are drawn with matplotlib's object API (``Figure`` + the Agg canvas, no pyplot
state), like every other chart Loupe writes (the classifier's confusion matrix, the dataset size chart).
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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=110)


# ------------------------------------------------------------------ charts


def roc_plot(fpr: np.ndarray, tpr: np.ndarray, auc: float, path: Path,
             operating_point: tuple[float, float] | None = None) -> None:
    """The image-level ROC curve, with the model's operating point (its stored threshold) marked."""
    fig = figure(4.6, 4.3)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=1, ls="--", label="chance")
    ax.plot(fpr, tpr, color="#1f77b4", lw=2, label=f"ROC (AUROC {auc:.3f})")
    if operating_point is not None:
        fx, ty = operating_point
        ax.plot([fx], [ty], "o", ms=9, mfc=VERDICT_COLOURS["fail"], mec="black",
                label=f"threshold (score 1.0): TPR {ty:.2f}, FPR {fx:.2f}")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("false positive rate (good parts rejected)")
    ax.set_ylabel("true positive rate (defects found)")
    ax.set_title("Image-level ROC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_aspect("equal")
    save(fig, path)


def histogram_plot(good: np.ndarray, bad: np.ndarray, path: Path, threshold: float = 1.0, bins: int = 30) -> None:
    """Normalised-score histograms of good and defective images and the threshold; the legend sits above
    the axes, where it cannot cover a bar."""
    fig = figure(6.0, 3.8)
    ax = fig.add_subplot()
    allv = np.r_[np.asarray(good, float), np.asarray(bad, float), threshold]
    lo, hi = float(np.min(allv)), float(np.max(allv))
    pad = 0.04 * (hi - lo) if hi > lo else 0.5
    edges = np.linspace(lo - pad, hi + pad, bins + 1)
    ax.hist(good, edges, color=VERDICT_COLOURS["pass"], alpha=0.75, label=f"good (n={len(good)})")
    ax.hist(bad, edges, color=VERDICT_COLOURS["fail"], alpha=0.6, label=f"defective (n={len(bad)})")
    ax.axvline(threshold, color="black", lw=1.5, ls="--", label=f"threshold {threshold:.2f}")
    ax.set_xlabel("anomaly score (1.0 = the model's threshold)")
    ax.set_ylabel("images")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=3, fontsize=8, frameon=False,
              borderaxespad=0.0)
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
