"""perclass.py BUNDLE...: per-class thresholds on the out-of-fold scores (issue 17, session 25; offline). The
product places one threshold for every class on the 640 out-of-fold views (``verifier.out_of_fold``); here, from
that threshold, each class's own threshold is moved in turn (two rounds of coordinate ascent) to the one with the
most exactly counted views, the curve averaged with its two neighbours as ``pick_threshold`` does. Both are then
scored with the bundle as shipped (its verifier, through the runtime) on the 300 scenes of test / dev / dev2.
2 threads."""
import sys
import time
from pathlib import Path

import numpy as np
import torch

from loupe_dl_detect.model import Detector
from loupe_trainer.detect.trainer import THRESHOLDS, choose_threshold
from loupe_trainer.detect.verifier import maps_features, out_of_fold

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
from inputs import oof_data, trainer_inputs  # noqa: E402
from scenes import test_scenes  # noqa: E402


def exact(preds, gts, thr: np.ndarray, n_cls: int) -> float:
    """Share of images whose per-class counts are exact, class c kept at score >= thr[c]."""
    return float(np.mean([(np.bincount(p[2][p[1] >= thr[p[2]]], minlength=n_cls)
                           == np.bincount(g[1], minlength=n_cls)).all() for p, g in zip(preds, gts)]))


def per_class(preds, gts, start: float, n_cls: int, rounds: int = 2) -> np.ndarray:
    thr = np.full(n_cls, start)
    ts = np.array(THRESHOLDS)
    for _ in range(rounds):
        for c in range(n_cls):
            acc = []
            for t in ts:
                trial = thr.copy()
                trial[c] = t
                acc.append(exact(preds, gts, trial, n_cls))
            sm = np.convolve(np.pad(np.array(acc), 1, mode="edge"), np.ones(3) / 3, "valid")
            best = np.flatnonzero(sm >= sm.max() - 1e-9)
            thr[c] = ts[best[len(best) // 2]]
    return thr


torch.set_num_threads(2)
for bpath in sys.argv[1:]:
    t0 = time.perf_counter()
    t = trainer_inputs(bpath)
    b, p, classes, C = t.bundle, t.params, t.classes, t.n_cls
    d = oof_data(t)[1]
    oof, _det, gts = out_of_fold(maps_features(d.frozen, d.maps), d.labels, d.owner, d.scenes, C + 1, p.seed)
    glob = choose_threshold(oof, gts, C)[0]
    pc = per_class(oof, gts, glob, C)
    full = Detector(b, threads=2)
    tp, tg = [], []
    for rgb, gl in test_scenes(classes):
        r = full.predict(rgb[:, :, ::-1], min_score=0.1)
        tp.append((r.boxes, r.scores, r.labels))
        tg.append((None, gl))
    parts = [(tp[k:k + 100], tg[k:k + 100]) for k in (0, 100, 200)]
    g_acc = [exact(a, g, np.full(C, glob), C) for a, g in parts]
    p_acc = [exact(a, g, pc, C) for a, g in parts]
    print(f"{Path(bpath).name:4s} own {b.meta['verifier']['min_score']:.3f} oof-global {glob:.3f} "
          f"(oof {exact(oof, gts, np.full(C, glob), C):.3f}) test {np.round(g_acc, 2).tolist()} {np.mean(g_acc):.3f} | "
          f"per-class {dict(zip(classes, pc.round(3).tolist()))} (oof {exact(oof, gts, pc, C):.3f}) test "
          f"{np.round(p_acc, 2).tolist()} {np.mean(p_acc):.3f} | {time.perf_counter() - t0:.0f}s", flush=True)
