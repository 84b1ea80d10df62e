import sys, pickle, numpy as np
sys.path.insert(0, "/tmp/h17t")
from ana import gts, acc_at, signed_err
from loupe_trainer.detect.trainer import THRESHOLDS
def comb(rows, a):
    out = []
    for r in rows:
        b, s, l = r["cand"]
        if len(s):
            p = r["probs"]; c = p[:, 1:].argmax(1)
            out.append((b, (s ** a * p[np.arange(len(c)), c + 1] ** (1 - a)).astype(np.float32), c))
        else:
            out.append((b, s, np.zeros(0, np.int64)))
    return out
for path in sys.argv[1:]:
    res = pickle.load(open(path, "rb")); C = len(res["meta"]["classes"])
    for a in (0.25, 0.35, 0.5, 0.65):
        sel = {g: (comb(res[g]["base"], a), gts(res[g]["base"])) for g in ("held", "aug", "test", "dev", "dev2")}
        HA = (sel["held"][0] + sel["aug"][0], sel["held"][1] + sel["aug"][1])
        se = [signed_err(*HA, t) for t in THRESHOLDS]; t = THRESHOLDS[int(np.argmin(np.abs(se)))]
        accs = [acc_at(*sel[s], C, t) for s in ("test", "dev", "dev2")]
        best = [max(acc_at(*sel[s], C, u) for u in THRESHOLDS) for s in ("test", "dev", "dev2")]
        print(path.split("/")[-1], f"a={a} thr {t} augbal " + " / ".join(f"{x:.2f}" for x in accs) + f" mean {np.mean(accs):.3f}  best " + " / ".join(f"{x:.2f}" for x in best))
