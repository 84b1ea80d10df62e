"""Post-hoc calibration of the verifier's probabilities on cached candidates (h17t's cache.py pickles):
p' ∝ p^(1/T) * prior, prior = [a, 1, .., 1] (background down-weighted by a), then gmean_relabel, threshold by
count balance on held-out + shifted views (augbal, as the product), count accuracy on test / dev / dev2."""
import sys, pickle, numpy as np
sys.path.insert(0, "/tmp/h17t")
from ana import gts, acc_at, signed_err
from loupe_dl_detect.verify import relabel
from loupe_trainer.detect.trainer import THRESHOLDS
SETS = ("test", "dev", "dev2")
def cal(p, a, T):
    q = np.log(np.clip(p, 1e-12, 1)) / T
    q[:, 0] += np.log(a)
    q = np.exp(q - q.max(1, keepdims=True)); return q / q.sum(1, keepdims=True)
def comb(rows, a, T):
    out = []
    for r in rows:
        b, s, l = r["cand"]
        if len(s):
            sc, lab = relabel(s, cal(r["probs"], a, T)); out.append((b, sc, lab))
        else:
            out.append((b, s.astype(np.float32), np.zeros(0, np.int64)))
    return out
grid = [(a, 1.0) for a in (1.0, 0.5, 0.25, 0.1, 2.0)] + [(1.0, T) for T in (1.5, 2.0, 3.0)] + [(0.5, 1.5), (0.25, 2.0)]
for path in sys.argv[1:]:
    res = pickle.load(open(path, "rb")); C = len(res["meta"]["classes"])
    for a, T in grid:
        sel = {g: (comb(res[g]["base"], a, T), gts(res[g]["base"])) for g in ("held", "aug", *SETS)}
        HA = (sel["held"][0] + sel["aug"][0], sel["held"][1] + sel["aug"][1])
        se = [signed_err(*HA, t) for t in THRESHOLDS]; t = THRESHOLDS[int(np.argmin(np.abs(se)))]
        accs = [acc_at(*sel[s], C, t) for s in SETS]
        best = [max(acc_at(*sel[s], C, u) for u in THRESHOLDS) for s in SETS]
        print(path.split("/")[-1], f"a={a:<5} T={T:<4} thr {t:<6} augbal " + " / ".join(f"{x:.2f}" for x in accs)
              + f" mean {np.mean(accs):.3f}  best " + " / ".join(f"{x:.2f}" for x in best) + f" ({np.mean(best):.3f})", flush=True)
