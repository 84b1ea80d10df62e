"""``loupe eval`` for classification bundles: metrics, confusion-matrix PNG, error gallery, HTML summary."""
from __future__ import annotations

import html
import json
import statistics
import textwrap
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from host import CONFUSION_PASS_AT, CONFUSION_REVIEW_AT, Bundle, Progress, UsageError, eval_batch

from .data import read_image, scan, test_samples
from .model import Classifier

#: images per graph run in ``loupe eval`` (``--batch`` overrides): the classifier's graph ran ~2x more
#: images/s at batch 8-16 than at batch 1 on ONNX Runtime's CPU provider (notes/issue-19.md); the line
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
    """Colour-coded confusion matrix, drawn with matplotlib (Agg).

    Each cell shows its count and its rate (share of the true class's row). Colours follow
    ``host.confusion_style``, the one rule the desktop app uses too: a diagonal cell is green at a recall of
    ``CONFUSION_PASS_AT`` (90 %) or more, amber from ``CONFUSION_REVIEW_AT`` (70 %), red below; an
    off-diagonal cell is red, stronger as its share of the row grows.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from host import VERDICT_COLOURS, confusion_style

    n = len(classes)
    style = confusion_style(cm)
    white = np.array([1.0, 1.0, 1.0])
    rgb = np.ones((n, n, 3))
    for i in range(n):
        for j in range(n):
            status, strength = style[i][j]
            if status != "none":
                c = np.array([int(VERDICT_COLOURS[status][k:k + 2], 16) / 255 for k in (1, 3, 5)])
                rgb[i, j] = white + (c - white) * strength
    rows = cm.sum(axis=1, keepdims=True).astype(np.float64)
    rate = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)
    side = min(14.0, max(4.5, 0.62 * n + 2.2))
    fig = Figure(figsize=(side + 0.6, side), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(rgb, interpolation="nearest")
    fs = 9 if n <= 12 else 7
    for i in range(n):
        for j in range(n):
            if cm[i, j] or i == j:
                ax.text(j, i, f"{int(cm[i, j])}\n{100 * rate[i, j]:.0f}%", ha="center", va="center", fontsize=fs)
    names = [c if len(c) <= 16 else c[:15] + "…" for c in classes]
    ax.set_xticks(range(n), names, rotation=45, ha="right", rotation_mode="anchor", fontsize=fs)
    ax.set_yticks(range(n), names, fontsize=fs)
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="#bbbbbb", lw=0.8)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(textwrap.fill(title or "confusion matrix", 40 + 4 * n), fontsize=9)
    fig.savefig(str(path), dpi=110)


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


def evaluate(bundle: Bundle, data: Path, out: Path | None, progress: Progress, threads: int = 2,
             gallery_max: int = 60) -> dict[str, Any]:
    clf = Classifier(bundle, threads=threads)
    try:
        folders = scan(data, classes=clf.classes)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    samples, split = test_samples(folders, bundle.meta.get("split"))
    if not samples:
        raise UsageError(f"{data}: no images to evaluate (expected test/<class>/ folders)")
    y_true, y_pred, conf, times = [], [], [], []
    unreadable: list[str] = []
    wrong: list[tuple[float, int]] = []
    n = len(samples)
    batch = eval_batch(EVAL_BATCH)
    for start in range(0, n, batch):
        images, ks = [], []
        for k in range(start, min(n, start + batch)):
            try:
                images.append(read_image(samples[k].path))
                ks.append(k)
            except (ValueError, OSError) as exc:
                unreadable.append(str(exc))
        if not images:
            continue
        t0 = time.perf_counter()
        probs, _ = clf.predict_batch(images, batch)
        times.extend([(time.perf_counter() - t0) * 1e3 / len(images)] * len(images))
        for k, p in zip(ks, probs):
            i = int(np.argmax(p))
            y_true.append(samples[k].label)
            y_pred.append(i)
            conf.append(float(p[i]))
            if i != samples[k].label:
                wrong.append((float(p[i]), k))
        acc = float(np.mean(np.equal(y_true, y_pred))) if y_true else 0.0
        progress.update("evaluate", ks[-1] + 1, n, acc=acc)
    if not y_true:
        raise UsageError(f"{data}: none of the {n} test images could be read")
    cm = confusion_matrix(y_true, y_pred, len(clf.classes))
    correct = int(np.trace(cm))
    result: dict[str, Any] = {
        "task": "classify",
        "accuracy": correct / len(y_true),
        "classes": clf.classes,
        "confusion_matrix": cm.tolist(),
        "per_class": per_class(cm, clf.classes),
        "ms_per_image": statistics.median(times),
        "n_images": len(y_true),
        "n_correct": correct,
        "unreadable": unreadable,
        "split": split,
        "bundle": str(bundle.path),
        "data": str(data),
        "threads": threads,
        "batch": batch,
    }
    if out is not None:
        out = Path(out)
        (out / "misclassified").mkdir(parents=True, exist_ok=True)
        confusion_png(cm, clf.classes, out / "confusion_matrix.png",
                      f"accuracy {result['accuracy']:.3f} on {len(y_true)} images; diagonal green at recall "
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
