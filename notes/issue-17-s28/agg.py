"""agg.py BUNDLE...: how the second look's 8 probability vectors are combined (issue 17, session 28; 2 threads): the
mean (built), the geometric mean (renormalised), the median (renormalised); for the band 0.7-1.4 x the bundle's
threshold and for every candidate. Count accuracy on the 300 test scenes at the bundle's threshold."""
import sys
from pathlib import Path

import numpy as np
import torch

from loupe_dl_detect.verify import relabel

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
sys.path.insert(0, str(Path(__file__).parent))
from ens import bundle_looks  # noqa: E402
from scenes import acc_table  # noqa: E402

torch.set_num_threads(2)


def norm(p):
    return p / p.sum(-1, keepdims=True)


AGG = {"mean": lambda ps: np.mean(ps, 0),
       "gmean": lambda ps: norm(np.exp(np.mean(np.log(np.clip(ps, 1e-7, 1)), 0))),
       "median": lambda ps: norm(np.median(ps, 0))}


def main():
    for bpath in sys.argv[1:]:
        bl = bundle_looks(bpath)
        thr, n_cls, test, gts, looks = bl.thr, bl.n_cls, bl.test, bl.gts, bl.looks
        out = []
        for name, f in AGG.items():
            for lo, hi in ((0.7, 1.4), (0.0, 99.0)):
                preds = []
                for (bx, s, _cr, _g), ps in zip(test, looks):
                    if ps is None:
                        preds.append((bx, s.astype(np.float32), np.zeros(0, np.int64)))
                        continue
                    c, _l = relabel(s, ps[0])
                    near = (c >= thr * lo) & (c <= thr * hi) & (s >= thr ** 2)
                    preds.append((bx, *relabel(s, np.where(near[:, None], f(ps), ps[0]))))
                out.append(f"{name} {lo:g}-{hi:g}: {acc_table(preds, gts, n_cls)[thr]:.3f}")
        print(f"{Path(bpath).name}: " + " | ".join(out), flush=True)


main()
