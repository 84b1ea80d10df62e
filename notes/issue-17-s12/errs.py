import sys, pickle, numpy as np
from loupe_dl_detect.model import iou_matrix
from loupe_dl_detect.verify import relabel
res = pickle.load(open(sys.argv[1], "rb"))
for thr in map(float, sys.argv[2:]):
    wrong = miss = extra = swap = 0
    C = len(res["meta"]["classes"])
    for g in ("test", "dev", "dev2"):
        for r in res[g]["base"]:
            gb, gl = r["gt"]; cb, cs, cl = r["cand"]
            comb, lab = relabel(cs, r["probs"]) if len(cs) else (cs, cl)
            k = comb >= thr; pb, pl, ps = cb[k], lab[k], comb[k]
            wrong += not (np.bincount(pl, minlength=C) == np.bincount(gl, minlength=C)).all()
            used = np.zeros(len(gb), bool)
            for i in np.argsort(-ps):
                iou = iou_matrix(pb[i:i+1], gb)[0] if len(gb) else np.zeros(0)
                iou[used] = 0
                if len(iou) and iou.max() >= 0.3:
                    j = int(iou.argmax()); used[j] = True; swap += pl[i] != gl[j]
                else:
                    extra += 1
            miss += int((~used).sum())
    print(f"thr {thr}: wrong images {wrong} / 300, missed {miss}, extras {extra}, swaps {swap}")
