"""(Session 18: session 17's shift_study.py, global and grid 3 heads and their logit average, 10/class, Lite0.)
Position-noise check for the pooling choice: FMNIST items pasted at random places on a 64 px canvas
(position carries no class information). Frozen Lite0/Lite2 probes with global, grid 3, grid 6 pooling."""
import sys, numpy as np, torch
sys.path.insert(0, "/work/main/bench")
import classify as bench
from host import resize_to, to_rgb8
from loupe_trainer.classify.engine import ClassNet, fit_linear, _probe_wd, pool_matrix
from loupe_trainer.classify.augment import Augment
from loupe_trainer.backbone import build_backbone, to_tensor
torch.set_num_threads(1)
variant = sys.argv[1]
xtr, ytr = bench.read_idx("train-images-idx3-ubyte"), bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
xte, yte = bench.read_idx("t10k-images-idx3-ubyte")[:3000], bench.read_idx("t10k-labels-idx1-ubyte")[:3000].astype(np.int64)
def scatter(imgs, rng, canvas=64):
    out = np.zeros((len(imgs), canvas, canvas), np.uint8)
    for i, im in enumerate(imgs):
        r, c = rng.integers(0, canvas - 28 + 1, 2)
        out[i, r:r + 28, c:c + 28] = im
    return out
net = ClassNet(10, pooling="grid", pretrained=False).eval()
net.backbone = build_backbone(variant=variant); net.backbone.fc = torch.nn.Identity()
@torch.no_grad()
def maps(x):
    x = np.stack([resize_to(to_rgb8(im), (96, 96)) for im in x])
    return torch.cat([net.features(to_tensor(x[s:s + 64])) for s in range(0, len(x), 64)])
def pooled(m, g):
    P = torch.from_numpy(pool_matrix(6, 6, "global" if g == 1 else "grid", g).astype(np.float32))
    return torch.matmul(m.flatten(2), P).flatten(1)
Mte = maps(scatter(xte, np.random.default_rng(7)))
for per in (10,):
    for seed in (0, 1, 2):
        rng = np.random.default_rng(seed)
        order = {c: rng.permutation(np.flatnonzero(ytr == c)) for c in range(10)}
        sel = np.concatenate([order[c][:per] for c in range(10)])
        x = scatter(xtr[sel], np.random.default_rng(50 + seed)); y = torch.from_numpy(ytr[sel])
        x96 = x  # augmented copies as the trainer makes them (on the resized image)
        arng = np.random.default_rng(100 + seed); aug = Augment()
        xs = np.stack([resize_to(to_rgb8(im), (96, 96)) for im in x])
        views = [xs] + [aug(xs, arng) for _ in range(2)]
        with torch.no_grad():
            Ms = [torch.cat([net.features(to_tensor(v[s:s + 64])) for s in range(0, len(v), 64)]) for v in views]
        res, lg = {}, {}
        for g in (1, 3):
            tr = torch.cat([pooled(m, g) for m in Ms])
            fc = torch.nn.Linear(tr.shape[1], 10)
            fit_linear(fc, tr, y.repeat(3), _probe_wd(len(y)), 0.1)
            with torch.no_grad():
                lg[g] = fc(pooled(Mte, g))
                res[g] = round(float((lg[g].argmax(1).numpy() == yte).mean()), 4)
        res["avg"] = round(float(((lg[1] + lg[3]).argmax(1).numpy() == yte).mean()), 4)
        print(variant, per, seed, res, flush=True)
