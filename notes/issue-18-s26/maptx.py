"""maptx.py PER [SEED]: few-shot Fashion-MNIST (the bench's draw SEED, PER images per class), the classifier's frozen
Lite0 maps (stages 4-6 at 96 px, the trainer's ``ClassNet.features``; the images plus 2 augmented copies, the trainer's
``Augment``), and linear probes (``fit_linear``, ``_probe_wd``, smoothing 0.1) on the full 10k test set under
transforms applied to the map *before* the grid pooling, so that the head stays a class activation map (issue 18,
session 26; one thread). Maps cached in /tmp/s26/cls."""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import classify as bench  # noqa: E402
from loupe_trainer.classify.augment import Augment  # noqa: E402
from loupe_trainer.classify.engine import ClassNet, _probe_wd, fit_linear, pool_matrix  # noqa: E402
from loupe_trainer.backbone import to_tensor  # noqa: E402

torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", 1)))
CACHE = Path("/tmp/s26/cls")
CACHE.mkdir(parents=True, exist_ok=True)
PER, SEED = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0


@torch.no_grad()
def maps(net, x, batch=200):
    return np.concatenate([net.features(to_tensor(x[s:s + batch])).numpy().astype(np.float16)
                           for s in range(0, len(x), batch)])


torch.manual_seed(0)
net = ClassNet(10, pooling="grid").eval()
xtr, ytr = bench.read_idx("train-images-idx3-ubyte"), bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
rng = np.random.default_rng(SEED)
order = {c: rng.permutation(np.flatnonzero(ytr == c)) for c in range(10)}
sel = np.concatenate([order[c][:PER] for c in range(10)])
ftr = CACHE / f"tr-s{SEED}-{PER}.npy"
if not ftr.exists():
    x = bench.rgb_images(xtr[sel])
    arng = np.random.default_rng(SEED)
    np.save(ftr, np.stack([maps(net, c) for c in [x] + [Augment()(x, arng) for _ in range(2)]]))
fte = CACHE / "test.npy"
if not fte.exists():
    np.save(fte, maps(net, bench.rgb_images(bench.read_idx("t10k-images-idx3-ubyte"))))
yte = torch.from_numpy(bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64))
TR, TE = np.load(ftr), np.load(fte, mmap_mode="r")
y = torch.from_numpy(ytr[sel])
K, h, w = TE.shape[1:]
P = torch.from_numpy(pool_matrix(h, w, "grid", 3))
g = torch.Generator().manual_seed(1)
RP = {d: torch.randn(K, d, generator=g) / K ** 0.5 for d in (1024, 2048)}


def tx(m, name):
    """[N, K, h, w] float32 -> transformed map [N, K', h, w]."""
    if name == "id":
        return m
    if name == "ssqrt":
        return m.sign() * m.abs().sqrt()
    if name.startswith("rf"):          # random 1x1 projection + ReLU: a kernel feature map per position
        d = int(name[2:])
        z = torch.einsum("nkhw,kd->ndhw", m, RP[d])
        return torch.relu(z)
    if name.startswith("cat-rf"):
        return torch.cat([m, tx(m, name[4:])], 1)
    raise ValueError(name)


def pooled(arr, name, batch=500):
    out = []
    for s in range(0, len(arr), batch):
        m = tx(torch.from_numpy(np.asarray(arr[s:s + batch], np.float32)), name)
        out.append(torch.matmul(m.flatten(2), P).flatten(1))
    return torch.cat(out)


for name in sys.argv[3].split(",") if len(sys.argv) > 3 else ["id", "ssqrt", "rf1024", "rf2048", "cat-rf2048"]:
    t0 = time.perf_counter()
    tr = torch.cat([pooled(c, name) for c in TR])
    te = pooled(TE, name)
    fc = torch.nn.Linear(tr.shape[1], 10)
    fit_linear(fc, tr, y.repeat(len(TR)), _probe_wd(len(y)), 0.1)
    with torch.no_grad():
        acc = (fc(te).argmax(1) == yte).float().mean().item()
    print(json.dumps({"per": PER, "seed": SEED, "tx": name, "dim": tr.shape[1], "acc": round(acc, 4),
                      "s": round(time.perf_counter() - t0, 1)}), flush=True)
