"""``loupe eval`` for detection bundles: COCO mAP, count accuracy, images with true and predicted boxes, PR curves."""
from __future__ import annotations

import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from host import Bundle, Progress, UsageError, eval_batch

from .data import DataError, load, scan, eval_samples
from .metrics import counts_match, evaluate_detections
from .model import Detector

TRUE_COLOUR = (60, 180, 60)      # BGR green: the annotation
PRED_COLOUR = (40, 40, 230)      # BGR red: the prediction


def draw(rgb: np.ndarray, gt_boxes, gt_labels, det, classes: list[str]) -> np.ndarray:
    """BGR picture: true boxes in green, predictions in red with class and score."""
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for b, c in zip(gt_boxes, gt_labels):
        cv2.rectangle(img, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), TRUE_COLOUR, 1)
    for b, s, c in zip(det.boxes, det.scores, det.labels):
        p1, p2 = (int(b[0]), int(b[1])), (int(b[2]), int(b[3]))
        cv2.rectangle(img, p1, p2, PRED_COLOUR, 1)
        cv2.putText(img, f"{classes[int(c)]} {s:.2f}", (p1[0], max(10, p1[1] - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    PRED_COLOUR, 1, cv2.LINE_AA)
    return img


def pr_png(curves: dict[int, tuple[np.ndarray, np.ndarray]], ap50, classes: list[str], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for c, (r, p) in curves.items():
        env = np.maximum.accumulate(p[::-1])[::-1] if len(p) else p
        ax.plot(np.r_[0, r], np.r_[1, env], label=f"{classes[c]} (AP50 {ap50[c]:.3f})")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("precision-recall per class at IoU 0.5", fontsize=10)
    fig.savefig(str(path), dpi=110)


def evaluate(bundle: Bundle, data: Path, out: Path | None, progress: Progress, threads: int = 2,
             min_score: float | None = None) -> dict[str, Any]:
    det = Detector(bundle, threads=threads)
    try:
        ds = scan(data, classes=det.classes)
    except DataError as exc:
        raise UsageError(str(exc)) from None
    samples, split = eval_samples(ds, bundle.meta.get("split"))
    if not samples:
        raise UsageError(f"{data}: no images to evaluate (expected a test/ split, or the held-out share recorded "
                         f"in the bundle)")
    n_cls = len(det.classes)
    preds, gts, times, exact, unreadable = [], [], [], [], []
    kept = []
    # AP is computed from every detection down to a low score; counts use the bundle's operating threshold
    floor = min(0.05, det.min_score)
    thr = det.min_score if min_score is None else min_score
    if out is not None:
        (Path(out) / "images").mkdir(parents=True, exist_ok=True)
    for k, s in enumerate(samples):
        try:
            rgb, gb, gl = load(s)
        except (DataError, ValueError, OSError) as exc:
            unreadable.append(str(exc))
            continue
        t0 = time.perf_counter()
        d = det.predict(rgb[:, :, ::-1], min_score=floor)   # the runtime takes images as decoded (BGR)
        times.append((time.perf_counter() - t0) * 1e3)
        preds.append((d.boxes, d.scores, d.labels))
        gts.append((gb, gl))
        sel = d.scores >= thr
        exact.append(counts_match(d.labels[sel], gl, n_cls))
        kept.append(s)
        if out is not None:
            from .model import Detections

            shown = Detections(d.boxes[sel], d.scores[sel], d.labels[sel])
            name = Path(s.name).with_suffix(".png").as_posix().replace("/", "__")
            cv2.imwrite(str(Path(out) / "images" / name), draw(rgb, gb, gl, shown, det.classes))
        if k % 20 == 0 or k == len(samples) - 1:
            progress.update("evaluate", k + 1, len(samples))
    if not preds:
        raise UsageError(f"{data}: none of the {len(samples)} test images could be read")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # classes without ground truth: NaN by design
        m = evaluate_detections(preds, gts, n_cls)
    per_class = {c: (None if np.isnan(m["ap50"][i]) else float(m["ap50"][i])) for i, c in enumerate(det.classes)}
    if eval_batch(1) != 1:
        progress.log(f"--batch {eval_batch(1)}: detection (batching not measured yet) evaluation runs at batch 1")
    result: dict[str, Any] = {
        "task": "detect", "batch": 1,
        "map50": m["map50"],
        "map50_95": m["map50_95"],
        "per_class_ap50": per_class,
        "per_class_ap50_95": {c: (None if np.isnan(m["ap50_95"][i]) else float(m["ap50_95"][i]))
                              for i, c in enumerate(det.classes)},
        "count_accuracy": float(np.mean(exact)),
        "n_images": len(preds),
        "n_boxes": {c: int(m["n_gt"][i]) for i, c in enumerate(det.classes)},
        "min_score": thr,
        "ms_per_image": statistics.median(times),
        "classes": det.classes,
        "unreadable": unreadable,
        "split": split,
        "bundle": str(bundle.path),
        "data": str(data),
        "threads": threads,
    }
    if out is not None:
        out = Path(out)
        pr_png(m["curves"], m["ap50"], det.classes, out / "pr_curves.png")
        (out / "pr_curves.json").write_text(json.dumps(
            {det.classes[c]: {"recall": [round(float(v), 4) for v in r], "precision": [round(float(v), 4) for v in p]}
             for c, (r, p) in m["curves"].items()}))
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        result["report"] = str(out)
    return result
