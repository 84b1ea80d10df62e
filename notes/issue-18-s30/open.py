"""open.py PER SEED NU: self-training when the unlabelled folder holds parts of classes the labelled set lacks. The
labelled images of semi.py's draw are kept for classes 0-7 only (bag and ankle boot are unknown to the model); the
unlabelled images stay as drawn, all ten classes (about 20 % foreign); the test set is the 8,000 images of classes 0-7.
The product's rule (``pseudo_labelled``, share 0.5) on the frozen features semi.py cached in /tmp/s30/cls (run
semi.py PER SEED NU first). Issue 18, session 30."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import classify as bench  # noqa: E402
from loupe_trainer.classify.engine import _probe_wd, fit_linear, pseudo_labelled  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
CACHE = Path("/tmp/s30/cls")
PER, SEED, NU, K = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), 8
ytr = bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
rng = np.random.default_rng(SEED)
order = {c: rng.permutation(np.flatnonzero(ytr == c)) for c in range(10)}
sel = np.concatenate([order[c][:PER] for c in range(10)])
unl = np.random.default_rng(1000 + SEED).choice(np.setdiff1d(np.arange(len(ytr)), sel), NU, replace=False)
ftr = torch.from_numpy(np.load(CACHE / f"tr-s{SEED}-{PER}.npy"))
fu = torch.from_numpy(np.load(CACHE / f"u-s{SEED}-{PER}-{NU}.npy"))
fte = torch.from_numpy(np.load(CACHE / "te.npy"))
yte = torch.from_numpy(bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64))
known = ytr[sel] < K
fl = ftr[:, torch.from_numpy(known)].flatten(0, 1)
yl = torch.from_numpy(ytr[sel][known]).repeat(len(ftr))
n_img = int(known.sum())
yu = ytr[unl]
te = yte < K


def probe(f, lab, n):
    fc = torch.nn.Linear(f.shape[-1], K)
    fit_linear(fc, f, lab, _probe_wd(n), 0.1)
    return fc


def acc(fc):
    with torch.no_grad():
        return round((fc(fte[te]).argmax(1) == yte[te]).float().mean().item(), 4)


fc = probe(fl, yl, n_img)
print(json.dumps({"per": PER, "seed": SEED, "unlabelled": "none", "acc": acc(fc)}), flush=True)
for name, rows in [("all ten classes", np.arange(NU)), ("the eight known classes only", np.flatnonzero(yu < K))]:
    u = fu[torch.from_numpy(rows)]
    with torch.no_grad():
        probs = torch.softmax(fc(u), 1).numpy()
    keep = pseudo_labelled(probs, 0.5)
    lab = probs.argmax(1)[keep]
    head = probe(torch.cat([fl, u[torch.from_numpy(keep)]]), torch.cat([yl, torch.from_numpy(lab)]), n_img + len(keep))
    print(json.dumps({"per": PER, "seed": SEED, "unlabelled": name, "n": int(len(rows)), "kept": int(len(keep)),
                      "kept_foreign": int((yu[rows][keep] >= K).sum()),
                      "kept_right": round(float((yu[rows][keep] == lab).mean()), 4), "acc": acc(head)}), flush=True)
