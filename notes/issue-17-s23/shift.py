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

from host import Bundle
from loupe_dl_detect.data import load, scan
from loupe_dl_detect.model import Detector
from loupe_dl_detect.verify import top_candidates
from loupe_trainer.detect import verifier as V
from loupe_trainer.detect.trainer import THRESHOLDS, _load_resized, count_balance, split_names

torch.set_num_threads(2)
DRAWS = {8: [2, 100, 200, 300, 400], 32: [2, 100, 200], 64: [2]}    # N shifted views per image: rng seeds (+ seed)

for bpath in sys.argv[1:]:
    b = Bundle.load(Path(bpath))
    meta = b.meta
    p = meta["training"]["params"]
    seed = p["seed"]
    classes = meta["classes"]
    C = len(classes)
    cap, side = meta["verifier"]["max_candidates"], meta["verifier"]["crop"]
    samples = scan(Path(meta["training"]["data"]), classes=classes).train
    tr_idx, va_idx = split_names([s.name for s in samples], p["val_fraction"], seed + 1)
    det = Detector(b, threads=2, verify=False)

    def propose(rgb):
        return det.predict(np.ascontiguousarray(rgb[:, :, ::-1]), min_score=0.1)

    def raw(idx):
        out = []
        for s, rgb, r, bx, lab in _load_resized([samples[i] for i in idx], tuple(meta["input_size"]), lambda *a: 0):
            h, w = rgb.shape[:2]
            out.append((rgb, bx.reshape(-1, 4) * np.array([w / r.shape[1], h / r.shape[0]] * 2, np.float32), lab))
        return out

    train, val = raw(tr_idx), raw(va_idx)
    crops, labels, _k = V.training_crops(propose, [(img, bx, lab) for rgb, r, lab in train for img, bx in V.views(rgb, r)],
                                         np.random.default_rng(seed), crop=side, max_candidates=cap,
                                         n_jitter=V.N_JITTER, jitter_amount=V.JITTER)
    net, _acc = V.fit_verifier(crops, labels, C, len(train), p["verify_epochs"], seed)

    @torch.no_grad()
    def scored(views):
        preds, gts = [], []
        for img, bx, lab in views:
            d = propose(img)
            bb, ss, ll = top_candidates(d.boxes, d.scores, d.labels, cap)
            if len(ss):
                sc, lb = V.relabel(ss, net(V.to_input(V.crop_boxes(img, bb, side, V.MARGIN, V.MIN_BOX_PX))).numpy())
            else:
                sc, lb = ss, np.zeros(0, np.int64)
            preds.append((bb, sc, lb))
            gts.append((bx, lab))
        return preds, gts

    base = scored([(img, bx, lab) for rgb, r, lab in val for img, bx in V.views(rgb, r)])
    thr = {}
    for n, seeds in DRAWS.items():
        for k in seeds:
            srng = np.random.default_rng(seed + k)
            sp = scored([(img, bx, lab) for rgb, r, lab in val for img, bx in V.shifted_views(srng, rgb, r, n=n)])
            thr[(n, k)] = count_balance(base[0] + sp[0], base[1] + sp[1])[0]
    full = Detector(b, threads=2)
    rows = []
    for s in [t for sub in ("bench", "dev", "dev2") for t in scan(Path("/tmp/h17s15") / sub, classes=classes).test]:
        rgb, gb, gl = load(s)
        d = full.predict(rgb[:, :, ::-1], min_score=0.1)
        rows.append((d.scores, d.labels, np.bincount(gl, minlength=C)))
    acc = {t: float(np.mean([(np.bincount(l[sc >= t], minlength=C) == g).all() for sc, l, g in rows]))
           for t in THRESHOLDS}
    best = max(acc, key=acc.get)
    own = meta["verifier"]["min_score"]
    out = [f"{Path(bpath).name:4s} own {own:.3f}:{acc.get(own, float('nan')):.3f} (draw 2 -> {thr[(8, 2)]:.3f})"]
    for n in DRAWS:
        ts = [thr[(n, k)] for k in DRAWS[n]]
        out.append(f"N{n}: " + " ".join(f"{t:.3f}" for t in ts) + f" -> mean acc {np.mean([acc[t] for t in ts]):.3f}")
    out.append(f"best {best:.3f}:{acc[best]:.3f}")
    print("  |  ".join(out), flush=True)
