"""hard.py BUNDLE [ARM...]: the verifier refitted on a bundle's own data (``oof_data``: the product's ``verifier_data``)
plus the detector's candidates on the shifted views as training crops, its threshold placed out of fold as the product
does, and count accuracy on the 300 test scenes at that threshold and at the best (issue 17, session 27; 2 threads).

The shifted views (zoomed out, turned, colour-jittered; ``shifted_views``) are today used only to place the
threshold. Their candidates are the detector's proposals on images a little further from the ones it trained on, so
closer to what it proposes on new scenes. Arms:
  base  the bundle's own verifier.onnx (no refit): the product
  b     the product's fit again (no extra crops; with DRAW=0 it reproduces base)
  s     + every labelled candidate of the shifted views (IoU >= 0.5: its class, < 0.3: background)
  n     + only the background ones (hard negatives)
  e     no extra crops; the probabilities of two fine-tunings averaged (seeds s and s + 1000: another batch order)
DRAW=K (environment) adds K to the verifier's seed before its data are drawn: another draw of its jittered copies,
random backgrounds, shifted views, folds and fine-tuning batches for the same detector (the base arm stays the
shipped bundle's). No new random draws: the shifted views are replayed from the product's own generator (seed + 2), so a build of arm s
into the product gives the same verifier as this script."""
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from host import create_session
from loupe_dl_detect.verify import relabel
from loupe_trainer.detect import verifier as V
from loupe_trainer.detect.trainer import choose_threshold

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s25"))
sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
from inputs import oof_data, trainer_inputs  # noqa: E402
from scenes import acc_table, test_candidates  # noqa: E402

torch.set_num_threads(2)
V.SHIFTED_CROPS = False    # the product's crops as before session 27 (``oof_data``); the arms add their own


def shifted_crops(t, d, side):
    """Crops of the capped candidates of every image's shifted views, labelled as ``label_candidates``, as stage4 maps
    (labels, owner, kinds 'pos' / 'neg'); the shifted views replayed from the product's generator."""
    p = t.params
    rot, flips = p.rotate90 and p.augment, p.flips and p.augment
    srng = np.random.default_rng(p.seed + 2)
    maps, labels, owner = [], [], []
    for i, (_s, rgb, r, b, lab) in enumerate(t.train + t.val):
        h, w = rgb.shape[:2]
        raw = np.asarray(b, np.float32).reshape(-1, 4) * np.array([w / r.shape[1], h / r.shape[0]] * 2, np.float32)
        nv = len(V.views(rgb, raw, rot, flips))
        sh = V.shifted_views(srng, rgb, raw, rot90=rot, flips=flips)
        crops, y = [], []
        for (img, bx), ((cb, _cs, _f), _dd, (tb, tl)) in zip(sh, d.scenes[i][nv:]):
            assert np.allclose(bx, tb)                        # the replay is the product's draw
            keep, lb = V.label_candidates(cb, tb, tl)
            if keep.any():
                crops.append(V.crop_boxes(img, cb[keep], side, V.MARGIN, V.MIN_BOX_PX))
                y.append(lb)
        if crops:
            maps.append(V.stage4_maps(d.frozen, np.concatenate(crops)))
            labels.append(np.concatenate(y))
            owner.append(np.full(len(labels[-1]), i))
    return torch.cat(maps), np.concatenate(labels), np.concatenate(owner)


def line(name, tag, n, thr, acc, secs):
    best = max(acc, key=acc.get)
    print(f"{name} {tag}: crops {n} | oof thr {thr:.3f} test {acc[thr]:.3f} | best {best:.3f}:{acc[best]:.3f} | "
          + " ".join(f"{k:.3f}:{v:.3f}" for k, v in acc.items() if 0.3 <= k <= 0.5) + f" | {secs:.0f}s", flush=True)


def main():
    bpath, arms = sys.argv[1], sys.argv[2:] or ["base", "s"]
    name = Path(bpath).name
    t = trainer_inputs(bpath)
    draw = int(os.environ.get("DRAW", "0"))
    if draw:
        t.params = t.params.model_copy(update={"seed": t.params.seed + draw})
        name += f"+{draw}"
    t0 = time.perf_counter()
    det, d = oof_data(t)
    v = t.bundle.meta["verifier"]
    side, cap, n_cls, seed = v["crop"], v["max_candidates"], t.n_cls, t.params.seed
    test = test_candidates(det, t.classes, cap, side)
    gts = [x[3] for x in test]
    print(f"{name}: data {time.perf_counter() - t0:.0f}s, {len(d.labels)} crops", flush=True)

    def score(probs):
        return acc_table([(bx, *relabel(s, probs(cr))) if len(s) else (bx, s.astype(np.float32), np.zeros(0, np.int64))
                          for bx, s, cr, _g in test], gts, n_cls)

    sm = None
    for arm in arms:
        t1 = time.perf_counter()
        if arm == "base":
            sess = create_session(t.bundle.path / "verifier.onnx", 2)
            line(name, arm, len(d.labels), v["min_score"], score(lambda cr: V.onnx_probabilities(sess, cr)),
                 time.perf_counter() - t1)
            continue
        if arm == "e":
            feats = V.maps_features(d.frozen, d.maps)
            nets = [V.fit_verifier(None, d.labels, n_cls, len(t.train) + len(t.val), t.params.verify_epochs, sd,
                                   maps=d.maps, feats=feats)[0] for sd in (seed, seed + 1000)]
            with torch.no_grad():
                acc = score(lambda cr: np.mean([n(V.to_input(cr)).numpy() for n in nets], 0))
            line(name, arm, len(d.labels), v["min_score"], acc, time.perf_counter() - t1)
            continue
        if sm is None and arm != "b":
            sm = shifted_crops(t, d, side)
            print(f"{name}: shifted-view crops {len(sm[1])} (background {int((sm[1] == 0).sum())})", flush=True)
        em, el, eo = sm if arm != "b" else (d.maps[:0], d.labels[:0], d.owner[:0])
        if arm == "n":
            k = torch.from_numpy(el == 0)
            em, el, eo = em[k], el[k.numpy()], eo[k.numpy()]
        maps, labels, owner = torch.cat([d.maps, em]), np.concatenate([d.labels, el]), np.concatenate([d.owner, eo])
        feats = V.maps_features(d.frozen, maps)
        oof, _dp, g = V.out_of_fold(feats, labels, owner, d.scenes, n_cls + 1, seed)
        thr, _tab = choose_threshold(oof, g, n_cls)
        net, _acc = V.fit_verifier(None, labels, n_cls, len(t.train) + len(t.val), t.params.verify_epochs, seed,
                                   maps=maps, feats=feats)
        with torch.no_grad():
            acc = score(lambda cr: net(V.to_input(cr)).numpy())
        line(name, arm, len(labels), thr, acc, time.perf_counter() - t1)


main()
