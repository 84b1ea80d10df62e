"""errkinds.py BUNDLE...: the product's detections (verifier on, the bundle's threshold; loupe_dl_detect.Detector) on
the bench's test / dev / dev2 scenes (/tmp/h17s15), and per true class the missed parts, extra detections (IoU < 0.3
with every part, by predicted class) and class swaps; greedy match by score at IoU >= 0.3 (session 15's errana.py)."""
import sys
from pathlib import Path

import numpy as np

from host import Bundle
from loupe_dl_detect.data import load, scan
from loupe_dl_detect.model import Detector, iou_matrix

for path in sys.argv[1:]:
    det = Detector(Bundle.load(Path(path)), threads=2)
    k = len(det.classes)
    miss, extra, swap = np.zeros(k, int), np.zeros(k, int), np.zeros(k, int)
    wrong = n = 0
    for sub in ("bench", "dev", "dev2"):
        for s in scan(Path("/tmp/h17s15") / sub, classes=det.classes).test:
            rgb, gb, gl = load(s)
            d = det.predict(rgb[:, :, ::-1])
            n += 1
            wrong += int((np.bincount(d.labels, minlength=k) != np.bincount(gl, minlength=k)).any())
            iou = iou_matrix(d.boxes, gb) if len(d.boxes) and len(gb) else np.zeros((len(d.boxes), len(gb)))
            used = set()
            for i in np.argsort(-d.scores, kind="stable"):
                cand = [j for j in np.argsort(-iou[i]) if iou[i, j] >= 0.3 and j not in used] if len(gb) else []
                if not cand:
                    extra[d.labels[i]] += 1
                    continue
                used.add(cand[0])
                swap[gl[cand[0]]] += int(d.labels[i] != gl[cand[0]])
            for j in range(len(gb)):
                miss[gl[j]] += int(j not in used)
    cl = "/".join(det.classes)
    print(f"{Path(path).name:6s} wrong {wrong}/{n}  missed {cl} {'/'.join(map(str, miss))} ({miss.sum()})  "
          f"extra {'/'.join(map(str, extra))} ({extra.sum()})  swaps {'/'.join(map(str, swap))} ({swap.sum()})")
