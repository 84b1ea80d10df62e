"""band4.py BUNDLE...: the second look also for confident candidates whose class is in doubt (issue 17, session 29;
2 threads). Above the band (combined score > HI x thr) a candidate gets the 8 looks too when its second-best part
class has at least R x the best one's probability; below, the band 0.3-1.4 as shipped. Looks are cached under
/tmp/s29/looks/<SCENE_SETS>/ (pickles of ens.bundle_looks)."""
import os
import pickle
import sys
from pathlib import Path

import numpy as np

from loupe_dl_detect.verify import relabel

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s28"))
from ens import bundle_looks  # noqa: E402
from scenes import acc_table  # noqa: E402

LO, HI = 0.3, 1.4
RS = [None, 0.05, 0.1, 0.2, 0.3, 0.5]


def cached(bpath):
    cache = Path("/tmp/s29/looks") / os.environ.get("SCENE_SETS", "test").replace(" ", "_") / Path(bpath).name
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    bl = bundle_looks(bpath)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(bl))
    return bl


def main():
    for bpath in sys.argv[1:]:
        bl = cached(bpath)
        thr, name = bl.thr, Path(bpath).name
        for r in RS:
            preds, extra = [], []
            for (bx, s, _cr, _g), ps in zip(bl.test, bl.looks):
                if not len(s):
                    preds.append((bx, s.astype(np.float32), np.zeros(0, np.int64)))
                    extra.append(0)
                    continue
                p = ps[0].copy()
                c, _l = relabel(s, p)
                near = (c >= thr * LO) & (c <= thr * HI) & (s >= thr ** 2)
                if r is not None:
                    parts = np.sort(p[:, 1:], 1)   # column 0 is the background
                    near |= (c > thr * HI) & (parts[:, -2] >= r * parts[:, -1])
                p[near] = ps[:, near].mean(0)
                extra.append(int(near.sum()) * 7)
                preds.append((bx, *relabel(s, p)))
            acc = acc_table(preds, bl.gts, bl.n_cls)
            print(f"{name} doubt {r}: test {acc[thr]:.3f} extra crops/frame {np.mean(extra):.2f} "
                  f"median {np.median(extra):.0f} p90 {np.percentile(extra, 90):.0f}", flush=True)


if __name__ == "__main__":
    main()
