"""What kind of count errors a detection bundle makes on a test set, per score threshold.

    OMP_NUM_THREADS=2 .venv/bin/python bench/detect_errors.py BUNDLE DATA [--thresholds 0.3 0.4 ...]

For every test image whose per-class counts are wrong, the detections at the threshold are
matched (best score first) to the true boxes of any class at IoU >= 0.3, and the image is
counted under each kind of error it has:

* ``duplicate``: a second detection on a part already matched (per-class NMS lets two
  classes peak at the same centre);
* ``swap``: the part is found with the wrong class;
* ``extra``: a detection on no part (background, clutter);
* ``miss``: a part without a detection (the score of its best detection below the threshold).

Both NMS modes are shown: per class and class-agnostic (the bundle's default since session 2).
Images are decoded once by the runtime (ONNX Runtime, numpy); nothing here imports torch.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from host import Bundle
from loupe_dl_detect.data import load, preprocess, scan
from loupe_dl_detect.model import Detector, decode, iou_matrix

KINDS = ("duplicate", "swap", "extra", "miss")


def error_kinds(pb, ps, pl, gb, gl) -> set[str]:
    kinds: set[str] = set()
    iou = iou_matrix(pb, gb) if len(pb) and len(gb) else np.zeros((len(pb), len(gb)))
    used: set[int] = set()
    for i in np.argsort(-ps, kind="stable"):
        j = int(np.argmax(iou[i])) if len(gb) else -1
        if j >= 0 and iou[i, j] >= 0.3:
            if j in used:
                kinds.add("duplicate")
            else:
                used.add(j)
                if pl[i] != gl[j]:
                    kinds.add("swap")
        else:
            kinds.add("extra")
    if len(used) < len(gb):
        kinds.add("miss")
    return kinds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("data")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6])
    ap.add_argument("--json", help="write the table here")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    a = ap.parse_args()
    det = Detector(Bundle.load(Path(a.bundle)), threads=a.threads)
    ds = scan(Path(a.data), classes=det.classes)
    n_cls = len(det.classes)
    raw = []
    for s in ds.test:
        rgb, gb, gl = load(s)
        heat, size, off = det.run(preprocess([rgb[:, :, ::-1]], det.size, det.norm))
        h, w = rgb.shape[:2]
        raw.append((heat[0], size[0], off[0], (w / det.size[1], h / det.size[0]), gb, gl))
    table = []
    thresholds = sorted(set(a.thresholds) | {round(float(det.min_score), 4)})
    print(f"{len(raw)} test images; bundle threshold {det.min_score:g}")
    print(f"{'nms':9} {'thr':>5} {'exact':>6} " + " ".join(f"{k:>9}" for k in KINDS))
    for agnostic in (False, True):
        for t in thresholds:
            row = {"nms": "agnostic" if agnostic else "per-class", "threshold": t, "exact": 0,
                   **{k: 0 for k in KINDS}}
            for heat, size, off, sc, gb, gl in raw:
                d = decode(heat, size, off, det.stride, sc, t, det.top_k, det.nms_iou, agnostic)
                if (np.bincount(d.labels, minlength=n_cls) == np.bincount(gl, minlength=n_cls)).all():
                    row["exact"] += 1
                    continue
                for k in error_kinds(d.boxes, d.scores, d.labels, gb, gl):
                    row[k] += 1
            table.append(row)
            print(f"{row['nms']:9} {t:5.2f} {row['exact'] / len(raw):6.2f} " + " ".join(f"{row[k]:9d}" for k in KINDS))
    if a.json:
        Path(a.json).write_text(json.dumps({"n_images": len(raw), "rows": table}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
