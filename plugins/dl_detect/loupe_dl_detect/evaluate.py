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

from host import Bundle, EvalPlan, Progress, UsageError, eval_batch

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


def bundle_info(bundle: Bundle) -> tuple[list[str], float]:
    """(classes, the operating min_score) as ``Detector`` reads them, without opening the model (with a verifier:
    its threshold on the combined score)."""
    try:
        classes = [str(c) for c in bundle.meta["classes"]]
        if bundle.meta.get("verifier") is not None:
            from .verify import verifier_meta

            return classes, verifier_meta(bundle, len(classes))["min_score"]
        return classes, float((bundle.meta.get("decode") or {}).get("min_score", 0.3))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{bundle.path / 'bundle.json'}: missing or malformed field {exc}") from None


def plan(bundle: Bundle, data: Path, classes: list[str]) -> EvalPlan:
    """The evaluation images as items (samples with their true boxes): loadable in any process."""
    try:
        ds = scan(data, classes=classes)
    except DataError as exc:
        raise UsageError(str(exc)) from None
    samples, split = eval_samples(ds, bundle.meta.get("split"))
    if not samples:
        raise UsageError(f"{data}: no images to evaluate (expected a test/ split, or the held-out share recorded "
                         f"in the bundle)")
    return EvalPlan(samples, {"split": split})


def predict_one(det: Detector, s, thr: float, keep: bool = False):
    """One image -> its row: every detection down to the AP floor, the true boxes, whether the counts at
    ``thr`` match. With ``keep``: (row, RGB image) for the report's pictures."""
    try:
        rgb, gb, gl = load(s)
    except (DataError, ValueError, OSError) as exc:
        return ({"unreadable": str(exc)}, None) if keep else {"unreadable": str(exc)}
    # AP is computed from every detection down to a low score; counts use the operating threshold
    floor = min(0.05, det.min_score)
    t0 = time.perf_counter()
    d = det.predict(rgb[:, :, ::-1], min_score=floor, operating=thr)   # the runtime takes images as decoded (BGR)
    ms = (time.perf_counter() - t0) * 1e3
    sel = d.scores >= thr
    row = {"pred": (d.boxes, d.scores, d.labels), "gt": (gb, gl), "exact": counts_match(d.labels[sel], gl,
                                                                                          len(det.classes)),
           "ms": ms}
    return (row, rgb) if keep else row


def metrics_of(bundle: Bundle, data: Path, classes: list[str], thr: float, ev: EvalPlan, rows: list[dict[str, Any]],
               threads: int) -> tuple[dict[str, Any], dict]:
    """(``loupe eval``'s result, the raw metrics with the PR curves) from the rows in the plan's order."""
    ok = [r for r in rows if "unreadable" not in r]
    if not ok:
        raise UsageError(f"{data}: none of the {len(rows)} test images could be read")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # classes without ground truth: NaN by design
        m = evaluate_detections([r["pred"] for r in ok], [r["gt"] for r in ok], len(classes))
    per_class = {c: (None if np.isnan(m["ap50"][i]) else float(m["ap50"][i])) for i, c in enumerate(classes)}
    result: dict[str, Any] = {
        "task": "detect", "batch": 1,
        "map50": m["map50"],
        "map50_95": m["map50_95"],
        "per_class_ap50": per_class,
        "per_class_ap50_95": {c: (None if np.isnan(m["ap50_95"][i]) else float(m["ap50_95"][i]))
                              for i, c in enumerate(classes)},
        "count_accuracy": float(np.mean([r["exact"] for r in ok])),
        "n_images": len(ok),
        "n_boxes": {c: int(m["n_gt"][i]) for i, c in enumerate(classes)},
        "min_score": thr,
        "ms_per_image": statistics.median([r["ms"] for r in ok]),
        "classes": classes,
        "unreadable": [r["unreadable"] for r in rows if "unreadable" in r],
        "split": ev.state["split"],
        "bundle": str(bundle.path),
        "data": str(data),
        "threads": threads,
    }
    return result, m


def evaluate(bundle: Bundle, data: Path, out: Path | None, progress: Progress, threads: int = 2,
             min_score: float | None = None) -> dict[str, Any]:
    det = Detector(bundle, threads=threads)
    ev = plan(bundle, data, det.classes)
    thr = det.min_score if min_score is None else min_score
    if eval_batch(1) != 1:
        progress.log(f"--batch {eval_batch(1)}: detection (batching not measured yet) evaluation runs at batch 1")
    if out is not None:
        (Path(out) / "images").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    samples = ev.items
    for k, s in enumerate(samples):
        row, rgb = predict_one(det, s, thr, keep=True)
        rows.append(row)
        if out is not None and rgb is not None:
            from .model import Detections

            (boxes, scores, labels), (gb, gl) = row["pred"], row["gt"]
            sel = scores >= thr
            shown = Detections(boxes[sel], scores[sel], labels[sel])
            name = Path(s.name).with_suffix(".png").as_posix().replace("/", "__")
            cv2.imwrite(str(Path(out) / "images" / name), draw(rgb, gb, gl, shown, det.classes))
        if k % 20 == 0 or k == len(samples) - 1:
            progress.update("evaluate", k + 1, len(samples))
    result, m = metrics_of(bundle, data, det.classes, thr, ev, rows, threads)
    if out is not None:
        out = Path(out)
        pr_png(m["curves"], m["ap50"], det.classes, out / "pr_curves.png")
        (out / "pr_curves.json").write_text(json.dumps(
            {det.classes[c]: {"recall": [round(float(v), 4) for v in r], "precision": [round(float(v), 4) for v in p]}
             for c, (r, p) in m["curves"].items()}))
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        result["report"] = str(out)
    return result
