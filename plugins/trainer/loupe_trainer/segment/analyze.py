"""``loupe dataset analyze`` for segmentation sets: pixel share per class and masks that do not fit their image.

Called by ``loupe_trainer.dataset`` when DATA has the segmentation layout
(``loupe_dl_segment.data.is_segmentation_data``). Adds ``segmentation`` to the analysis::

    classes            the defect classes (classes.txt or the COCO categories)
    splits             per split: images, good / defective images, images per class,
                       how they are labelled (mask file, COCO, none = good)
    pixel_share        per split and class (background included): share of all pixels
    mask_problems      [{file, problem}]: masks whose size differs from their image, values above
                       the number of classes, colour masks, unreadable masks, masks without an
                       image, COCO annotations that cannot be rasterised
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def is_segmentation(root: Path) -> bool:
    from loupe_dl_segment.data import is_segmentation_data

    return is_segmentation_data(root)


def analyze_segmentation(root: Path) -> dict[str, Any]:
    from loupe_dl_segment.data import IMAGE_EXTENSIONS, DataError, read_image, scan

    problems: list[dict[str, str]] = []
    try:
        ds = scan(root)
    except DataError as exc:
        return {"error": str(exc), "mask_problems": [{"file": str(root), "problem": str(exc)}]}
    n = len(ds.classes)
    splits: dict[str, Any] = {}
    shares: dict[str, dict[str, float]] = {}
    total = np.zeros(n + 1, np.int64)
    for split, samples in (("train", ds.train), ("test", ds.test)):
        if not samples and not (root / split).is_dir():
            continue
        counts = np.zeros(n + 1, np.int64)
        per_class = {c: 0 for c in ds.classes}
        by = {"mask": 0, "coco": 0, "none": 0}
        good = defective = 0
        for s in samples:
            by[s.labelled_by] += 1
            try:
                image = read_image(s.image)
            except DataError as exc:
                problems.append({"file": str(s.image.relative_to(root)), "problem": str(exc)})
                continue
            try:
                mask = ds.load_mask(s, image.shape[:2])
            except DataError as exc:
                bad = s.mask or (s.coco.path if s.coco else s.image)
                problems.append({"file": str(Path(bad).relative_to(root)) if Path(bad).is_relative_to(root)
                                 else str(bad), "problem": str(exc).split(": ", 1)[-1]})
                continue
            c = np.bincount(mask.ravel(), minlength=n + 1)[:n + 1]
            counts += c
            if c[1:].any():
                defective += 1
                for k in np.flatnonzero(c[1:]):
                    per_class[ds.classes[k]] += 1
            else:
                good += 1
        masks_dir = root / split / "masks"
        if masks_dir.is_dir():
            stems = {s.name for s in samples}
            for p in sorted(masks_dir.iterdir()):
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and p.stem not in stems:
                    problems.append({"file": str(p.relative_to(root)),
                                     "problem": f"no image {split}/images/{p.stem}.* for this mask"})
        total += counts
        px = counts.sum()
        shares[split] = {name: float(v / px) if px else 0.0 for name, v in zip(["background"] + ds.classes, counts)}
        splits[split] = {"images": len(samples), "good": good, "defective": defective, "images_per_class": per_class,
                         "labelled_by": by}
    px = total.sum()
    shares["all"] = {name: float(v / px) if px else 0.0 for name, v in zip(["background"] + ds.classes, total)}
    return {"classes": ds.classes, "splits": splits, "pixel_share": shares, "mask_problems": problems}


def add_segmentation(root: Path, d: dict[str, Any]) -> dict[str, Any] | None:
    """Add the ``segmentation`` section to an analysis dict when ``root`` is a segmentation set."""
    if not is_segmentation(root):
        return None
    seg = analyze_segmentation(root)
    d["segmentation"] = seg
    # identical masks (all-zero ones of good images) are expected, not duplicates worth reporting
    d["duplicates"] = [g for g in d.get("duplicates", [])
                       if not all(Path(f).parent.name == "masks" for f in g["files"])]
    # nor are 8-bit gray masks beside colour images a channel mismatch
    d["channel_mismatches"] = [m for m in d.get("channel_mismatches", []) if Path(m["file"]).parent.name != "masks"]
    return seg


def print_segmentation(seg: dict[str, Any], p=print) -> None:
    p()
    if "error" in seg:
        p(f"segmentation: {seg['error']}")
        return
    p(f"segmentation: {len(seg['classes'])} defect classes ({', '.join(seg['classes'])})")
    for split, s in seg["splits"].items():
        lb = ", ".join(f"{k} {v}" for k, v in s["labelled_by"].items() if v)
        p(f"  {split}: {s['images']} images, {s['good']} good, {s['defective']} defective (labelled by: {lb})")
        for c, v in s["images_per_class"].items():
            p(f"    {c:<22} in {v:>5} images")
    p("  pixel share per class:")
    names = list(seg["pixel_share"]["all"])
    cols = list(seg["pixel_share"])
    p("    " + f"{'class':<22}" + "".join(f"{c:>11}" for c in cols))
    for name in names:
        p("    " + f"{name:<22}" + "".join(f"{100 * seg['pixel_share'][c].get(name, 0.0):>10.3f}%" for c in cols))
    probs = seg["mask_problems"]
    p(f"  masks that do not match their image: {len(probs) if probs else 'none'}")
    for it in probs[:50]:
        p(f"    {it['file']}: {it['problem']}")
    if len(probs) > 50:
        p(f"    ... and {len(probs) - 50} more (see --json)")
