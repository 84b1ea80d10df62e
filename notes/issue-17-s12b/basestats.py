"""refit.py's miss / extra counts for the cached (product) verifier probabilities, at the augbal threshold."""
import sys, pickle, numpy as np
from loupe_dl_detect.model import iou_matrix
from loupe_dl_detect.verify import relabel
for path, t in zip(sys.argv[1::2], sys.argv[2::2]):
    t = float(t); res = pickle.load(open(path, "rb")); rej = extra = 0
    for g in ("test", "dev", "dev2"):
        for r in res[g]["base"]:
            cb, cs, cl = r["cand"]; gb, gl = r["gt"]
            if not len(cb):
                continue
            sc, lab = relabel(cs, r["probs"]); q = r["probs"][:, 0]
            iou = iou_matrix(gb, cb) if len(gb) else np.zeros((0, len(cb)))
            for j in range(len(gb)):
                k = int(iou[j].argmax()); rej += bool(iou[j, k] >= 0.3 and sc[k] < t and q[k] > 0.5)
            extra += int(((sc >= t) & ((iou.max(0) if len(gb) else np.zeros(len(cb))) < 0.3)).sum())
    print(path, t, f"rejected-as-background {rej} extras {extra}")
