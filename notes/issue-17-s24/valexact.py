"""valexact.py BUNDLE...: the product's threshold rule (count balance on the 8 held-out scenes' views and shifted
views) against the most-exact-views rule (``choose_threshold``) on the same scores, at no extra fit (issue 17,
session 24; offline). Per bundle: the first verifier fit exactly as the product does it (shift.py's), the held-out
scenes' views and the product's draw of shifted views (seed + 2), both rules' thresholds, and the bundle itself
(through the runtime, its own verifier) scored on the 300 scenes of test / dev / dev2 at each. 2 threads."""
import sys
from pathlib import Path

import numpy as np
import torch

from loupe_trainer.detect import verifier as V
from loupe_trainer.detect.trainer import choose_threshold, count_balance

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
from scenes import bundle_scenes, first_fit, capped, combined, shipped_accuracy  # noqa: E402

torch.set_num_threads(2)
for bpath in sys.argv[1:]:
    sc = bundle_scenes(bpath)
    seed, C = sc.seed, sc.n_cls
    net = first_fit(sc)
    srng = np.random.default_rng(seed + 2)
    views = [(img, bx, lab) for rgb, r, lab in sc.val for img, bx in V.views(rgb, r)]
    views += [(img, bx, lab) for rgb, r, lab in sc.val for img, bx in V.shifted_views(srng, rgb, r)]
    preds = combined(net, [capped(sc, img) for img, _bx, _lab in views])
    gts = [(bx, lab) for _img, bx, lab in views]
    thr = {"bal": count_balance(preds, gts)[0], "exact": choose_threshold(preds, gts, C)[0]}
    acc = shipped_accuracy(sc)
    best = max(acc, key=acc.get)
    own = sc.meta["verifier"]["min_score"]
    print(f"{Path(bpath).name:4s} own {own:.3f}:{acc.get(own, float('nan')):.3f} | "
          + " ".join(f"{r} {t:.3f}:{acc[t]:.3f}" for r, t in thr.items()) + f" | best {best:.3f}:{acc[best]:.3f}",
          flush=True)
