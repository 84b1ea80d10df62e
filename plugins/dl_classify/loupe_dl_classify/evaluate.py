"""``loupe eval`` for classification bundles: metrics, confusion-matrix PNG, error gallery, HTML summary."""
from __future__ import annotations

import html
import json
import statistics
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from host import CONFUSION_PASS_AT, CONFUSION_REVIEW_AT, Bundle, EvalPlan, Progress, UsageError, eval_batch, read_bundle_meta

from .data import read_image, scan, test_samples
from .model import Classifier

#: images per graph run in ``loupe eval`` (``--batch`` overrides): the classifier's graph ran ~2x more
#: images/s at batch 8-16 than at batch 1 on ONNX Runtime's CPU provider (measured with `loupe bench`); the line
#: path stays at batch 1. ``ms_per_image`` is then a batch's time over its images.
EVAL_BATCH = 8



def confusion_matrix(y_true, y_pred, n: int) -> np.ndarray:
    """N x N counts, rows = true class, columns = predicted class."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def per_class(cm: np.ndarray, classes: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for i, c in enumerate(classes):
        tp = float(cm[i, i])
        pred, true = float(cm[:, i].sum()), float(cm[i].sum())
        out[c] = {"precision": tp / pred if pred else 0.0, "recall": tp / true if true else 0.0,
                  "support": int(true)}
    return out


# ------------------------------------------------------------------ plots


def confusion_png(cm: np.ndarray, classes: list[str], path: Path, title: str = "") -> None:
    """Colour-coded confusion matrix, drawn by ``host.charts.draw_confusion`` (matplotlib, Agg), as the
    desktop app draws it.

    Each cell shows its count and its rate (share of the true class's row). Colours follow
    ``host.confusion_style``, the one rule the desktop app uses too: a diagonal cell is green at a recall of
    ``CONFUSION_PASS_AT`` (90 %) or more, amber from ``CONFUSION_REVIEW_AT`` (70 %), red below; an
    off-diagonal cell is red, stronger as its share of the row grows.
    """
    from host import charts

    charts.save_confusion(cm, classes, path, title)


def heat_overlay(image: np.ndarray, heat: np.ndarray, side: int = 160) -> np.ndarray:
    """Image | heatmap-over-image, side by side (BGR)."""
    from .data import to_rgb8

    rgb = to_rgb8(image)
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    bgr = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), size, interpolation=cv2.INTER_AREA if s < 1 else
                     cv2.INTER_NEAREST)
    hm = cv2.resize(np.clip(heat, 0, 1).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((hm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    blend = cv2.addWeighted(bgr, 0.55, colour, 0.45, 0)
    return np.hstack([bgr, np.full((size[1], 4, 3), 255, np.uint8), blend])


def _html(result: dict[str, Any], gallery: list[dict[str, Any]], out: Path) -> None:
    e = html.escape
    rows = "".join(f"<tr><td>{e(c)}</td><td>{v['precision']:.3f}</td><td>{v['recall']:.3f}</td>"
                   f"<td>{v['support']}</td></tr>" for c, v in result["per_class"].items())
    cards = "".join(
        f"<figure><img src='{e(g['file'])}'><figcaption>{e(Path(g['path']).name)}<br>true <b>{e(g['true'])}</b>, "
        f"predicted <b class='bad'>{e(g['predicted'])}</b> ({g['confidence']:.2f})</figcaption></figure>"
        for g in gallery)
    missed = result["n_images"] - result["n_correct"]
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>Loupe evaluation</title>
<style>body{{font-family:sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}} td:first-child{{text-align:left}}
figure{{display:inline-block;margin:6px;font-size:12px;vertical-align:top}} .bad{{color:#c22}}</style></head><body>
<h1>Classification evaluation</h1>
<p>bundle <code>{e(result['bundle'])}</code> on <code>{e(result['data'])}</code> ({e(result['split'])})</p>
<p><b>accuracy {result['accuracy']:.4f}</b> on {result['n_images']} images; {missed} misclassified;
{result['ms_per_image']:.2f} ms per image (median)</p>
<h2>Confusion matrix</h2><p>rows: true class, columns: predicted; a class's recall (the diagonal) is green
at &ge; {CONFUSION_PASS_AT:.0%}, amber at &ge; {CONFUSION_REVIEW_AT:.0%}, red below</p>
<img src="confusion_matrix.png">
<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>images</th></tr>{rows}</table>
<h2>Misclassified ({len(gallery)} shown of {missed}, most confident first)</h2>
<p>each: the image, and the class activation map of the predicted class over it</p>{cards}
</body></html>"""
    (out / "index.html").write_text(doc, encoding="utf-8", errors="replace")  # undecodable file names


# -------------------------------------------------------------- evaluate


def bundle_classes(bundle: Bundle) -> list[str]:
    """The bundle's classes, in the model's order (as ``Classifier`` reads them), without opening the model."""
    return list((bundle.info or read_bundle_meta(bundle.meta, bundle.path / "bundle.json")).classes or [])


def plan(bundle: Bundle, data: Path, classes: list[str]) -> EvalPlan:
    """The test images (``loupe eval``'s items): (path, true class index) each."""
    try:
        folders = scan(data, classes=classes)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    samples, split = test_samples(folders, bundle.meta.get("split"))
    if not samples:
        raise UsageError(f"{data}: no images to evaluate (expected test/<class>/ folders)")
    return EvalPlan(samples, {"split": split})


def predict_rows(clf: Classifier, samples: list, batch: int = 1) -> list[dict[str, Any]]:
    """Test images -> one row each: true and predicted class, confidence, time per image (or why it is
    unreadable). The readable images go through the model ``batch`` at a time."""
    rows: list[dict[str, Any]] = [{} for _ in samples]
    images, ks = [], []
    for k, s in enumerate(samples):
        try:
            images.append(read_image(s.path))
            ks.append(k)
        except (ValueError, OSError) as exc:
            rows[k] = {"unreadable": str(exc)}
    for start in range(0, len(images), batch):
        part = images[start:start + batch]
        t0 = time.perf_counter()
        probs, _ = clf.predict_batch(part, batch)
        ms = (time.perf_counter() - t0) * 1e3 / len(part)
        for k, p in zip(ks[start:start + batch], probs):
            i = int(np.argmax(p))
            rows[k] = {"true": samples[k].label, "pred": i, "conf": float(p[i]), "ms": ms}
    return rows


def predict_one(clf: Classifier, s) -> dict[str, Any]:
    """One test image -> its row (``loupe eval --executor``: one image at a time on a worker)."""
    return predict_rows(clf, [s])[0]


def metrics(bundle: Bundle, data: Path, classes: list[str], ev: EvalPlan, rows: list[dict[str, Any]],
            threads: int, batch: int = 1) -> dict[str, Any]:
    """``loupe eval``'s result from the rows of every test image (in the plan's order)."""
    ok = [r for r in rows if "unreadable" not in r]
    if not ok:
        raise UsageError(f"{data}: none of the {len(rows)} test images could be read")
    cm = confusion_matrix([r["true"] for r in ok], [r["pred"] for r in ok], len(classes))
    correct = int(np.trace(cm))
    return {
        "task": "classify",
        "accuracy": correct / len(ok),
        "classes": classes,
        "confusion_matrix": cm.tolist(),
        "per_class": per_class(cm, classes),
        "ms_per_image": statistics.median([r["ms"] for r in ok]),
        "n_images": len(ok),
        "n_correct": correct,
        "unreadable": [r["unreadable"] for r in rows if "unreadable" in r],
        "split": ev.state["split"],
        "bundle": str(bundle.path),
        "data": str(data),
        "threads": threads,
        "batch": batch,
    }


def evaluate(bundle: Bundle, data: Path, out: Path | None, progress: Progress, threads: int = 2,
             gallery_max: int = 60) -> dict[str, Any]:
    clf = Classifier(bundle, threads=threads)
    ev = plan(bundle, data, clf.classes)
    samples = ev.items
    batch = eval_batch(EVAL_BATCH)
    rows: list[dict[str, Any]] = []
    n = len(samples)
    n_ok = n_right = 0
    for start in range(0, n, 50):  # progress every 50 images
        part = predict_rows(clf, samples[start:start + 50], batch)
        rows += part
        ok = [r for r in part if "unreadable" not in r]
        n_ok += len(ok)
        n_right += sum(r["pred"] == r["true"] for r in ok)
        progress.update("evaluate", len(rows), n, acc=n_right / n_ok if n_ok else 0.0)
    wrong = [(r["conf"], k) for k, r in enumerate(rows) if "unreadable" not in r and r["pred"] != r["true"]]
    result = metrics(bundle, data, clf.classes, ev, rows, threads, batch)
    cm = np.asarray(result["confusion_matrix"])
    if out is not None:
        out = Path(out)
        (out / "misclassified").mkdir(parents=True, exist_ok=True)
        confusion_png(cm, clf.classes, out / "confusion_matrix.png",
                      f"accuracy {result['accuracy']:.3f} on {result['n_images']} images; diagonal green at recall "
                      f">= {CONFUSION_PASS_AT:.0%}, amber >= {CONFUSION_REVIEW_AT:.0%}")
        gallery = []
        for rank, (c, k) in enumerate(sorted(wrong, reverse=True)[:gallery_max]):
            s = samples[k]
            image = read_image(s.path)
            p = clf.predict(image, heatmap=True)
            name = f"misclassified/{rank:03d}_{clf.classes[s.label]}_as_{p.label}.png"
            cv2.imwrite(str(out / name), heat_overlay(image, p.heatmap))
            gallery.append({"file": name, "path": str(s.path), "true": clf.classes[s.label],
                            "predicted": p.label, "confidence": p.confidence})
        (out / "metrics.json").write_text(json.dumps({**result, "misclassified": gallery}, indent=2))
        _html(result, gallery, out)
        result["report"] = str(out / "index.html")
    return result
