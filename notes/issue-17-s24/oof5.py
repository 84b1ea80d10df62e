"""oof5.py BUNDLE...: the operating threshold from five-fold out-of-fold verifier scores of all 40 training scenes,
each fold's verifier fitted on 32 scenes as the product's first fit is (issue 17, session 24; offline).

Session 23's oof.py measured K = 2 / 4 on one bundle (W0), the balance rule only. Here, per bundle (its detector kept):
- val8 bal: the product's rule (V32 on its 8 held-out scenes, views + shifted views, count balance);
- oof5 bal / oof5 exact: five disjoint folds of 8 scenes, each scored by the verifier fitted on the other 32
  (views + shifted views of all 40 scenes), then count balance, or the most exact views (``choose_threshold``);
- val8 exact: the product's 8 held-out scenes, most exact views.
Each threshold is scored with V40 (the refit, as the product ships it) on the 300 scenes of test / dev / dev2;
also the best threshold (an oracle). 2 threads."""
import sys
import time
from pathlib import Path

import numpy as np
import torch

from loupe_trainer.detect import verifier as V
from loupe_trainer.detect.trainer import choose_threshold, count_balance

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
from scenes import acc_table, all_scene_crops, bundle_scenes, capped, combined, scored, test_scenes  # noqa: E402

torch.set_num_threads(2)
K = 5


for bpath in sys.argv[1:]:
    t0 = time.perf_counter()
    sc = bundle_scenes(bpath)
    seed, C = sc.seed, sc.n_cls
    a = all_scene_crops(sc)
    n, crops, labels, owner, ev, s4 = a.n, a.crops, a.labels, a.owner, a.ev, a.s4

    def fit_on(scenes):
        m = np.isin(owner, scenes)
        return V.fit_verifier(crops[m], labels[m], C, len(scenes), 2, seed, maps=s4[torch.from_numpy(m)])[0]

    v32 = fit_on(list(range(32)))
    v40 = fit_on(list(range(n)))
    p8, g8 = scored(v32, ev, range(32, n))
    thr = {"val8bal": count_balance(p8, g8)[0], "val8exact": choose_threshold(p8, g8, C)[0]}
    perm = np.random.default_rng(seed + 7).permutation(n)
    preds, gts = [], []
    for f in range(K):
        out = sorted(perm[f::K])
        pp, gg = scored(fit_on([i for i in range(n) if i not in out]), out)
        preds += pp
        gts += gg
    thr["oof5bal"] = count_balance(preds, gts)[0]
    thr["oof5exact"] = choose_threshold(preds, gts, C)[0]
    test = test_scenes(sc.classes)
    tab = acc_table(combined(v40, [capped(sc, rgb) for rgb, _gl in test]), [gl for _rgb, gl in test], C)
    best = max(tab, key=tab.get)
    print(f"{Path(bpath).name:4s} own {sc.meta['verifier']['min_score']:.3f} | "
          + " ".join(f"{r} {t:.3f}:{tab[t]:.3f}" for r, t in thr.items())
          + f" | best {best:.3f}:{tab[best]:.3f} | {time.perf_counter() - t0:.0f}s", flush=True)
