"""Per-class thresholds on the combined score: how much could they add? Candidates at min_score 0.05 once per image."""
import sys, pickle, numpy as np
from host import Bundle
from loupe_dl_detect.model import Detector
from loupe_dl_detect.data import scan, load
names = ("bench", "dev", "dev2")
sets = {n: [load(s) for s in scan(f"/tmp/h17s15/{n}").test] for n in names}
out = {}
for bp in sys.argv[1:]:
    det = Detector(Bundle.load(bp), threads=1)
    rows = {n: [] for n in names}
    for n, items in sets.items():
        for rgb, gb, gl in items:
            d = det.predict(np.ascontiguousarray(rgb[:, :, ::-1]), min_score=0.05)
            rows[n].append((np.asarray(d.labels), np.asarray(d.scores), np.bincount(gl, minlength=4)))
    out[bp] = (det.min_score, rows)
    print(bp, "done", flush=True)
pickle.dump(out, open("/tmp/s16/pc/cands.pkl", "wb"))
