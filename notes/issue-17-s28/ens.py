"""ens.py BUNDLE...: what averaging buys the verifier, offline, on bundles of today's default (issue 17, session 28;
2 threads). On the 300 test scenes, each bundle's candidates (the runtime's: 0.1, the cap), count accuracy at the
bundle's own threshold and at the best:
  base   the shipped verifier.onnx
  tta2   base, p averaged over the crop and its mirror image
  tta8   base, p averaged over the crop's 8 quarter turns and mirrors (the verifier trains on both)
  f0     the product's fit again (seed s; reproduces base), f1 / f2 the same data fine-tuned from seeds s + 1000 /
         s + 2000 (another batch order)
  e2 e3  the mean p of f0..f1 / f0..f2
The data are the product's (``oof_data``, ``SHIFTED_CROPS`` as shipped), so f0 is the bundle's verifier."""
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from host import Bundle, create_session
from loupe_dl_detect.model import Detector
from loupe_dl_detect.verify import relabel
from loupe_trainer.detect import verifier as V

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s25"))
sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
from inputs import oof_data, trainer_inputs  # noqa: E402
from scenes import acc_table, test_candidates  # noqa: E402

torch.set_num_threads(2)


def dihedral(cr, k):
    """The k-th of the 8 quarter turns and mirrors of square crops [N, S, S, 3]."""
    out = np.rot90(cr, k % 4, axes=(1, 2))
    return np.ascontiguousarray(out[:, :, ::-1] if k >= 4 else out)


def bundle_looks(bpath) -> SimpleNamespace:
    """What band.py, oracle.py and agg.py score: a bundle's threshold and class count, its detector's capped test
    candidates (``test_candidates``) and their true labels, and per test scene the shipped verifier's probabilities
    of each candidate's crop under the 8 looks ``dihedral`` [8, n, K + 1] (None without candidates)."""
    b = Bundle.load(Path(bpath))
    v = b.meta["verifier"]
    det = Detector(b, threads=2, verify=False)
    test = test_candidates(det, b.meta["classes"], v["max_candidates"], v["crop"])
    sess = create_session(b.path / "verifier.onnx", 2)
    looks = [np.stack([V.onnx_probabilities(sess, dihedral(cr, k)) for k in range(8)]) if len(s) else None
             for _b, s, cr, _g in test]
    return SimpleNamespace(thr=v["min_score"], n_cls=len(b.meta["classes"]), test=test, gts=[x[3] for x in test],
                           looks=looks)


def line(name, tag, thr, acc, secs):
    best = max(acc, key=acc.get)
    print(f"{name} {tag}: thr {thr:.3f} test {acc[thr]:.3f} | best {best:.3f}:{acc[best]:.3f} | "
          + " ".join(f"{k:.3f}:{v:.3f}" for k, v in acc.items() if 0.3 <= k <= 0.5) + f" | {secs:.0f}s", flush=True)


def main():
    for bpath in sys.argv[1:]:
        name = Path(bpath).name
        t = trainer_inputs(bpath)
        t0 = time.perf_counter()
        v = t.bundle.meta["verifier"]
        thr, side, cap, n_cls, seed = v["min_score"], v["crop"], v["max_candidates"], t.n_cls, t.params.seed
        det, d = oof_data(t)
        test = test_candidates(det, t.classes, cap, side)
        gts = [x[3] for x in test]
        print(f"{name}: data {time.perf_counter() - t0:.0f}s, {len(d.labels)} crops, "
              f"{sum(len(x[1]) for x in test)} test candidates", flush=True)

        def score(probs):
            return acc_table([(bx, *relabel(s, probs(cr))) if len(s) else
                              (bx, s.astype(np.float32), np.zeros(0, np.int64)) for bx, s, cr, _g in test], gts, n_cls)

        sess = create_session(t.bundle.path / "verifier.onnx", 2)
        for tag, ks in (("base", [0]), ("tta2", [0, 4]), ("tta8", range(8))):
            t1 = time.perf_counter()
            line(name, tag, thr, score(lambda cr: np.mean([V.onnx_probabilities(sess, dihedral(cr, k))
                                                           for k in ks], 0)), time.perf_counter() - t1)
        feats = V.maps_features(d.frozen, d.maps)
        probs = []                     # per fit: p of the test candidates' crops, scene by scene
        for j in range(3):
            t1 = time.perf_counter()
            net, _a = V.fit_verifier(None, d.labels, n_cls, len(t.train) + len(t.val), t.params.verify_epochs,
                                     seed + 1000 * j, maps=d.maps, feats=feats)
            with torch.no_grad():
                probs.append([net(V.to_input(cr)).numpy() for _b, s, cr, _g in test if len(s)])
            it = iter(probs[-1])
            line(name, f"f{j}", thr, score(lambda cr: next(it)), time.perf_counter() - t1)
            if j:
                it = iter([np.mean(ps, 0) for ps in zip(*probs)])
                line(name, f"e{j + 1}", thr, score(lambda cr: next(it)), 0)


if __name__ == "__main__":
    main()
