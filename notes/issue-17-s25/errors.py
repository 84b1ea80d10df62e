"""errors.py BUNDLE...: where the wrong counts are (issue 17, session 25; offline, 2 threads). The bundle as shipped
on the 300 test scenes at its own threshold (for the S bundles, which carried the reverted move, at their out-of-fold
threshold): the wrongly counted scenes split into too few only, too many only, and both; per class, the parts
missing and extra summed over the scenes."""
import sys
from pathlib import Path

import numpy as np
import torch

from loupe_dl_detect.model import Detector

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
from scenes import bundle_scenes, test_scenes  # noqa: E402

torch.set_num_threads(2)
tot = {"few": 0, "many": 0, "both": 0, "n": 0}
for bpath in sys.argv[1:]:
    sc = bundle_scenes(bpath)
    v = sc.meta["verifier"]
    thr = v["out_of_fold"]["threshold"] if "threshold" in v["out_of_fold"] else v["min_score"]
    full = Detector(sc.bundle, threads=2)
    C = sc.n_cls
    few = many = both = 0
    miss, extra = np.zeros(C, int), np.zeros(C, int)
    for rgb, gl in test_scenes(sc.classes):
        d = full.predict(rgb[:, :, ::-1], min_score=thr)
        diff = np.bincount(d.labels, minlength=C) - np.bincount(gl, minlength=C)
        miss += np.maximum(-diff, 0)
        extra += np.maximum(diff, 0)
        lo, hi = (diff < 0).any(), (diff > 0).any()
        few += lo and not hi
        many += hi and not lo
        both += lo and hi
    for k, x in zip(("few", "many", "both"), (few, many, both)):
        tot[k] += x
    tot["n"] += 300
    print(f"{Path(bpath).name:4s} thr {thr:.3f} wrong {few + many + both} of 300: too few {few}, too many {many}, "
          f"both {both} | missing {dict(zip(sc.classes, miss.tolist()))} extra {dict(zip(sc.classes, extra.tolist()))}",
          flush=True)
print("all:", tot)
