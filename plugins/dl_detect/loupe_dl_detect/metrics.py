"""COCO-style detection metrics in numpy: AP per class at an IoU threshold, mAP50, mAP50:95, PR curves.

Follows the COCO definition (pycocotools ``COCOeval`` with ``maxDets`` unlimited and no
area ranges): detections of a class over all images are sorted by score; each is matched
to the unmatched ground-truth box of the same class in its image with the highest IoU at
or above the threshold (true positive), else it is a false positive; precision is made
monotone (the running maximum from the right) and sampled at the 101 recall points
0, 0.01, ..., 1; AP is their mean. Classes without ground truth are left out of the means.
"""
from __future__ import annotations

import numpy as np

from .model import iou_matrix

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def match(pred_boxes, pred_scores, gt_boxes, iou_thr: float) -> np.ndarray:
    """For one image and class: 1 for each prediction (in the order given) that is a true positive."""
    tp = np.zeros(len(pred_scores), np.int8)
    if len(pred_scores) == 0 or len(gt_boxes) == 0:
        return tp
    ious = iou_matrix(pred_boxes, gt_boxes)
    used = np.zeros(len(gt_boxes), bool)
    for i in np.argsort(-np.asarray(pred_scores), kind="stable"):
        cand = np.where(used, -1.0, ious[i])
        j = int(np.argmax(cand))
        if cand[j] >= iou_thr:
            used[j] = True
            tp[i] = 1
    return tp


def pr_curve(preds: list[tuple[np.ndarray, np.ndarray]], gts: list[np.ndarray], iou_thr: float):
    """One class over all images. ``preds[i]`` = (boxes [N, 4], scores [N]); ``gts[i]`` = boxes [M, 4].
    Returns (recall, precision, scores) along the score-sorted detections, and the number of true boxes."""
    n_gt = int(sum(len(g) for g in gts))
    tps, scores = [], []
    for (pb, ps), gb in zip(preds, gts):
        tps.append(match(pb, ps, gb, iou_thr))
        scores.append(np.asarray(ps, np.float64))
    tp = np.concatenate(tps) if tps else np.zeros(0)
    sc = np.concatenate(scores) if scores else np.zeros(0)
    order = np.argsort(-sc, kind="stable")
    tp, sc = tp[order].astype(np.float64), sc[order]
    ctp = np.cumsum(tp)
    cfp = np.cumsum(1.0 - tp)
    recall = ctp / max(n_gt, 1)
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    return recall, precision, sc, n_gt


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """COCO 101-point interpolated AP of one PR curve."""
    if len(recall) == 0:
        return 0.0
    env = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.where(idx < len(env), env[np.minimum(idx, len(env) - 1)], 0.0)
    return float(q.mean())


def evaluate_detections(preds: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                        gts: list[tuple[np.ndarray, np.ndarray]], n_classes: int) -> dict:
    """``preds[i]`` = (boxes, scores, labels) and ``gts[i]`` = (boxes, labels) for image i.

    Returns ``map50``, ``map50_95``, ``ap50`` [C] and ``ap50_95`` [C] (NaN for classes without ground
    truth), ``n_gt`` [C], and ``curves`` {class: (recall, precision)} at IoU 0.5."""
    ap = np.full((n_classes, len(IOU_THRESHOLDS)), np.nan)
    n_gt = np.zeros(n_classes, np.int64)
    curves = {}
    for c in range(n_classes):
        pc = [(pb[pl == c], ps[pl == c]) for pb, ps, pl in preds]
        gc = [gb[gl == c] for gb, gl in gts]
        n_gt[c] = sum(len(g) for g in gc)
        if n_gt[c] == 0:
            continue
        for t, thr in enumerate(IOU_THRESHOLDS):
            r, p, _, _ = pr_curve(pc, gc, float(thr))
            ap[c, t] = average_precision(r, p)
            if t == 0:
                curves[c] = (r, p)
    valid = n_gt > 0
    ap5095 = np.full(n_classes, np.nan)
    ap5095[valid] = ap[valid].mean(axis=1)
    return {"map50": float(np.nanmean(ap[valid, 0])) if valid.any() else 0.0,
            "map50_95": float(np.nanmean(ap[valid])) if valid.any() else 0.0,
            "ap50": ap[:, 0], "ap50_95": ap5095,
            "n_gt": n_gt, "curves": curves}


def counts_match(pred_labels: np.ndarray, gt_labels: np.ndarray, n_classes: int) -> bool:
    """True when every class has exactly as many predictions as true boxes."""
    return bool(np.array_equal(np.bincount(np.asarray(pred_labels, np.int64), minlength=n_classes),
                               np.bincount(np.asarray(gt_labels, np.int64), minlength=n_classes)))
