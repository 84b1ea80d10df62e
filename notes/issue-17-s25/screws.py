"""[IOU=0.3] screws.py BUNDLE...: why parts go missing or extra (issue 17, session 25; offline, 2 threads). On the 300 test
scenes, each true part is matched to the shipped bundle's candidates (the detector at 0.1, the cap, the verifier's
combined score and label, through the runtime) at IoU >= IOU (0.5) and split into: counted right (a match at or above the
threshold with its class), called another class (a match above the threshold with the wrong label), scored under
the threshold (the best match below it), and never a candidate (no match). The extras are the combined detections
at or above the threshold that match no true part of their label. Thresholds as errors.py."""
import os
import sys
from pathlib import Path

import numpy as np
import torch

from loupe_dl_detect.data import load, scan
from loupe_dl_detect.model import Detector, iou_matrix

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
from scenes import bundle_scenes  # noqa: E402

torch.set_num_threads(2)
IOU = float(os.environ.get("IOU", 0.5))
for bpath in sys.argv[1:]:
    sc = bundle_scenes(bpath)
    v = sc.meta["verifier"]
    thr = v["out_of_fold"].get("threshold", v["min_score"])
    full = Detector(sc.bundle, threads=2)
    C, names = sc.n_cls, sc.classes
    fate = {c: {"right": 0, "other class": 0, "under threshold": 0, "no candidate": 0} for c in names}
    conf = np.zeros((C, C), int)         # true class x label given, for matches at or above the threshold
    extra = {c: 0 for c in names}
    for sub in ("bench", "dev", "dev2"):
        for s in scan(Path("/tmp/h17s15") / sub, classes=names).test:
            rgb, gb, gl = load(s)
            d = full.predict(rgb[:, :, ::-1], min_score=0.1)
            iou = iou_matrix(gb, d.boxes) if len(d.boxes) and len(gb) else np.zeros((len(gb), len(d.boxes)))
            used = np.zeros(len(d.boxes), bool)
            for i, c in enumerate(gl):
                m = np.flatnonzero(iou[i] >= IOU) if iou.shape[1] else np.zeros(0, int)
                up = m[d.scores[m] >= thr]
                if len(up):
                    j = up[np.argmax(d.scores[up])]
                    used[j] = True
                    conf[c, d.labels[j]] += 1
                    fate[names[c]]["right" if d.labels[j] == c else "other class"] += 1
                else:
                    fate[names[c]]["under threshold" if len(m) else "no candidate"] += 1
            for j in np.flatnonzero(~used & (d.scores >= thr)):
                extra[names[d.labels[j]]] += 1
    print(f"{Path(bpath).name:4s} thr {thr:.3f} IoU {IOU}", flush=True)
    for c in names:
        print(f"  {c:8s} {fate[c]}  extra {extra[c]}", flush=True)
    print("  given labels (rows true, columns given):", names, conf.tolist(), flush=True)
