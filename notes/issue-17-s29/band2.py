"""band2.py BUNDLE...: session 28's band.py for the 8 looks only, on a finer, asymmetric grid of bands (issue 17,
session 29; 2 threads). Per band: count accuracy at the bundle's threshold on the 300 test scenes, and the extra
crops per frame (mean, median, 90th percentile over the frames)."""
import sys
from pathlib import Path

import numpy as np

from loupe_dl_detect.verify import relabel

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s28"))
from ens import bundle_looks  # noqa: E402
from scenes import acc_table  # noqa: E402

LOS = [float(x) for x in __import__("os").environ.get("LOS", "0.4 0.5 0.55 0.6 0.65 0.7").split()]
HIS = [float(x) for x in __import__("os").environ.get("HIS", "1.4 1.6 2.0 9.0").split()]


def main():
    for bpath in sys.argv[1:]:
        bl = bundle_looks(bpath)
        thr, test, looks = bl.thr, bl.test, bl.looks
        name = Path(bpath).name
        one = [(bx, *relabel(s, ps[0])) if len(s) else (bx, s.astype(np.float32), np.zeros(0, np.int64))
               for (bx, s, _cr, _g), ps in zip(test, looks)]
        print(f"{name} one look: test {acc_table(one, bl.gts, bl.n_cls)[thr]:.3f}", flush=True)
        for lo in LOS:
            for hi in HIS:
                preds, extra = [], []
                for (bx, s, _cr, _g), ps in zip(test, looks):
                    if not len(s):
                        preds.append((bx, s.astype(np.float32), np.zeros(0, np.int64)))
                        extra.append(0)
                        continue
                    p = ps[0].copy()
                    c, _l = relabel(s, p)
                    near = (c >= thr * lo) & (c <= thr * hi) & (s >= thr ** 2)
                    p[near] = ps[:, near].mean(0)
                    extra.append(int(near.sum()) * 7)
                    preds.append((bx, *relabel(s, p)))
                acc = acc_table(preds, bl.gts, bl.n_cls)
                print(f"{name} d8 band {lo:.2f}-{hi:.2f}: test {acc[thr]:.3f} extra crops/frame {np.mean(extra):.2f} "
                      f"median {np.median(extra):.0f} p90 {np.percentile(extra, 90):.0f}", flush=True)


main()
