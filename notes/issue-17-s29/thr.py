"""thr.py BUNDLE...: with the shipped second look (band 0.3-1.4 placed around each threshold in turn, optionally
the doubt rule of band4.py at R), count accuracy at the bundle's threshold moved by -1..+3 grid steps (0.025), on the
cached looks of band4.py (SCENE_SETS as there) (issue 17, session 29)."""
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from band4 import cached, looked, near_mask  # noqa: E402

R = float(os.environ["DOUBT"]) if os.environ.get("DOUBT") else None


def exact_share(bl, t):
    preds, _n = looked(bl, lambda s, p: near_mask(s, p, t, doubt=R))
    return float(np.mean([(np.bincount(lab[sc >= t], minlength=bl.n_cls) == np.bincount(gl, minlength=bl.n_cls)).all()
                          for (_bx, sc, lab), gl in zip(preds, bl.gts)]))


for bpath in sys.argv[1:]:
    bl = cached(bpath)
    print(Path(bpath).name, f"thr {bl.thr:.3f}", " ".join(f"{k:+d}:{exact_share(bl, bl.thr + 0.025 * k):.3f}"
                                                         for k in range(-1, 4)), flush=True)
