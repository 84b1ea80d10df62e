"""thrgap.py BUNDLE...: count accuracy (test / dev / dev2 pooled, 300 scenes) of the product's detections (verifier on)
at the bundle's own threshold and at every threshold 0.20-0.60 (the oracle's best): how much the threshold leaves."""
import sys
from pathlib import Path

import numpy as np

from host import Bundle
from loupe_dl_detect.data import load, scan
from loupe_dl_detect.model import Detector

TS = np.round(np.arange(0.20, 0.601, 0.025), 3)
for path in sys.argv[1:]:
    det = Detector(Bundle.load(Path(path)), threads=2)
    k = len(det.classes)
    rows = []
    for sub in ("bench", "dev", "dev2"):
        for s in scan(Path("/tmp/h17s15") / sub, classes=det.classes).test:
            rgb, gb, gl = load(s)
            d = det.predict(rgb[:, :, ::-1], min_score=0.1)
            rows.append((d.scores, d.labels, np.bincount(gl, minlength=k)))
    acc = {float(t): np.mean([(np.bincount(l[sc >= t], minlength=k) == g).all() for sc, l, g in rows]) for t in TS}
    own = np.mean([(np.bincount(l[sc >= det.min_score], minlength=k) == g).all() for sc, l, g in rows])
    best = max(acc, key=acc.get)
    print(f"{Path(path).name:6s} own {det.min_score:.3f}: {own:.3f}   best {best:.3f}: {acc[best]:.3f}   "
          + " ".join(f"{t:.3f}:{a:.2f}" for t, a in acc.items() if abs(t - det.min_score) <= 0.1))
