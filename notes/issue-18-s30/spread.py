"""spread.py PER SEED NU: label spreading over a kNN graph of the frozen pooled features (labelled + unlabelled
images), then the probe on the labelled images and the unlabelled ones with their spread labels (issue 18, session 30;
the features of frozen.py)."""
import json
import sys

import torch

from frozen import accuracy, features, probe
from loupe_trainer.classify.engine import pseudo_labelled

PER, SEED, NU = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ftr, y, fu, yu, fte, yte = features(PER, SEED, NU)
fl, yl = ftr.flatten(0, 1), y.repeat(len(ftr))


# graph over the unaugmented labelled images and the unlabelled ones: standardised, PCA, cosine kNN
z = torch.cat([ftr[0], fu])
z = (z - z.mean(0)) / (z.std(0) + 1e-3)
torch.manual_seed(0)   # pca_lowrank is randomised
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
        lab = Fm[nl:].argmax(1)
        pacc = (lab == yu).float().mean().item()
        for share in (0.5, 1.0):
            keep = torch.from_numpy(pseudo_labelled(Fm[nl:].numpy(), share))
            a = accuracy(probe(torch.cat([fl, fu[keep]]), torch.cat([yl, lab[keep]]), len(yl) + len(keep)), fte, yte)
            print(json.dumps({"per": PER, "seed": SEED, "nu": NU, "k": k, "alpha": alpha, "share": share,
                              "spread_acc": round(pacc, 4), "kept_acc": round((lab[keep] == yu[keep]).float().mean()
                                                                               .item(), 4), "acc": a}), flush=True)
