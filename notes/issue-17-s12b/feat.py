"""What differs between parts the verifier rejects (p[bg] > 0.5) and parts found: size, class, border distance,
candidate IoU with the true box, detector score; at the augbal threshold of each cache (h17t's cache.py)."""
import sys, pickle, numpy as np
from loupe_dl_detect.model import iou_matrix
from loupe_dl_detect.verify import relabel
thr_of = {"B0": 0.425, "B1": 0.5, "B2": 0.45}
for path in sys.argv[1:]:
    res = pickle.load(open(path, "rb")); name = path.split("/")[-1][:2]; thr = thr_of[name]
    rows = {"found": [], "rej_bg": [], "low_s": []}
    for g in ("test", "dev", "dev2"):
        for r in res[g]["base"]:
            gb, gl = r["gt"]; cb, cs, cl = r["cand"]
            if not len(cb): continue
            comb, lab = relabel(cs, r["probs"])
            W = 320
            iou = iou_matrix(gb, cb)
            for j in range(len(gb)):
                k = int(iou[j].argmax())
                if iou[j, k] < 0.3: continue
                b = gb[j]; side = max(b[2] - b[0], b[3] - b[1]); border = min(b[0], b[1], W - b[2], H - b[3]) if (H := 320) else 0
                f = (side, int(gl[j]), border, iou[j, k], cs[k], r["probs"][k, 0], (b[2]-b[0])/(b[3]-b[1]+1e-6))
                if comb[k] >= thr and lab[k] == gl[j]: rows["found"].append(f)
                elif comb[k] < thr and r["probs"][k, 0] > 0.5: rows["rej_bg"].append(f)
                elif comb[k] < thr: rows["low_s"].append(f)
    print(name, "thr", thr)
    for key, v in rows.items():
        a = np.array(v)
        if not len(a): continue
        cls = np.bincount(a[:, 1].astype(int), minlength=4)
        print(f"  {key:7s} n={len(a):4d} side med {np.median(a[:,0]):5.1f} (p10 {np.percentile(a[:,0],10):5.1f}) "
              f"border<8px {np.mean(a[:,2]<8):.2f} candIoU med {np.median(a[:,3]):.2f} (<0.5: {np.mean(a[:,3]<0.5):.2f}) "
              f"s med {np.median(a[:,4]):.2f} pbg med {np.median(a[:,5]):.2f} aspect>2|<.5 {np.mean((a[:,6]>2)|(a[:,6]<0.5)):.2f} class {cls.tolist()}")
