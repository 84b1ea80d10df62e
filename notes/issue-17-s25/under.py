"""under.py BUNDLE...: the true parts whose best candidate (IoU >= 0.3) is scored under the bundle's threshold: is
the detector unsure (its score s) or the verifier (p = combined ** 2 / s)? (issue 17, session 25; offline,
2 threads). Per class: how many, and the median s and p of those candidates, against the median s and p of the parts
counted right."""
import sys
from pathlib import Path

import numpy as np
import torch

from loupe_dl_detect.data import load, scan
from loupe_dl_detect.model import Detector, iou_matrix

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
from scenes import bundle_scenes  # noqa: E402

torch.set_num_threads(2)
for bpath in sys.argv[1:]:
    sc = bundle_scenes(bpath)
    v = sc.meta["verifier"]
    thr = v["out_of_fold"].get("threshold", v["min_score"])
    full, alone = Detector(sc.bundle, threads=2), Detector(sc.bundle, threads=2, verify=False)
    names = sc.classes
    rec = {c: {"under": [], "right": []} for c in names}
    for sub in ("bench", "dev", "dev2"):
        for s in scan(Path("/tmp/h17s15") / sub, classes=names).test:
            rgb, gb, gl = load(s)
            bgr = np.ascontiguousarray(rgb[:, :, ::-1])
            d = full.predict(bgr, min_score=0.1)
            a = alone.predict(bgr, min_score=0.1)
            if not len(d.boxes) or not len(gb):
                continue
            iou = iou_matrix(gb, d.boxes)
            same = iou_matrix(d.boxes, a.boxes) if len(a.boxes) else np.zeros((len(d.boxes), 0))
            for i, c in enumerate(gl):
                m = np.flatnonzero(iou[i] >= 0.3)
                if not len(m) or not same.shape[1]:
                    continue
                j = m[np.argmax(d.scores[m])]
                k = int(np.argmax(same[j]))        # the same box among the detector's own candidates
                if same[j, k] < 0.99:
                    continue
                s_det, comb = float(a.scores[k]), float(d.scores[j])
                key = "right" if comb >= thr and d.labels[j] == c else "under" if comb < thr else None
                if key:
                    rec[names[c]][key].append((s_det, comb ** 2 / s_det))
    print(f"{Path(bpath).name:4s} thr {thr:.3f}", flush=True)
    for c in names:
        u, r = np.array(rec[c]["under"]).reshape(-1, 2), np.array(rec[c]["right"]).reshape(-1, 2)
        med = lambda x: np.round(np.median(x, 0), 3).tolist() if len(x) else "-"  # noqa: E731
        print(f"  {c:8s} under {len(u)}: median (s, p) {med(u)}; right {len(r)}: {med(r)}"
              + (f"; under with s < {thr ** 2:.3f}/p: detector {int((u[:, 0] < u[:, 1]).sum())}, verifier "
                 f"{int((u[:, 0] >= u[:, 1]).sum())} (the lower of s and p)" if len(u) else ""), flush=True)
