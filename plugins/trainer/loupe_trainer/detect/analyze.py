"""``loupe dataset analyze`` for detection sets: boxes per class, box sizes, boxes outside their image.

Called by ``loupe_trainer.dataset`` when DATA has a detection layout (COCO
``train/annotations.json`` or YOLO ``images/`` + ``labels/``). Adds ``detection``::

    layout             "coco" or "yolo"
    classes            class names in model order
    splits             per split: images, images without boxes, boxes per class
    box_sizes          per split: count and percentiles (5, 25, 50, 75, 95) of box width, height and
                       sqrt(area) in pixels, and a histogram of sqrt(area) (bins in pixels)
    outside            [{file, annotation, box, image_size}]: boxes reaching beyond their image
    problems           [{file, problem}]: unreadable images, annotation files that cannot be read
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

SIZE_BINS = [0, 8, 16, 32, 64, 96, 128, 256, 512, 100000]


def is_detection(root: Path) -> bool:
    from loupe_dl_detect.data import is_detection_data

    return is_detection_data(root)


def _image_size(sample) -> tuple[int, int] | None:
    """(height, width): from the annotation when declared, else from the file's header (decoded)."""
    if sample.size is not None:
        return sample.size
    from loupe_dl_detect.data import read_image

    img = read_image(sample.image)
    return img.shape[0], img.shape[1]


def analyze_detection(root: Path) -> dict[str, Any]:
    from loupe_dl_detect.data import DataError, scan

    try:
        ds = scan(root)
    except DataError as exc:
        return {"error": str(exc), "problems": [{"file": str(root), "problem": str(exc)}], "outside": []}
    out: dict[str, Any] = {"layout": ds.layout, "classes": ds.classes, "splits": {}, "box_sizes": {},
                           "outside": [], "problems": []}
    for split, samples in (("train", ds.train), ("test", ds.test)):
        if not samples:
            continue
        per_class = {c: 0 for c in ds.classes}
        empty = 0
        ws, hs = [], []
        for s in samples:
            try:
                hw = _image_size(s)
            except (DataError, ValueError, OSError) as exc:
                out["problems"].append({"file": s.name, "problem": str(exc).split(": ", 1)[-1]})
                continue
            if len(s.labels) == 0:
                empty += 1
            for c in s.labels:
                per_class[ds.classes[int(c)]] += 1
            b = s.boxes_xyxy(hw)
            ws.extend((b[:, 2] - b[:, 0]).tolist())
            hs.extend((b[:, 3] - b[:, 1]).tolist())
            for i in s.outside(hw):
                out["outside"].append({"file": s.name, "annotation": str(Path(s.source).relative_to(root))
                                       if Path(s.source).is_relative_to(root) else str(s.source),
                                       "box": i, "class": ds.classes[int(s.labels[i])],
                                       "xyxy": [round(float(v), 1) for v in b[i]],
                                       "image_size": [int(hw[1]), int(hw[0])]})
        out["splits"][split] = {"images": len(samples), "images_without_boxes": empty,
                                "boxes": int(sum(per_class.values())), "boxes_per_class": per_class}
        if ws:
            w, h = np.asarray(ws), np.asarray(hs)
            side = np.sqrt(np.clip(w * h, 0, None))
            pct = (5, 25, 50, 75, 95)
            hist, _ = np.histogram(side, SIZE_BINS)
            out["box_sizes"][split] = {
                "count": int(len(w)),
                "width": dict(zip(map(str, pct), np.round(np.percentile(w, pct), 1).tolist())),
                "height": dict(zip(map(str, pct), np.round(np.percentile(h, pct), 1).tolist())),
                "sqrt_area": dict(zip(map(str, pct), np.round(np.percentile(side, pct), 1).tolist())),
                "histogram_sqrt_area": [{"from": SIZE_BINS[k], "to": SIZE_BINS[k + 1], "boxes": int(n)}
                                        for k, n in enumerate(hist) if n],
            }
    return out


def add_detection(root: Path, d: dict[str, Any]) -> dict[str, Any] | None:
    """Add ``detection`` to the analysis dict when ``root`` is a detection set; return it (or None)."""
    if not is_detection(root):
        return None
    det = analyze_detection(root)
    d["detection"] = det
    return det


def print_detection(det: dict[str, Any], out=sys.stdout) -> None:
    p = lambda s="": print(s, file=out)  # noqa: E731
    p()
    if det.get("error"):
        p(f"detection set: {det['error']}")
        return
    p(f"detection set ({det['layout']}), {len(det['classes'])} classes")
    for split, s in det["splits"].items():
        p(f"  {split}: {s['images']} images, {s['boxes']} boxes, {s['images_without_boxes']} images without boxes")
        for c, n in s["boxes_per_class"].items():
            p(f"    {c:<24} {n:>7}")
    for split, b in det["box_sizes"].items():
        sa = b["sqrt_area"]
        p(f"  box size ({split}, sqrt(area) px): 5% {sa['5']}, median {sa['50']}, 95% {sa['95']}; "
          f"width median {b['width']['50']}, height median {b['height']['50']}")
        top = max(h["boxes"] for h in b["histogram_sqrt_area"])
        for h in b["histogram_sqrt_area"]:
            bar = "#" * max(1, round(30 * h["boxes"] / top))
            p(f"    {h['from']:>4}-{h['to'] if h['to'] < 100000 else '':<5} {bar} {h['boxes']}")
    p(f"boxes outside their image: {len(det['outside']) or 'none'}")
    for o in det["outside"][:50]:
        p(f"  {o['file']}: box {o['box']} ({o['class']}) {o['xyxy']} beyond {o['image_size'][0]}x"
          f"{o['image_size'][1]} (in {o['annotation']})")
    if det["problems"]:
        p(f"detection problems: {len(det['problems'])}")
        for o in det["problems"][:50]:
            p(f"  {o['file']}: {o['problem']}")
