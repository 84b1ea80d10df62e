"""Per-class misses / extras / swaps of bundles at their own operating threshold (Detector.predict, verifier on) on
test / dev / dev2 (greedy match by score at IoU >= 0.3, any class)."""
import sys, numpy as np
from host import Bundle
from loupe_dl_detect.model import Detector, iou_matrix
from loupe_dl_detect.data import scan, load
sets = {n: [load(s) for s in scan(f"/tmp/h17s15/{n}").test] for n in ("bench", "dev", "dev2")}
for bp in sys.argv[1:]:
    det = Detector(Bundle.load(bp), threads=1)
    miss = np.zeros(4, int); extra = np.zeros(4, int); swap = np.zeros(4, int); wrong = 0
    for name, items in sets.items():
        for rgb, gb, gl in items:
            d = det.predict(np.ascontiguousarray(rgb[:, :, ::-1]))
            wrong += int((np.bincount(d.labels, minlength=4) != np.bincount(gl, minlength=4)).any())
            iou = iou_matrix(d.boxes, gb) if len(d) and len(gb) else np.zeros((len(d), len(gb)))
            used = set()
            for i in np.argsort(-d.scores):
                c = [j for j in np.argsort(-iou[i]) if iou[i, j] >= 0.3 and j not in used] if len(gb) else []
                if not c: extra[d.labels[i]] += 1; continue
                used.add(c[0]); swap[gl[c[0]]] += int(d.labels[i] != gl[c[0]])
            for j in range(len(gb)):
                if j not in used: miss[gl[j]] += 1
    print(bp, f"thr {det.min_score} wrong images {wrong}/300; screw/nut/washer/bracket missed {miss.tolist()} "
          f"extras {extra.tolist()} swaps {swap.tolist()}", flush=True)
