"""Ceiling of fixing the verifier on true parts: each true part's best candidate (IoU >= 0.3) gets the verifier's
probabilities one-hot on its true class (a perfect verifier on parts; clutter untouched), at the same augbal
threshold; also 'perfect on clutter' (candidates with IoU < 0.3 with every part get p[background] = 1)."""
import sys, pickle, numpy as np
sys.path.insert(0, "/tmp/h17t")
from ana import gts, acc_at
from loupe_dl_detect.model import iou_matrix
from loupe_dl_detect.verify import relabel
for path, t in zip(sys.argv[1::2], sys.argv[2::2]):
    t = float(t); res = pickle.load(open(path, "rb")); C = len(res["meta"]["classes"]); out = {}
    for mode in ("as is", "parts", "clutter", "both"):
        accs = []
        for g in ("test", "dev", "dev2"):
            preds = []
            for r in res[g]["base"]:
                cb, cs, cl = r["cand"]; gb, gl = r["gt"]
                if not len(cs):
                    preds.append((cb, cs, np.zeros(0, np.int64))); continue
                p = r["probs"].copy()
                iou = iou_matrix(gb, cb) if len(gb) else np.zeros((0, len(cb)))
                if mode in ("parts", "both"):
                    for j in range(len(gb)):
                        k = int(iou[j].argmax())
                        if iou[j, k] >= 0.3:
                            p[k] = 0; p[k, gl[j] + 1] = 1
                if mode in ("clutter", "both"):
                    far = (iou.max(0) if len(gb) else np.zeros(len(cb))) < 0.3
                    p[far] = 0; p[far, 0] = 1; p[far, 1] = 1e-9
                sc, lab = relabel(cs, p); preds.append((cb, sc, lab))
            accs.append(acc_at(preds, gts(res[g]["base"]), C, t))
        print(path.split("/")[-1], t, f"{mode:8s}", " / ".join(f"{a:.2f}" for a in accs), f"mean {np.mean(accs):.3f}")
