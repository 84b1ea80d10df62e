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


def near_mask(s, p, t, lo=LO, hi=HI, doubt=None):
    """The runtime's rule (``BoxVerifier.rescore``) on one-look probabilities ``p`` at threshold ``t``: the
    candidates whose combined score lies within [lo, hi] x t, or above it with the second part class at >= doubt x
    the first's p, and whose detector score ``s`` could reach t."""
    c, _l = relabel(s, p)
    near = c <= hi * t
    if doubt is not None:
        parts = np.sort(p[:, 1:], 1)   # column 0 is the background
        near |= parts[:, -2] >= doubt * parts[:, -1]
    return near & (c >= lo * t) & (s >= t ** 2)


def looked(bl, near_of, more=None):
    """Per test scene of ``bl`` (``cached``): the predictions when the candidates ``near_of(s, p)`` (p their one-look
    probabilities) get the mean over their 8 looks, and over ``more(i, near)``'s further looks of scene i ([k,
    n_near, K + 1] arrays) too; and the number of such candidates per scene."""
    preds, n_near = [], []
    for i, ((bx, s, _cr, _g), ps) in enumerate(zip(bl.test, bl.looks)):
        if not len(s):
            preds.append((bx, s.astype(np.float32), np.zeros(0, np.int64)))
            n_near.append(0)
            continue
        p = ps[0].copy()
        near = near_of(s, p)
        p[near] = np.concatenate([ps[:, near]] + (more(i, near) if more else [])).mean(0)
        n_near.append(int(near.sum()))
        preds.append((bx, *relabel(s, p)))
    return preds, n_near


def line(name, tag, acc, extra):
    """One result line: count accuracy at the bundle's threshold, the extra crops per frame (mean, median, p90)."""
    print(f"{name} {tag}: test {acc:.3f} extra crops/frame {np.mean(extra):.2f} median {np.median(extra):.0f} "
          f"p90 {np.percentile(extra, 90):.0f}", flush=True)


def main():
    for bpath in sys.argv[1:]:
        bl = cached(bpath)
        thr, name = bl.thr, Path(bpath).name
        for r in RS:
            preds, n_near = looked(bl, lambda s, p: near_mask(s, p, thr, doubt=r))
            line(name, f"doubt {r}", acc_table(preds, bl.gts, bl.n_cls)[thr], 7 * np.array(n_near))


if __name__ == "__main__":
    main()
