"""Error analysis of a cached bundle (cache.py): per class misses / extras / swaps with the verifier at the bundle's
threshold, and the box geometry of each true part's best candidate (found vs missed)."""
import sys, pickle, numpy as np
from loupe_dl_detect.model import iou_matrix
from loupe_dl_detect.verify import relabel
CL = ("screw", "nut", "washer", "bracket")
for path in sys.argv[1:]:
    res = pickle.load(open(path, "rb")); thr = res["meta"]["ver_thr"]
    print(path, "thr", thr)
    miss = np.zeros(4, int); extra = np.zeros(4, int); swap = np.zeros(4, int); wrong = 0; n = 0
    geo = {"found": [], "missed": []}
    for g in ("test", "dev", "dev2"):
        for r in res[g]["base"]:
            gb, gl = r["gt"]; cb, cs, cl = r["cand"]
            comb, lab = (relabel(cs, r["probs"]) if len(cs) else (cs, cl))
            keep = comb >= thr
            kb, kl, ks = cb[keep], lab[keep], comb[keep]
            pc = np.bincount(kl, minlength=4); gc = np.bincount(gl, minlength=4)
            wrong += int((pc != gc).any()); n += 1
            # greedy match kept -> truth at IoU>=0.3 by score
            used = set()
            iou = iou_matrix(kb, gb) if len(kb) and len(gb) else np.zeros((len(kb), len(gb)))
            for i in np.argsort(-ks):
                if not len(gb): extra[kl[i]] += 1; continue
                cand = [j for j in np.argsort(-iou[i]) if iou[i, j] >= 0.3 and j not in used]
                if not cand: extra[kl[i]] += 1; continue
                j = cand[0]; used.add(j)
                if kl[i] != gl[j]: swap[gl[j]] += 1
            for j in range(len(gb)):
                if j not in used: miss[gl[j]] += 1
            # geometry of best candidate per truth
            if len(cb) and len(gb):
                ia = iou_matrix(gb, cb)
                for j in range(len(gb)):
                    k = int(ia[j].argmax())
                    if ia[j, k] < 0.3: continue
                    t = gb[j]; c = cb[k]
                    tw, th = t[2] - t[0], t[3] - t[1]; cw, ch = c[2] - c[0], c[3] - c[1]
                    long_ = max(tw, th); short = min(tw, th)
                    dx = ((c[0] + c[2]) - (t[0] + t[2])) / 2; dy = ((c[1] + c[3]) - (t[1] + t[3])) / 2
                    dl, ds = (dx, dy) if tw >= th else (dy, dx)
                    rl, rs = ((cw / tw, ch / th) if tw >= th else (ch / th, cw / tw))
                    f = (gl[j], ia[j, k], long_ / max(short, 1), abs(dl) / long_, abs(ds) / max(short, 1), rl, rs, cs[k], r["probs"][k, 0])
                    geo["found" if j in used else "missed"].append(f)
    print(f"  wrong images {wrong}/{n}; per class screw/nut/washer/bracket: missed {miss.tolist()} extras {extra.tolist()} swaps(true class) {swap.tolist()}")
    for key, v in geo.items():
        a = np.array(v)
        for c in range(4):
            b = a[a[:, 0] == c]
            if not len(b): continue
            print(f"  {key:6s} {CL[c]:7s} n={len(b):4d} IoU med {np.median(b[:,1]):.2f} aspect med {np.median(b[:,2]):.2f} "
                  f"|dcentre| long/len {np.median(b[:,3]):.3f} short/width {np.median(b[:,4]):.3f} "
                  f"size ratio long {np.median(b[:,5]):.2f} (p10 {np.percentile(b[:,5],10):.2f}) short {np.median(b[:,6]):.2f} (p90 {np.percentile(b[:,6],90):.2f}) det s {np.median(b[:,7]):.2f} pbg {np.median(b[:,8]):.2f}")
