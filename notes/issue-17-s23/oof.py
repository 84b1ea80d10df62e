"""oof.py BUNDLE...: does a threshold placed on out-of-fold verifier scores of all 40 training scenes count better
than the product's, placed on the 8 held-out ones? (issue 17, session 23; offline, on a bundle's own detector.)

For each bundle (its detector, trained on all 40 scenes, is kept; only the verifier is refitted):
- crops of every training scene under its 8 views (the product's ``training_crops``: true boxes and jittered copies,
  the detector's candidates, random background), the frozen trunk's stage4 maps computed once;
- verifiers fitted as the product fits them (``fit_verifier``: probe, then 2 epochs of fine-tuning) on
  V32: the product's 32 training scenes; V40: all 40; and, for out-of-fold scores, on K folds of the 40;
- each verifier's combined scores on the scenes it did not see, under the product's views and shifted views
  (``views``, ``shifted_views``); the count-balance threshold (``count_balance``) on
  val8: V32 on the 8 held-out scenes (the product's rule); oofK: the K fold verifiers on all 40;
- count accuracy on the 300 scenes of test / dev / dev2 (runtime's rescoring: candidates at 0.1, the cap, gmean
  relabel) of V32 and V40 at those thresholds, and at the best threshold (an oracle).
Prints one line per bundle and arm; 2 threads (OMP_NUM_THREADS=2)."""
import sys
import time
from pathlib import Path

import numpy as np
import torch

from loupe_trainer.detect import verifier as V
from loupe_trainer.detect.trainer import count_balance

sys.path.insert(0, str(Path(__file__).parent))
from scenes import acc_table, all_scene_crops, bundle_scenes, capped, combined, scored, test_scenes  # noqa: E402

torch.set_num_threads(2)
FOLDS = [k for k in (int(k) for k in (sys.argv[1].split(",") if sys.argv[1][0].isdigit() else "2,4".split(","))) if k > 0]
BUNDLES = [a for a in sys.argv[1:] if not a[0].isdigit()]


for bpath in BUNDLES:
    t0 = time.perf_counter()
    sc = bundle_scenes(bpath)
    seed, C = sc.seed, sc.n_cls
    a = all_scene_crops(sc)                       # scene i < 32: the product's training scenes
    n, crops, labels, owner, ev, s4 = a.n, a.crops, a.labels, a.owner, a.ev, a.s4
    tprep = time.perf_counter() - t0

    def fit_on(scenes, tag):
        """The product's ``fit_verifier`` (2 epochs) on the crops of ``scenes``, from the stage4 maps computed once."""
        m = np.isin(owner, scenes)
        t = time.perf_counter()
        net, _acc = V.fit_verifier(crops[m], labels[m], C, len(scenes), 2, seed, maps=s4[torch.from_numpy(m)])
        fit_s[tag] = time.perf_counter() - t
        return net

    fit_s = {}
    v32 = fit_on(list(range(32)), "V32")
    v40 = fit_on(list(range(n)), "V40")
    thr = {"val8": count_balance(*scored(v32, ev, range(32, n)))[0]}
    for k in FOLDS:
        frng = np.random.default_rng(seed + 7)
        perm = frng.permutation(n)
        preds, gts = [], []
        for f in range(k):
            out = sorted(perm[f::k])
            net = fit_on([i for i in range(n) if i not in out], f"oof{k}.{f}")
            pp, gg = scored(net, ev, out)
            preds += pp
            gts += gg
        thr[f"oof{k}"], _err = count_balance(preds, gts)
    test = test_scenes(sc.classes)
    tc, tg = [capped(sc, rgb) for rgb, _gl in test], [gl for _rgb, gl in test]
    tab = {name: acc_table(combined(net, tc), tg, C) for name, net in (("V32", v32), ("V40", v40))}
    own = sc.meta["verifier"]["min_score"]
    line = [f"{Path(bpath).name:4s} own {own:.3f}"]
    for name in ("V32", "V40"):
        best = max(tab[name], key=tab[name].get)
        line.append(f"{name}: " + " ".join(f"{r} {t:.3f}:{tab[name][t]:.3f}" for r, t in thr.items())
                    + f" best {best:.3f}:{tab[name][best]:.3f}")
    print("  |  ".join(line), f"| prep {tprep:.0f}s fits " + " ".join(f"{k}:{v:.0f}" for k, v in fit_s.items())
          + f" total {time.perf_counter() - t0:.0f}s", flush=True)
