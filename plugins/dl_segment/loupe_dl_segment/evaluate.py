"""``loupe eval`` for segmentation bundles: IoUs, image AUROC, pixel confusion matrix, overlays, HTML summary.

IoUs are computed over the whole evaluation set (the pixel counts of all images summed,
then intersection / union), at each mask's own resolution:

* ``per_class_iou[c]``  class c against everything else (``null`` when c is neither in the
  truth nor in the predictions);
* ``mean_iou``          mean of ``per_class_iou`` over the defect classes that have a value;
* ``defect_iou``        any defect against background (class confusions do not count);
* ``image_auroc``       defective images (any labelled pixel) against good ones, each scored by
  its largest defect probability ``max(1 - p_background)``; ``null`` without both kinds.
"""
from __future__ import annotations

import html
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from host import Bundle, EvalPlan, Progress, UsageError, eval_batch

from .data import DataError, eval_samples, scan, to_rgb8
from .model import PALETTE_BGR, Segmenter, region_polygons


def auroc(scores_neg: list[float], scores_pos: list[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with ties counted half); None without both classes."""
    if not scores_neg or not scores_pos:
        return None
    s = np.concatenate([np.asarray(scores_neg, np.float64), np.asarray(scores_pos, np.float64)])
    order = s.argsort(kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    n_pos, n_neg = len(scores_pos), len(scores_neg)
    u = ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def iou_from_confusion(cm: np.ndarray) -> list[float | None]:
    """IoU of every class (index 0 = background) from a pixel confusion matrix (rows true, columns predicted)."""
    out: list[float | None] = []
    for k in range(cm.shape[0]):
        tp = float(cm[k, k])
        union = float(cm[k].sum() + cm[:, k].sum() - tp)
        out.append(tp / union if union > 0 else None)
    return out


def metrics(cm: np.ndarray, classes: list[str], scores_good: list[float], scores_bad: list[float]) -> dict[str, Any]:
    ious = iou_from_confusion(cm)
    per_class = {c: ious[k + 1] for k, c in enumerate(classes)}
    vals = [v for v in per_class.values() if v is not None]
    tp = float(cm[1:, 1:].sum())
    union = float(cm[1:, :].sum() + cm[:, 1:].sum() - tp)
    return {"mean_iou": float(np.mean(vals)) if vals else None,
            "defect_iou": tp / union if union > 0 else None,
            "per_class_iou": per_class,
            "background_iou": ious[0],
            "pixel_accuracy": float(np.trace(cm) / cm.sum()) if cm.sum() else None,
            "image_auroc": auroc(scores_good, scores_bad)}


# ------------------------------------------------------------------ pictures


def colour_labels(labels: np.ndarray) -> np.ndarray:
    """uint8 class labels -> BGR colours (background black)."""
    lut = np.zeros((256, 3), np.uint8)
    for k in range(1, 256):
        lut[k] = PALETTE_BGR[(k - 1) % len(PALETTE_BGR)]
    return lut[labels]


def _tint(bgr: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    out = bgr.copy()
    m = labels > 0
    if m.any():
        out[m] = (bgr[m].astype(np.float32) * (1 - alpha) + colour_labels(labels)[m] * alpha).astype(np.uint8)
    return out


def overlay_panel(image: np.ndarray, truth: np.ndarray, seg, classes: list[str]) -> np.ndarray:
    """image | truth (tinted) | prediction: region polygons coloured by class | defect-probability heatmap."""
    bgr = cv2.cvtColor(to_rgb8(image), cv2.COLOR_RGB2BGR)
    h, w = bgr.shape[:2]
    truth_img = _tint(bgr, truth)
    for k in range(1, len(classes) + 1):
        cs, _ = cv2.findContours((truth == k).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(truth_img, cs, -1, PALETTE_BGR[(k - 1) % len(PALETTE_BGR)], 1, cv2.LINE_AA)
    pred_img = bgr.copy()
    for k, poly in region_polygons(seg):
        cv2.polylines(pred_img, [np.round(poly).astype(np.int32).reshape(-1, 1, 2)], True,
                      PALETTE_BGR[(k - 1) % len(PALETTE_BGR)], 1, cv2.LINE_AA)
    heat = cv2.applyColorMap((np.clip(seg.defect_prob, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.addWeighted(bgr, 0.5, heat, 0.5, 0)
    gap = np.full((h, 4, 3), 255, np.uint8)
    panel = np.hstack([bgr, gap, truth_img, gap, pred_img, gap, heat])
    head = np.full((18, panel.shape[1], 3), 255, np.uint8)
    for i, t in enumerate(("image", "truth", "prediction", "defect probability")):
        cv2.putText(head, t, (i * (w + 4) + 3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (30, 30, 30), 1, cv2.LINE_AA)
    return np.vstack([head, panel])


def confusion_png(cm: np.ndarray, names: list[str], path: Path, title: str) -> None:
    """Pixel confusion matrix (rows true, columns predicted): count and row share per cell, coloured by the
    host's one confusion rule (``host.charts``, as every confusion matrix in Loupe)."""
    from host import charts

    charts.save_confusion(cm, names, path, f"pixels: {title}" if title else "pixels")


def _html(result: dict[str, Any], items: list[dict[str, Any]], out: Path) -> None:
    e = html.escape

    def f(v):
        return "-" if v is None else f"{v:.3f}"

    rows = "".join(f"<tr><td>{e(c)}</td><td>{f(v)}</td></tr>" for c, v in result["per_class_iou"].items())
    cards = "".join(f"<figure><img src='{e(i['file'])}'><figcaption>{e(i['name'])}: score {i['score']:.3f}, "
                    f"truth {e(i['truth'])}</figcaption></figure>" for i in items)
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>Loupe segmentation evaluation</title>
<style>body{{font-family:sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}} td:first-child{{text-align:left}}
figure{{margin:8px 0;font-size:12px}}</style></head><body>
<h1>Segmentation evaluation</h1>
<p>bundle <code>{e(result['bundle'])}</code> on <code>{e(result['data'])}</code> ({e(result['split'])})</p>
<p><b>mean IoU {f(result['mean_iou'])}</b>, defect IoU {f(result['defect_iou'])}, image AUROC
{f(result['image_auroc'])} on {result['n_images']} images; {result['ms_per_image']:.2f} ms per image (median)</p>
<h2>Per class IoU</h2><table><tr><th>class</th><th>IoU</th></tr>{rows}</table>
<h2>Pixel confusion matrix</h2><img src="confusion_matrix.png">
<h2>Images</h2><p>image | truth | predicted regions (polygons coloured by class) | defect probability</p>{cards}
</body></html>"""
    (out / "index.html").write_text(doc, encoding="utf-8")


# ------------------------------------------------------------------ evaluate


def bundle_classes(bundle: Bundle) -> list[str]:
    """The bundle's defect classes (as ``Segmenter`` reads them), without opening the model."""
    try:
        return [str(c) for c in bundle.meta["classes"]]
    except (KeyError, TypeError) as exc:
        raise UsageError(f"{bundle.path / 'bundle.json'}: missing or malformed field {exc}") from None


def plan(bundle: Bundle, data: Path, classes: list[str]) -> EvalPlan:
    """The evaluation images as items (the data set's class mapping, the sample): loadable in any process."""
    try:
        ds = scan(data, classes=classes)
    except DataError as exc:
        raise UsageError(str(exc)) from None
    samples, split = eval_samples(ds, bundle.meta.get("split"))
    if not samples:
        raise UsageError(f"{data}: no images to evaluate (expected test/images/ with test/masks/ or a COCO file)")
    loader = replace(ds, train=[], test=[])  # what ``load`` needs, shared by all items (pickled once per block)
    return EvalPlan([(loader, s) for s in samples], {"split": split})


def predict_one(seg: Segmenter, item, threshold: float | None = None, keep: bool = False):
    """One image -> its row: the pixel confusion counts (not the masks), the defect score, the truth. With
    ``keep``: (row, image, truth mask, segmentation) for the report's pictures."""
    loader, s = item
    try:
        image, truth = loader.load(s)
    except DataError as exc:
        row: dict[str, Any] = {"unreadable": str(exc)}
        return (row, None, None, None) if keep else row
    t0 = time.perf_counter()
    r = seg.segment(image, threshold)
    ms = (time.perf_counter() - t0) * 1e3
    k1 = seg.n_classes + 1
    cm = np.bincount(truth.astype(np.int64).ravel() * k1 + r.labels.astype(np.int64).ravel(),
                     minlength=k1 * k1).reshape(k1, k1)
    present = [seg.classes[k - 1] for k in np.unique(truth) if 0 < k <= seg.n_classes]
    row = {"cm": cm, "ms": ms, "defective": bool(truth.any()), "name": s.name, "path": str(s.image),
           "score": r.score, "truth": ", ".join(present) or "good", "regions": len(r.regions)}
    return (row, image, truth, r) if keep else row


def metrics_of(bundle: Bundle, data: Path, classes: list[str], ev: EvalPlan, rows: list[dict[str, Any]],
               threads: int, threshold: float | None = None) -> tuple[dict[str, Any], np.ndarray, list[dict]]:
    """(``loupe eval``'s result, the pixel confusion matrix, the per-image items) from the rows in order."""
    ok = [r for r in rows if "unreadable" not in r]
    unreadable = [r["unreadable"] for r in rows if "unreadable" in r]
    if not ok:
        raise UsageError(f"{data}: none of the {len(rows)} evaluation images could be read: {unreadable[:3]}")
    k1 = len(classes) + 1
    cm = np.zeros((k1, k1), np.int64)
    good, bad = [], []
    for r in ok:
        cm += r["cm"]
        (bad if r["defective"] else good).append(r["score"])
    per_image = [{k: r[k] for k in ("name", "path", "score", "truth", "regions")} for r in ok]
    stored = float(bundle.meta.get("threshold", 0.5))
    result: dict[str, Any] = {"task": "segment", "batch": 1, **metrics(cm, classes, good, bad),
                              "classes": classes, "n_images": len(ok), "n_defective": len(bad),
                              "n_good": len(good), "ms_per_image": statistics.median([r["ms"] for r in ok]),
                              "threshold": stored if threshold is None else threshold,
                              "pixel_confusion_matrix": cm.tolist(),
                              "pixel_confusion_labels": ["background"] + classes,
                              # per image: the defect score and whether it is defective (ROC in the desktop app)
                              "scores": [i["score"] for i in per_image],
                              "labels": [i["truth"] != "good" for i in per_image],
                              "unreadable": unreadable, "split": ev.state["split"],
                              "bundle": str(bundle.path), "data": str(data), "threads": threads}
    return result, cm, per_image


def evaluate(bundle: Bundle, data: Path, out: Path | None, progress: Progress, threads: int = 2,
             threshold: float | None = None) -> dict[str, Any]:
    seg = Segmenter(bundle, threads=threads)
    ev = plan(bundle, data, seg.classes)
    if eval_batch(1) != 1:
        progress.log(f"--batch {eval_batch(1)}: segmentation (batching not measured yet) evaluation runs at batch 1")
    if out is not None:
        out = Path(out)
        (out / "overlays").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    n = len(ev.items)
    for i, item in enumerate(ev.items):
        row, image, truth, r = predict_one(seg, item, threshold, keep=True)
        rows.append(row)
        if out is not None and image is not None:
            cv2.imwrite(str(out / "overlays" / f"{row['name']}.png"), overlay_panel(image, truth, r, seg.classes))
        if i % 20 == 0 or i == n - 1:
            progress.update("evaluate", i + 1, n)
    result, cm, per_image = metrics_of(bundle, data, seg.classes, ev, rows, threads, threshold)
    if out is not None:
        for item in per_image:
            item["file"] = f"overlays/{item['name']}.png"
        names = ["background"] + seg.classes
        confusion_png(cm, names, out / "confusion_matrix.png",
                      f"mean IoU {result['mean_iou'] or 0:.3f}, defect IoU {result['defect_iou'] or 0:.3f}")
        (out / "metrics.json").write_text(json.dumps({**result, "images": per_image}, indent=2))
        _html(result, per_image, out)
        result["report"] = str(out / "index.html")
    return result
