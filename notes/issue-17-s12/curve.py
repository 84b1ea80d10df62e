import sys, pickle, numpy as np
sys.path.insert(0, "/tmp/h17t")
from ana import combined, gts, acc_at, signed_err
from loupe_trainer.detect.trainer import THRESHOLDS
for p in sys.argv[1:]:
    res = pickle.load(open(p, "rb")); C = len(res["meta"]["classes"])
    print(p, "ver_thr", res["meta"]["ver_thr"])
    sel = {g: (combined(res[g]["base"]), gts(res[g]["base"])) for g in ("held", "aug", "test", "dev", "dev2")}
    for t in THRESHOLDS[8:22]:
        print(f"  {t:.3f} " + " ".join(f"{acc_at(*sel[s], C, t):.2f}" for s in ("test", "dev", "dev2")) +
              f"  mean {np.mean([acc_at(*sel[s], C, t) for s in ('test','dev','dev2')]):.3f}" +
              f"  held acc {acc_at(*sel['held'], C, t):.2f} se held {signed_err(*sel['held'], t):+.2f} aug {signed_err(*sel['aug'], t):+.2f}"
              + "  sets se " + " ".join(f"{signed_err(*sel[s], t):+.2f}" for s in ("test", "dev", "dev2")))
