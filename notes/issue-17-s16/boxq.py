"""boxq.py RUN...: the detector's box quality per class (verifier off, candidates at score >= 0.1): for each true part
the best IoU of a candidate whose centre lies in the part's box (the peak of that part); median IoU, share < 0.5,
median |centre error| / short side and predicted / true short side, on test + dev + dev2 (300 images)."""
import sys, numpy as np
from host import Bundle
from loupe_dl_detect.model import Detector, iou_matrix
from loupe_dl_detect.data import scan, load
sets = {n: [load(s) for s in scan(f"/tmp/h17s15/{n}").test] for n in ("bench", "dev", "dev2")}
names = ["screw", "nut", "washer", "bracket"]
for bp in sys.argv[1:]:
    det = Detector(Bundle.load(bp), threads=1, verify=False)
    rec = {c: [] for c in range(4)}
    for items in sets.values():
        for rgb, gb, gl in items:
            d = det.predict(np.ascontiguousarray(rgb[:, :, ::-1]), min_score=0.1)
            if not len(gb): continue
            iou = iou_matrix(d.boxes, gb) if len(d) else np.zeros((0, len(gb)))
            for j in range(len(gb)):
                if not len(d): rec[gl[j]].append((0, np.nan, np.nan)); continue
                i = int(np.argmax(iou[:, j]))
                p, t = d.boxes[i], gb[j]
                tw, th = t[2] - t[0], t[3] - t[1]; pw, ph = p[2] - p[0], p[3] - p[1]
                short = min(tw, th); ax = 0 if tw <= th else 1      # the axis across the part
                ce = abs(((p[ax] + p[ax + 2]) - (t[ax] + t[ax + 2])) / 2) / short
                ratio = (pw if ax == 0 else ph) / short
                rec[gl[j]].append((iou[i, j], ce, ratio))
    out = []
    for c in range(4):
        a = np.array(rec[c], float)
        out.append(f"{names[c]} n{len(a)} IoU {np.median(a[:, 0]):.3f} <0.5 {np.mean(a[:, 0] < 0.5):.3f} "
                   f"ctr {np.nanmedian(a[:, 1]):.3f} short {np.nanmedian(a[:, 2]):.3f}")
    allx = np.concatenate([np.array(rec[c], float) for c in range(4)])
    print(bp, f"all IoU {np.median(allx[:, 0]):.3f} mean {allx[:, 0].mean():.3f}; " + "; ".join(out), flush=True)
