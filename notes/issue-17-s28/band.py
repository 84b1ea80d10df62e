"""band.py BUNDLE...: a second look for the candidates near the threshold, offline (issue 17, session 28; 2 threads).
The shipped verifier scores each test candidate's crop (the runtime's candidates: 0.1, the cap); a candidate whose
combined score sqrt(s * p[c]) lies within [thr * LO, thr * HI] of the bundle's threshold is scored again on more
looks of its crop (the mirror image; or also the quarter turns), and its p becomes the mean over its looks. Count
accuracy on the 300 test scenes at the bundle's threshold, and the extra crops per frame (only candidates the runtime
verifies, detector score >= thr ** 2, can be in a band). ``all``: every candidate gets the looks (``ens.py``'s tta)."""
import sys
import time
from pathlib import Path

import numpy as np
import torch

from loupe_dl_detect.verify import relabel

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
sys.path.insert(0, str(Path(__file__).parent))
from ens import bundle_looks  # noqa: E402
from scenes import acc_table  # noqa: E402

torch.set_num_threads(2)
LOOKS = {"m": [0, 4], "r4": [0, 1, 2, 3], "d4": [0, 2, 4, 6], "d8": list(range(8))}
BANDS = [(0.0, 9.0), (0.5, 2.0), (0.6, 1.6), (0.7, 1.4), (0.8, 1.25), (0.9, 1.1)]


def main():
    for bpath in sys.argv[1:]:
        t0 = time.perf_counter()
        bl = bundle_looks(bpath)
        thr, n_cls, test, gts, looks = bl.thr, bl.n_cls, bl.test, bl.gts, bl.looks
        name = Path(bpath).name
        print(f"{name}: thr {thr:.3f}, {time.perf_counter() - t0:.0f}s; verified per frame "
              f"{np.mean([(s >= thr ** 2).sum() for _b, s, _c, _g in test]):.2f}", flush=True)
        for lk, ks in LOOKS.items():
            for lo, hi in BANDS:
                preds, extra = [], 0
                for (bx, s, _cr, _g), ps in zip(test, looks):
                    if not len(s):
                        preds.append((bx, s.astype(np.float32), np.zeros(0, np.int64)))
                        continue
                    p = ps[0].copy()
                    c, _l = relabel(s, p)
                    near = (c >= thr * lo) & (c <= thr * hi) & (s >= thr ** 2)
                    p[near] = np.mean([ps[k][near] for k in ks], 0)
                    extra += int(near.sum()) * (len(ks) - 1)
                    preds.append((bx, *relabel(s, p)))
                acc = acc_table(preds, gts, n_cls)
                print(f"{name} {lk} band {lo:.2f}-{hi:.2f}: test {acc[thr]:.3f} extra crops/frame "
                      f"{extra / len(test):.2f}", flush=True)


main()
