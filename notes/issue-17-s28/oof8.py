"""oof8.py BUNDLE...: the out-of-fold threshold placed with the second look (issue 17, session 28; 2 threads). The
product's folds and probes (``out_of_fold``) score every view's capped candidates on one look; here the near ones
(band 0.7-1.4 x each grid threshold in turn) also get the probe's mean over the crop's 8 quarter turns and mirror
images (their frozen features: 7 more looks of every candidate crop). The threshold rule is the product's
(``pick_threshold``). Prints the one-look threshold (must be the bundle's), the 8-look one, and count accuracy on the
300 test scenes with the second look at each (``oracle.out`` has the whole curve)."""
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from loupe_dl_detect.verify import relabel
from loupe_trainer.detect import verifier as V
from loupe_trainer.detect.trainer import THRESHOLDS, count_scores, pick_threshold

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s25"))
sys.path.insert(0, str(Path(__file__).parent))
from ens import dihedral  # noqa: E402
from inputs import oof_data, trainer_inputs  # noqa: E402

torch.set_num_threads(2)
LO, HI = V.SECOND_LOOK_BAND


def look_features(t, d, side):
    """Per image, per view (views, then shifted views replayed from seed + 2): the frozen features of the 7 other
    looks of its capped candidates' crops [7, n, D] (None without candidates)."""
    p = t.params
    rot, flips = p.rotate90 and p.augment, p.flips and p.augment
    srng = np.random.default_rng(p.seed + 2)
    out = []
    for i, (_s, rgb, r, b, _lab) in enumerate(t.train + t.val):
        h, w = rgb.shape[:2]
        raw = np.asarray(b, np.float32).reshape(-1, 4) * np.array([w / r.shape[1], h / r.shape[0]] * 2, np.float32)
        every = V.views(rgb, raw, rot, flips) + V.shifted_views(srng, rgb, raw, rot90=rot, flips=flips)
        per = []
        for (img, bx), ((cb, _cs, fv), _dd, (tb, _tl)) in zip(every, d.scenes[i]):
            assert np.allclose(bx, tb)                        # the replay is the product's draw
            if not len(cb):
                per.append(None)
                continue
            cr = V.crop_boxes(img, cb, side, V.MARGIN, V.MIN_BOX_PX)
            per.append(torch.stack([V.features(d.frozen, dihedral(cr, k)) for k in range(1, 8)]))
        out.append(per)
    return out


@torch.no_grad()
def probs_oof(feats, labels, owner, scenes, looks, n_out, seed):
    """Per image, per view: (detector scores, one-look p, 8-look p) under the probe of the folds without it."""
    out = [None] * len(scenes)
    for held, fc in V.fold_probes(feats, labels, owner, len(scenes), n_out, seed):
        for i in held:
            out[i] = []
            for ((boxes, scores, fv), _d, _t), lk in zip(scenes[i], looks[i]):
                if not len(scores):
                    out[i].append((boxes, scores.astype(np.float32), None, None))
                    continue
                p1 = F.softmax(fc(fv), 1).numpy()
                p8 = (p1 + F.softmax(fc(lk), -1).numpy().sum(0)) / 8
                out[i].append((boxes, scores, p1, p8))
    return [v for per in out for v in per]


def table(rows, gts, n_cls, second):
    tab = {}
    for t in THRESHOLDS:
        preds = []
        for boxes, s, p1, p8 in rows:
            if p1 is None:
                preds.append((boxes, s, np.zeros(0, np.int64)))
                continue
            p = p1
            if second:
                c, _l = relabel(s, p1)
                near = (c >= LO * t) & (c <= HI * t) & (s >= t ** 2)
                p = np.where(near[:, None], p8, p1)
            preds.append((boxes, *relabel(s, p)))
        tab.update(count_scores(preds, gts, n_cls, (t,)))
    return tab


def main():
    oracle = {ln.split(":")[0]: ln for ln in open(Path(__file__).parent / "oracle.out")}
    for bpath in sys.argv[1:]:
        t0 = time.perf_counter()
        name = Path(bpath).name
        t = trainer_inputs(bpath)
        v = t.bundle.meta["verifier"]
        _det, d = oof_data(t)
        looks = look_features(t, d, v["crop"])
        feats = V.maps_features(d.frozen, d.maps)
        rows = probs_oof(feats, d.labels, d.owner, d.scenes, looks, t.n_cls + 1, t.params.seed)
        gts = [x[2] for per in d.scenes for x in per]
        t1, t8 = pick_threshold(table(rows, gts, t.n_cls, False)), pick_threshold(table(rows, gts, t.n_cls, True))
        curve = dict(kv.split(":") for kv in oracle[name].split("|")[2].split())
        print(f"{name}: one-look oof thr {t1:.3f} (bundle {v['min_score']:.3f}) test {curve.get(f'{t1:.3f}')} | "
              f"8-look oof thr {t8:.3f} test {curve.get(f'{t8:.3f}')} | {time.perf_counter() - t0:.0f}s", flush=True)


main()
