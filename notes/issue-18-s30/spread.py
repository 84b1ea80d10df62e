"""spread.py PER SEED NU: label spreading over a kNN graph of the frozen pooled features (labelled + unlabelled
images), then the probe on the labelled images and the unlabelled ones with their spread labels (issue 18, session 30;
the features semi.py cached in /tmp/s30/cls)."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import classify as bench  # noqa: E402
from loupe_trainer.classify.engine import _probe_wd, fit_linear  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
CACHE = Path("/tmp/s30/cls")
PER, SEED, NU = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ytr = bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
rng = np.random.default_rng(SEED)
order = {c: rng.permutation(np.flatnonzero(ytr == c)) for c in range(10)}
sel = np.concatenate([order[c][:PER] for c in range(10)])
unl = np.random.default_rng(1000 + SEED).choice(np.setdiff1d(np.arange(len(ytr)), sel), NU, replace=False)
ftr = torch.from_numpy(np.load(CACHE / f"tr-s{SEED}-{PER}.npy"))
fu = torch.from_numpy(np.load(CACHE / f"u-s{SEED}-{PER}-{NU}.npy"))
fte = torch.from_numpy(np.load(CACHE / "te.npy"))
yte = torch.from_numpy(bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64))
y, yu = torch.from_numpy(ytr[sel]), torch.from_numpy(ytr[unl])
fl, yl = ftr.flatten(0, 1), y.repeat(len(ftr))


def probe(f, lab, n):
    fc = torch.nn.Linear(f.shape[-1], 10)
    fit_linear(fc, f, lab, _probe_wd(n), 0.1)
    with torch.no_grad():
        return round((fc(fte).argmax(1) == yte).float().mean().item(), 4)


# graph over the unaugmented labelled images and the unlabelled ones: standardised, PCA, cosine kNN
z = torch.cat([ftr[0], fu])
z = (z - z.mean(0)) / (z.std(0) + 1e-3)
u, s, v = torch.pca_lowrank(z, q=256, center=True)
z = torch.nn.functional.normalize(z @ v, dim=1)
n, nl = len(z), len(y)
for k in (10, 20):
    sims, idx = [], []
    for a in range(0, n, 2000):
        sv, iv = (z[a:a + 2000] @ z.T).topk(k + 1, dim=1)
        sims.append(sv[:, 1:]), idx.append(iv[:, 1:])
    sims, idx = torch.cat(sims).clamp(min=0) ** 3, torch.cat(idx)
    W = torch.sparse_coo_tensor(torch.stack([torch.arange(n).repeat_interleave(k), idx.flatten()]), sims.flatten(),
                                (n, n)).coalesce()
    W = ((W + W.t()) / 2).coalesce()
    d = torch.sparse.sum(W, 1).to_dense().clamp(min=1e-9) ** -0.5
    vals = W.values() * d[W.indices()[0]] * d[W.indices()[1]]
    S = torch.sparse_coo_tensor(W.indices(), vals, (n, n)).coalesce()
    Y0 = torch.zeros(n, 10)
    Y0[torch.arange(nl), y] = 1
    for alpha in (0.9, 0.99):
        Fm = Y0.clone()
        for _ in range(40):
            Fm = alpha * torch.sparse.mm(S, Fm) + (1 - alpha) * Y0
        Fm = Fm / Fm.sum(0, keepdim=True)  # class-balance the spread mass
        conf, lab = Fm[nl:].max(1)
        pacc = (lab == yu).float().mean().item()
        for share in (0.5, 1.0):
            keep = torch.zeros(NU, dtype=torch.bool)
            for c in range(10):
                ic = torch.nonzero(lab == c).flatten()
                keep[ic[conf[ic].argsort(descending=True)[:int(np.ceil(share * len(ic)))]]] = True
            a = probe(torch.cat([fl, fu[keep]]), torch.cat([yl, lab[keep]]), len(yl) + int(keep.sum()))
            print(json.dumps({"per": PER, "seed": SEED, "nu": NU, "k": k, "alpha": alpha, "share": share,
                              "spread_acc": round(pacc, 4), "kept_acc": round((lab[keep] == yu[keep]).float().mean()
                                                                               .item(), 4), "acc": a}), flush=True)
