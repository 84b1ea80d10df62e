"""oracle.py BUNDLE...: with the second look (8 looks, band 0.7-1.4 x the threshold, placed around each threshold in
turn), count accuracy on the 300 test scenes at every threshold of the trainer's grid: how far the bundle's own
threshold (placed out of fold on one look) is from the best (issue 17, session 28; 2 threads)."""
import sys
import time
from pathlib import Path

import numpy as np
import torch

from loupe_dl_detect.verify import relabel
from loupe_trainer.detect import verifier as V
from loupe_trainer.detect.trainer import THRESHOLDS

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
sys.path.insert(0, str(Path(__file__).parent))
from ens import bundle_looks  # noqa: E402

torch.set_num_threads(2)
LO, HI = V.SECOND_LOOK_BAND


def main():
    for bpath in sys.argv[1:]:
        t0 = time.perf_counter()
        bl = bundle_looks(bpath)
        thr, n_cls, test, looks = bl.thr, bl.n_cls, bl.test, bl.looks
        acc = {}
        for t in THRESHOLDS:
            exact = []
            for (_bx, s, _cr, gl), ps in zip(test, looks):
                if ps is None:
                    exact.append(len(gl) == 0)
                    continue
                c, _l = relabel(s, ps[0])
                near = (c >= t * LO) & (c <= t * HI) & (s >= t ** 2)
                p = np.where(near[:, None], np.mean(ps, 0), ps[0])
                sc, lab = relabel(s, p)
                exact.append((np.bincount(lab[sc >= t], minlength=n_cls) == np.bincount(gl, minlength=n_cls)).all())
            acc[t] = float(np.mean(exact))
        best = max(acc, key=acc.get)
        print(f"{Path(bpath).name}: thr {thr:.3f} test {acc[thr]:.3f} | best {best:.3f}:{acc[best]:.3f} | "
              + " ".join(f"{k:.3f}:{x:.3f}" for k, x in acc.items() if 0.3 <= k <= 0.55)
              + f" | {time.perf_counter() - t0:.0f}s", flush=True)


main()
