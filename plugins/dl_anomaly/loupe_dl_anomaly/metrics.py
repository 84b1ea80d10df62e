"""Metrics and thresholds in plain numpy (no sklearn at inference time).

Threshold policy (shared by the trainer and the runtime):

* ``good_threshold(scores, quantile)``: from held-out *good* scores only: the
  ``quantile`` of the scores (linear interpolation) times ``margin``. Works with
  zero defective images.
* ``f1_threshold(scores, labels)``: the F1-optimal cut when defective images
  are known (the midpoint between the two scores around the best cut).
"""
from __future__ import annotations

import numpy as np


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rate, true-positive rate and thresholds (descending), ties grouped."""
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    P, N = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    tpr = np.r_[0.0, tps / P]
    fpr = np.r_[0.0, fps / N]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (rank statistic, ties count one half); NaN with one class only."""
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, np.float64)
    ss = s[order]
    # average ranks over ties
    starts = np.r_[0, np.nonzero(np.diff(ss))[0] + 1]
    ends = np.r_[starts[1:], ss.size]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def pixel_auroc(maps: list[np.ndarray], masks: list[np.ndarray], max_pixels: int = 4_000_000,
                seed: int = 0) -> float:
    """Pixel-level AUROC over all pixels of all images (uniformly subsampled above ``max_pixels``)."""
    s = np.concatenate([m.ravel() for m in maps]).astype(np.float32)
    y = np.concatenate([m.ravel() for m in masks]).astype(bool)
    if s.size > max_pixels:
        idx = np.random.default_rng(seed).choice(s.size, max_pixels, replace=False)
        s, y = s[idx], y[idx]
    return auroc(s, y)


def f1_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    pred = s > threshold
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    tn = int((~pred & ~y).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"f1": f1, "precision": prec, "recall": rec, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "accuracy": (tp + tn) / max(s.size, 1)}


def good_threshold(good_scores: np.ndarray, quantile: float = 0.99, margin: float = 1.0) -> float:
    """Threshold from good scores only: ``quantile`` of the scores x ``margin``."""
    g = np.asarray(good_scores, np.float64).ravel()
    if g.size == 0:
        raise ValueError("no good scores to fit a threshold on")
    return float(np.quantile(g, quantile) * margin)


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 for ``score > threshold``; needs at least one defective sample."""
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if not y.any():
        raise ValueError("F1 refinement needs at least one defective sample")
    uniq = np.unique(s)
    cuts = np.r_[uniq[0] - 1e-9, (uniq[:-1] + uniq[1:]) / 2.0, uniq[-1]]
    best_t, best_f = float(cuts[0]), -1.0
    for t in cuts:
        f = f1_at(s, y, t)["f1"]
        if f > best_f + 1e-12:
            best_t, best_f = float(t), f
    return best_t, best_f
