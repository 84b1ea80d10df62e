import sys, pickle, numpy as np
from loupe_dl_detect.model import iou_matrix
from loupe_dl_detect.verify import relabel
res = pickle.load(open(sys.argv[1], "rb")); v = sys.argv[2] if len(sys.argv) > 2 else "base"
thr = float(sys.argv[3]) if len(sys.argv) > 3 else res["meta"]["ver_thr"]
C = len(res["meta"]["classes"])
cats = {}
for g in ("test", "dev", "dev2"):
    for r in res[g][v]:
        gb, gl = r["gt"]; db, ds, dl = r["det"]; cb, cs, cl = r["cand"]
        comb, lab = relabel(cs, r["probs"]) if len(cs) else (cs, cl)
        for j in range(len(gb)):
            iod = iou_matrix(gb[j:j+1], db)[0] if len(db) else np.zeros(0)
            ioc = iou_matrix(gb[j:j+1], cb)[0] if len(cb) else np.zeros(0)
            if len(ioc) and ioc.max() >= 0.3:
                k = int(ioc.argmax())
                if comb[k] >= thr:
                    key = "found" if lab[k] == gl[j] else "found_wrongclass"
                else:
                    pc = r["probs"][k, 1:].max()
                    key = "cand_low:" + ("s<0.3" if cs[k] < 0.3 else "s0.3-0.5" if cs[k] < 0.5 else "s>=0.5") + \
                          ("/pbg>0.5" if r["probs"][k, 0] > 0.5 else "/pbg<=0.5")
            elif len(iod) and iod.max() >= 0.3:
                key = "det<0.1_or_cap" + (" (s>=0.1)" if ds[int(iod.argmax())] >= 0.1 else "")
            else:
                key = "no_peak"
            cats[key] = cats.get(key, 0) + 1
for k in sorted(cats): print(f"{k:30s} {cats[k]}")
