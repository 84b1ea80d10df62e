"""thr.py BUNDLE...: with the shipped second look (band 0.3-1.4 placed around each threshold in turn, optionally
the doubt rule of band4.py at R), count accuracy at the bundle's threshold moved by -1..+3 grid steps (0.025), on the
cached looks of band4.py (SCENE_SETS as there) (issue 17, session 29)."""
import os
import sys
from pathlib import Path

import numpy as np

from loupe_dl_detect.verify import relabel

sys.path.insert(0, str(Path(__file__).parent))
from band4 import cached  # noqa: E402

LO, HI = 0.3, 1.4
R = float(os.environ["DOUBT"]) if os.environ.get("DOUBT") else None


def exact_share(bl, t):
    exact = []
    for (_bx, s, _cr, gl), ps in zip(bl.test, bl.looks):
        if ps is None:
            exact.append(len(gl) == 0)
            continue
        p = ps[0].copy()
        c, _l = relabel(s, p)
        near = (c >= t * LO) & (c <= t * HI) & (s >= t ** 2)
        if R is not None:
            parts = np.sort(p[:, 1:], 1)
            near |= (c > t * HI) & (parts[:, -2] >= R * parts[:, -1])
        p[near] = ps[:, near].mean(0)
        sc, lab = relabel(s, p)
        exact.append((np.bincount(lab[sc >= t], minlength=bl.n_cls) == np.bincount(gl, minlength=bl.n_cls)).all())
    return float(np.mean(exact))


for bpath in sys.argv[1:]:
    bl = cached(bpath)
    print(Path(bpath).name, f"thr {bl.thr:.3f}", " ".join(f"{k:+d}:{exact_share(bl, bl.thr + 0.025 * k):.3f}"
                                                         for k in range(-1, 4)), flush=True)
