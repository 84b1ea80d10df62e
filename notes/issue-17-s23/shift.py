"""shift.py BUNDLE...: how much of the operating threshold is the draw of the held-out images' shifted views, and does
drawing more of them help? (issue 17, session 23; offline, on bundles written with --verify-refit.)

Per bundle: the first verifier fit exactly as the product does it (the same crops and seed: the verifier that places
the threshold), the held-out images' 8 views plus N shifted views of each (``shifted_views``) drawn with several
random seeds (seed + 2 is the product's draw), the count-balance threshold of each draw, and the count accuracy of
the bundle itself (its refitted verifier, through the runtime) on the 300 scenes of test / dev / dev2 at it.
2 threads."""
import sys
from pathlib import Path

import numpy as np
import torch

from loupe_trainer.detect import verifier as V
from loupe_trainer.detect.trainer import count_balance

sys.path.insert(0, str(Path(__file__).parent))
from scenes import bundle_scenes, first_fit, capped, combined, shipped_accuracy  # noqa: E402

torch.set_num_threads(2)
DRAWS = {8: [2, 100, 200, 300, 400], 32: [2, 100, 200], 64: [2]}    # N shifted views per image: rng seeds (+ seed)

for bpath in sys.argv[1:]:
    sc = bundle_scenes(bpath)
    seed, C = sc.seed, sc.n_cls
    net = first_fit(sc)

    def scored(views):
        views = list(views)
        return combined(net, [capped(sc, img) for img, _bx, _lab in views]), [(bx, lab) for _img, bx, lab in views]

    base = scored((img, bx, lab) for rgb, r, lab in sc.val for img, bx in V.views(rgb, r))
    thr = {}
    for n, seeds in DRAWS.items():
        for k in seeds:
            srng = np.random.default_rng(seed + k)
            sp = scored((img, bx, lab) for rgb, r, lab in sc.val for img, bx in V.shifted_views(srng, rgb, r, n=n))
            thr[(n, k)] = count_balance(base[0] + sp[0], base[1] + sp[1])[0]
    acc = shipped_accuracy(sc)
    best = max(acc, key=acc.get)
    own = sc.meta["verifier"]["min_score"]
    out = [f"{Path(bpath).name:4s} own {own:.3f}:{acc.get(own, float('nan')):.3f} (draw 2 -> {thr[(8, 2)]:.3f})"]
    for n in DRAWS:
        ts = [thr[(n, k)] for k in DRAWS[n]]
        out.append(f"N{n}: " + " ".join(f"{t:.3f}" for t in ts) + f" -> mean acc {np.mean([acc[t] for t in ts]):.3f}")
    out.append(f"best {best:.3f}:{acc[best]:.3f}")
    print("  |  ".join(out), flush=True)
