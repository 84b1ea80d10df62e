"""shiftcal.py BUNDLE...: is the out-of-fold threshold low because the folds' verifiers are probes and the bundle's
is fine-tuned? (issue 17, session 25; offline, 2 threads). On the 640 views of the bundle's 40 scenes: the product's
out-of-fold threshold (probes), the exact rule's threshold under the probe fitted on all 40 (in sample) and under
the bundle's own fine-tuned verifier (in sample, its ONNX graph); the correction t_oof + (t_ft - t_probe); each
scored with the bundle as shipped on the 300 test scenes (``offset.py``'s table)."""
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from loupe_dl_detect.verify import relabel
from loupe_trainer.classify.engine import _probe_wd, fit_linear
from loupe_trainer.detect import verifier as V
from loupe_trainer.detect.trainer import choose_threshold

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
from scenes import all_scene_crops, bundle_scenes, scored, shipped_accuracy  # noqa: E402

torch.set_num_threads(2)
for bpath in sys.argv[1:]:
    sc = bundle_scenes(bpath)
    C = sc.n_cls
    a = all_scene_crops(sc)
    feats = V.maps_features(V.Verifier(V.STAGES, C + 1), a.s4)
    # the product's out-of-fold threshold (probes on the other folds)
    perm = np.random.default_rng(sc.seed + 7).permutation(a.n)
    preds, gts = [None] * a.n, [None] * a.n
    probe = V.Verifier(V.STAGES, C + 1).eval()
    for f in range(5):
        out = perm[f::5]
        m = ~np.isin(a.owner, out)
        fit_linear(probe.fc, feats[torch.from_numpy(m)], torch.from_numpy(a.labels[m]), _probe_wd(a.n - len(out)), 0.0)
        for i in out:
            preds[i], gts[i] = scored(probe, a.ev, [i])
    oof = choose_threshold([p for x in preds for p in x], [g for x in gts for g in x], C)[0]
    # in sample: the probe on all 40, and the bundle's own fine-tuned verifier
    fit_linear(probe.fc, feats, torch.from_numpy(a.labels), _probe_wd(a.n), 0.0)
    pp, gg = scored(probe, a.ev, range(a.n))
    t_probe = choose_threshold(pp, gg, C)[0]
    sess = ort.InferenceSession(str(Path(bpath) / "verifier.onnx"), providers=["CPUExecutionProvider"])
    ft = []
    for cands, _t in a.ev:
        for b, s, _l, cr in cands:
            if len(s):
                p = V.onnx_probabilities(sess, cr)
                ft.append((b, *relabel(s, p)))
            else:
                ft.append((b, s.astype(np.float32), np.zeros(0, np.int64)))
    t_ft = choose_threshold(ft, gg, C)[0]
    corr = round(min(max(oof + t_ft - t_probe, 0.1), 0.8) / 0.025) * 0.025
    acc = shipped_accuracy(sc)
    best = max(acc, key=acc.get)
    k = lambda t: min(acc, key=lambda u: abs(u - t))  # noqa: E731
    print(f"{Path(bpath).name:4s} oof {oof:.3f}:{acc[k(oof)]:.3f} | in-sample probe {t_probe:.3f}, fine-tuned "
          f"{t_ft:.3f} | corrected {corr:.3f}:{acc[k(corr)]:.3f} | best {best:.3f}:{acc[best]:.3f}", flush=True)
