"""weight.py BUNDLE...: the weight of the detector's score in the combined score, placed out of fold (issue 17,
session 25; offline). The product combines a candidate's detector score s and the verifier's probability p of its
best part class as sqrt(s * p); here s ** a * p ** (1 - a) for a in WEIGHTS, each with the threshold the product's
rule places on the 640 out-of-fold views (the probes' p), and the weight with the most exact out-of-fold views
chosen. Each is scored with the bundle's own verifier (its ONNX graph, the runtime's crops) on the 300 scenes of
test / dev / dev2; a = 0.5 reproduces the shipped figures. 2 threads."""
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from loupe_dl_detect.verify import BoxVerifier, top_candidates
from loupe_trainer.detect.trainer import choose_threshold
from loupe_trainer.detect.verifier import fold_probes, maps_features

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
from inputs import oof_data, trainer_inputs  # noqa: E402
from scenes import test_scenes  # noqa: E402

WEIGHTS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def combine(raw, a: float) -> list:
    """[(boxes, s ** a * p[c] ** (1 - a), c)] from [(boxes, detector scores, probabilities)]."""
    out = []
    for bx, s, p in raw:
        if len(s):
            c = p[:, 1:].argmax(1)
            out.append((bx, (s ** a * p[np.arange(len(c)), c + 1] ** (1 - a)).astype(np.float32), c))
        else:
            out.append((bx, np.zeros(0, np.float32), np.zeros(0, np.int64)))
    return out


@torch.no_grad()
def oof_raw(d, n_out: int, seed: int) -> tuple[list, list]:
    """``verifier.out_of_fold``'s folds, keeping (boxes, detector scores, probabilities) per view."""
    feats = maps_features(d.frozen, d.maps)
    raw = [None] * len(d.scenes)
    for held, fc in fold_probes(feats, d.labels, d.owner, len(d.scenes), n_out, seed):
        for i in held:
            raw[i] = [(bx, s, F.softmax(fc(fv), 1).numpy() if len(s) else None) for (bx, s, fv), _c, _t in d.scenes[i]]
    return [v for per in raw for v in per], [v[2] for per in d.scenes for v in per]


torch.set_num_threads(2)
for bpath in sys.argv[1:]:
    t0 = time.perf_counter()
    t = trainer_inputs(bpath)
    b, p, classes, C = t.bundle, t.params, t.classes, t.n_cls
    cap = b.meta["verifier"]["max_candidates"]
    det, d = oof_data(t)
    raw, gts = oof_raw(d, C + 1, p.seed)
    bv = BoxVerifier(b, C, threads=2)
    test_raw, test_gts = [], []
    for rgb, gl in test_scenes(classes):
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        r = det.predict(bgr, min_score=0.1)
        bx, s, _l = top_candidates(r.boxes, r.scores, r.labels, cap)
        test_raw.append((bx, s, bv.probabilities(bgr, bx) if len(s) else None))
        test_gts.append((None, gl))
    line, best = [], (-1.0, None)
    for a in WEIGHTS:
        thr, table = choose_threshold(combine(raw, a), gts, C)
        tt = combine(test_raw, a)
        acc = [choose_threshold(tt[k:k + 100], test_gts[k:k + 100], C, (thr,))[1][thr][0] for k in (0, 100, 200)]
        line.append(f"a={a:g} t={thr:.3f} oof {table[thr][0]:.3f} test {np.mean(acc):.3f}")
        if table[thr][0] > best[0] + 1e-9:
            best = (table[thr][0], a, np.mean(acc))
    print(f"{Path(bpath).name:4s} " + " | ".join(line) + f" || chosen a={best[1]:g}: {best[2]:.3f} | "
          f"{time.perf_counter() - t0:.0f}s", flush=True)
