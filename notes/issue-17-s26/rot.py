"""rot.py BUNDLE [NROT...]: the verifier refitted on a bundle's own data (``oof_data``: the product's
``verifier_data``) plus NROT copies of every true box per view turned by a random angle in [-45, 45] degrees about its
centre (0 = the product's fit, which reproduces the bundle), its threshold placed out of fold as the product does, and
count accuracy on the 300 test scenes at that threshold and at the best (issue 17, session 26; 2 threads)."""
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from loupe_dl_detect.verify import GREY, crop_matrix, relabel
from loupe_trainer.detect import verifier as V
from loupe_trainer.detect.trainer import choose_threshold

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s25"))
sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
from inputs import oof_data, trainer_inputs  # noqa: E402
from scenes import acc_table, test_candidates  # noqa: E402

torch.set_num_threads(2)


def turned_crops(img, boxes, side, angles):
    """The runtime's crop of each box (``crop_matrix``) taken from the image turned by its angle about the box's
    centre."""
    out = np.empty((len(boxes), side, side, 3), np.uint8)
    for i, (b, a) in enumerate(zip(boxes, angles)):
        turn = np.vstack([cv2.getRotationMatrix2D((float(b[0] + b[2]) / 2, float(b[1] + b[3]) / 2), float(a), 1.0),
                          [0, 0, 1]])
        cv2.warpAffine(img, crop_matrix(b, side, V.MARGIN, V.MIN_BOX_PX) @ turn, (side, side), dst=out[i],
                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(GREY, GREY, GREY))
    return out


def extras(t, d, nrot, seed, jit=False):
    """NROT turned copies of every true box per view (``jit``: of jittered copies of it, as ``N_JITTER``)."""
    rng = np.random.default_rng(seed + 11)
    maps, labels, owner = [], [], []
    for i, (_s, rgb, r, b, lab) in enumerate(t.train + t.val):
        h, w = rgb.shape[:2]
        raw = np.asarray(b, np.float32).reshape(-1, 4) * np.array([w / r.shape[1], h / r.shape[0]] * 2, np.float32)
        cr, lb = [], []
        for img, bx in V.views(rgb, raw):
            for _ in range(nrot):
                src = np.stack([V.jitter(rng, b, 1, V.JITTER)[0] for b in bx]) if jit and len(bx) else bx
                cr.append(turned_crops(img, src, t.bundle.meta["verifier"]["crop"], rng.uniform(-45, 45, len(bx))))
                lb.append(np.asarray(lab, np.int64) + 1)
        maps.append(V.stage4_maps(d.frozen, np.concatenate(cr)))
        labels.append(np.concatenate(lb))
        owner.append(np.full(len(labels[-1]), i))
    return torch.cat(maps), np.concatenate(labels), np.concatenate(owner)


def main():
    bpath, nrots = sys.argv[1], sys.argv[2:] or ["0", "2"]
    t = trainer_inputs(bpath)
    det, d = oof_data(t)
    v = t.bundle.meta["verifier"]
    side, cap, n_cls, seed = v["crop"], v["max_candidates"], t.n_cls, t.params.seed
    test = test_candidates(det, t.classes, cap, side)
    for tag in nrots:
        # N: N turned copies added; jN: the jitter copies replaced by N turned, jittered copies
        t0 = time.perf_counter()
        nrot, jit = int(tag.lstrip("j")), tag.startswith("j")
        maps, labels, owner = d.maps, d.labels, d.owner
        if jit:      # the true crops come per box as (exact, N_JITTER jittered): keep the exact ones
            tr = np.flatnonzero(d.kinds == "truth")
            keep = np.ones(len(labels), bool)
            keep[tr[np.arange(len(tr)) % (1 + V.N_JITTER) != 0]] = False
            maps, labels, owner = maps[torch.from_numpy(keep)], labels[keep], owner[keep]
        if nrot:
            em, el, eo = extras(t, d, nrot, seed, jit)
            maps, labels, owner = torch.cat([maps, em]), np.concatenate([labels, el]), np.concatenate([owner, eo])
        feats = V.maps_features(d.frozen, maps)
        oof, _dp, gts = V.out_of_fold(feats, labels, owner, d.scenes, n_cls + 1, seed)
        thr, _tab = choose_threshold(oof, gts, n_cls)
        net, _acc = V.fit_verifier(None, labels, n_cls, len(t.train) + len(t.val), t.params.verify_epochs, seed,
                                   maps=maps, feats=feats)
        preds = []
        with torch.no_grad():
            for bx, s, cr, _gl in test:
                if len(s):
                    sc, lab = relabel(s, net(V.to_input(cr)).numpy())
                else:
                    sc, lab = s.astype(np.float32), np.zeros(0, np.int64)
                preds.append((bx, sc, lab))
        acc = acc_table(preds, [x[3] for x in test], n_cls)
        best = max(acc, key=acc.get)
        print(f"{Path(bpath).name} nrot {tag}: crops {len(labels)} | oof thr {thr:.3f} test {acc[thr]:.3f} | "
              f"best {best:.3f}:{acc[best]:.3f} | " + " ".join(f"{k:.3f}:{v:.3f}" for k, v in acc.items()
                                                           if 0.3 <= k <= 0.5) + f" | {time.perf_counter() - t0:.0f}s",
              flush=True)


main()
