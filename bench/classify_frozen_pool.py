"""Frozen-trunk pooling granularity (issue 18, session 9): global + k x k cells of the 6 x 6 stage 4-6 map.

    OMP_NUM_THREADS=1 .venv/bin/python bench/classify_frozen_pool.py 1,2,3,0 [PER [KINDS]]
    OMP_NUM_THREADS=1 .venv/bin/python bench/classify_frozen_pool.py 1,2 100 g+3,g+6,g+3+6

KINDS: '+'-joined parts, g = global average, k = the k x k cells (g+3 is the trainer's grid pooling, g+6 a
weight for every map position at 96 px). Test maps cached in $FROZEN_CACHE (default /tmp/loupe-frozen).
"""
import json, os, sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).resolve().parent))
import classify as bench
from host import resize_to, to_rgb8
from loupe_trainer.classify.engine import ClassNet, fit_linear, _probe_wd, pool_matrix
from loupe_trainer.classify.augment import Augment
from loupe_trainer.backbone import to_tensor
torch.set_num_threads(1)
FD = Path(os.environ.get("FROZEN_CACHE", "/tmp/loupe-frozen")); FD.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
net = ClassNet(10, pooling="grid").eval()
def prep(imgs):
    return np.stack([resize_to(to_rgb8(im), (96, 96)) for im in imgs])
@torch.no_grad()
def maps(x, b=100):
    return torch.cat([net.features(to_tensor(x[s:s + b])).flatten(2).half() for s in range(0, len(x), b)])  # [N,384,36]
xtr, ytr = bench.read_idx("train-images-idx3-ubyte"), bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
xte, yte = bench.read_idx("t10k-images-idx3-ubyte"), bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64)
ft = FD / "testmaps.pt"
if not ft.exists():
    t = time.process_time(); torch.save(maps(prep(xte)), ft); print("test maps", time.process_time() - t, flush=True)
Mte = torch.load(ft)
def pm(kind):
    cols = []
    for part in kind.split("+"):
        if part == "g":
            cols.append(pool_matrix(6, 6, "global"))
        else:
            cols.append(pool_matrix(6, 6, "grid", int(part))[:, 1:])
    return torch.from_numpy(np.concatenate(cols, 1))
def pool(m, kind):
    return torch.matmul(m.float(), pm(kind)).flatten(1)
PER = int(sys.argv[2]) if len(sys.argv) > 2 else 10
KINDS = sys.argv[3].split(",") if len(sys.argv) > 3 else ["g+3", "g+2", "g+2+3", "g+6", "g+4", "g+2+4"]
for seed in [int(s) for s in sys.argv[1].split(",")]:
    rng = np.random.default_rng(seed)
    order = {c: rng.permutation(np.flatnonzero(ytr == c)) for c in range(10)}
    sel = np.concatenate([order[c][:PER] for c in range(10)])
    x, y = prep(xtr[sel]), ytr[sel]
    arng = np.random.default_rng(100 + seed)
    aug = Augment()
    M = torch.cat([maps(x)] + [maps(aug(x, arng)) for _ in range(2)])
    res = {}
    for kind in KINDS:
        for wdm in ([1.0, 3.0] if kind in ("g+6", "g+4", "g+2+4") else [1.0]):
            tr, te = pool(M, kind), None
            fc = torch.nn.Linear(tr.shape[1], 10)
            fit_linear(fc, tr, torch.from_numpy(y).repeat(3), _probe_wd(len(y)) * wdm, 0.1)
            ok = 0
            with torch.no_grad():
                for s in range(0, len(Mte), 2000):
                    ok += int((fc(pool(Mte[s:s + 2000], kind)).argmax(1).numpy() == yte[s:s + 2000]).sum())
            res[f"{kind}" + (f"_wd{wdm:g}" if wdm != 1 else "")] = round(ok / len(Mte), 4)
    print(json.dumps({"seed": seed, **res}), flush=True)
    with open(FD / "frozen_pool.jsonl", "a") as f:
        f.write(json.dumps({"seed": seed, "per": PER, **res}) + "\n")
