"""oof5p.py BUNDLE...: oof5.py's five-fold out-of-fold threshold with cheap fold verifiers: the linear probe alone
(``fit_verifier(..., epochs=0)``: no fine-tuning, seconds each), on the stage4 maps computed once (issue 17,
session 24; offline). Does the probe's out-of-fold threshold place the fine-tuned verifier's? Each threshold is
scored with the bundle as shipped (its own verifier, through the runtime) on the 300 scenes of test / dev / dev2.
2 threads."""
import sys
import time
from pathlib import Path

import numpy as np
import torch

from loupe_trainer.detect import verifier as V
from loupe_trainer.detect.trainer import choose_threshold, count_balance

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
from scenes import all_scene_crops, bundle_scenes, scored, shipped_accuracy  # noqa: E402

torch.set_num_threads(2)
K = 5
for bpath in sys.argv[1:]:
    t0 = time.perf_counter()
    sc = bundle_scenes(bpath)
    seed, C = sc.seed, sc.n_cls
    a = all_scene_crops(sc)
    n, crops, labels, owner, ev, s4 = a.n, a.crops, a.labels, a.owner, a.ev, a.s4
    tprep = time.perf_counter() - t0
    perm = np.random.default_rng(seed + 7).permutation(n)
    preds, gts, tf = [], [], time.perf_counter()
    for f in range(K):
        out = sorted(perm[f::K])
        m = ~np.isin(owner, out)
        net = V.fit_verifier(crops[m], labels[m], C, n - len(out), 0, seed, maps=s4[torch.from_numpy(m)])[0]
        pp, gg = scored(net, ev, out)
        preds += pp
        gts += gg
    tfolds = time.perf_counter() - tf
    thr = {"oof5p-bal": count_balance(preds, gts)[0], "oof5p-exact": choose_threshold(preds, gts, C)[0]}
    acc = shipped_accuracy(sc)
    best = max(acc, key=acc.get)
    own = sc.meta["verifier"]["min_score"]
    print(f"{Path(bpath).name:4s} own {own:.3f}:{acc.get(own, float('nan')):.3f} | "
          + " ".join(f"{r} {t:.3f}:{acc[t]:.3f}" for r, t in thr.items()) + f" | best {best:.3f}:{acc[best]:.3f}"
          + f" | prep {tprep:.0f}s folds {tfolds:.0f}s total {time.perf_counter() - t0:.0f}s", flush=True)
