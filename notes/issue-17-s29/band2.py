"""band2.py BUNDLE...: session 28's band.py for the 8 looks only, on a finer, asymmetric grid of bands (issue 17,
session 29; 2 threads). Per band: count accuracy at the bundle's threshold on the 300 test scenes, and the extra
crops per frame (mean, median, 90th percentile over the frames). The looks are band4.py's cache."""
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
sys.path.insert(0, str(Path(__file__).parent))
from band4 import cached, line, looked, near_mask  # noqa: E402
from scenes import acc_table  # noqa: E402

LOS = [float(x) for x in os.environ.get("LOS", "0.4 0.5 0.55 0.6 0.65 0.7").split()]
HIS = [float(x) for x in os.environ.get("HIS", "1.4 1.6 2.0 9.0").split()]


def main():
    for bpath in sys.argv[1:]:
        bl = cached(bpath)
        thr, name = bl.thr, Path(bpath).name
        preds, _n = looked(bl, lambda s, p: np.zeros(len(s), bool))
        print(f"{name} one look: test {acc_table(preds, bl.gts, bl.n_cls)[thr]:.3f}", flush=True)
        for lo in LOS:
            for hi in HIS:
                preds, n_near = looked(bl, lambda s, p: near_mask(s, p, thr, lo, hi))
                line(name, f"d8 band {lo:.2f}-{hi:.2f}", acc_table(preds, bl.gts, bl.n_cls)[thr], 7 * np.array(n_near))


main()
