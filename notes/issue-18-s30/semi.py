"""semi.py PER SEED NU [ROUNDS]: can unlabelled images from the same line lift the classifier's frozen probe? Few-shot
Fashion-MNIST (the bench's draw SEED, PER labelled images per class, plus the trainer's 2 augmented copies), NU further
training images with their labels hidden (drawn with default_rng(1000 + SEED) from the rest of the train split), the
classifier's frozen Lite0 maps (stages 4-6 at 96 px) grid-pooled 3 x 3, linear probes (``fit_linear``, ``_probe_wd``,
smoothing 0.1) on the full 10k test set (issue 18, session 30; features cached in /tmp/s30/cls). Rows:
the product's probe; self-training (pseudo-labels of the most confident share of each predicted class, refit
(shares 0.25-1; ROUNDS refits, each teacher the last head); and the frozen ceiling: the same probe with the NU images' true labels."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import classify as bench  # noqa: E402
from loupe_trainer.classify.augment import Augment  # noqa: E402
from loupe_trainer.classify.engine import ClassNet, _probe_wd, fit_linear, pool_matrix  # noqa: E402
from loupe_trainer.backbone import to_tensor  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
CACHE = Path("/tmp/s30/cls")
CACHE.mkdir(parents=True, exist_ok=True)
PER, SEED, NU = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ROUNDS = int(sys.argv[4]) if len(sys.argv) > 4 else 1


@torch.no_grad()
def pooled_maps(net, x, P, batch=200):
    return np.concatenate([torch.matmul(net.features(to_tensor(x[s:s + batch])).flatten(2), P).flatten(1).numpy()
                           for s in range(0, len(x), batch)])


def cached(name, make):
    f = CACHE / f"{name}.npy"
    if not f.exists():
        np.save(f, make())
    return torch.from_numpy(np.load(f))


torch.manual_seed(0)
net = ClassNet(10, pooling="grid").eval()
with torch.no_grad():
    h, w = net.features(to_tensor(bench.rgb_images(np.zeros((1, 28, 28), np.uint8)))).shape[2:]
P = torch.from_numpy(pool_matrix(h, w, "grid", 3))
xtr, ytr = bench.read_idx("train-images-idx3-ubyte"), bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
rng = np.random.default_rng(SEED)
order = {c: rng.permutation(np.flatnonzero(ytr == c)) for c in range(10)}
sel = np.concatenate([order[c][:PER] for c in range(10)])
rest = np.setdiff1d(np.arange(len(ytr)), sel)
unl = np.random.default_rng(1000 + SEED).choice(rest, NU, replace=False)
x = bench.rgb_images(xtr[sel])
arng = np.random.default_rng(SEED)
copies = [x] + [Augment()(x, arng) for _ in range(2)]
ftr = cached(f"tr-s{SEED}-{PER}", lambda: np.stack([pooled_maps(net, c, P) for c in copies]))
fu = cached(f"u-s{SEED}-{PER}-{NU}", lambda: pooled_maps(net, bench.rgb_images(xtr[unl]), P))
fte = cached("te", lambda: pooled_maps(net, bench.rgb_images(bench.read_idx("t10k-images-idx3-ubyte")), P))
yte = torch.from_numpy(bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64))
y, yu = torch.from_numpy(ytr[sel]), torch.from_numpy(ytr[unl])
fl, yl = ftr.flatten(0, 1), y.repeat(len(ftr))


def probe(f, lab):
    fc = torch.nn.Linear(f.shape[-1], 10)
    fit_linear(fc, f, lab, _probe_wd(len(lab) // (len(ftr) if len(lab) == len(yl) else 1)), 0.1)
    return fc


def acc(fc):
    with torch.no_grad():
        return round((fc(fte).argmax(1) == yte).float().mean().item(), 4)


def line(name, fc, **kw):
    print(json.dumps({"per": PER, "seed": SEED, "nu": NU, "probe": name, "acc": acc(fc), **kw}), flush=True)


fc = probe(fl, yl)
line("labelled only", fc)
line("ceiling: unlabelled with true labels", probe(torch.cat([fl, fu]), torch.cat([yl, yu])))
for share in (0.25, 0.5, 0.75, 1.0):
    head = fc
    for rnd in range(1, ROUNDS + 1):
        with torch.no_grad():
            p = torch.softmax(head(fu), 1)
        conf, lab = p.max(1)
        keep = torch.zeros(len(fu), dtype=torch.bool)
        for c in range(10):
            idx = torch.nonzero(lab == c).flatten()
            keep[idx[conf[idx].argsort(descending=True)[:int(np.ceil(share * len(idx)))]]] = True
        head = probe(torch.cat([fl, fu[keep]]), torch.cat([yl, lab[keep]]))
        line(f"self-training, share {share}, round {rnd}", head, kept=int(keep.sum()),
             pseudo_acc=round((lab[keep] == yu[keep]).float().mean().item(), 4))
