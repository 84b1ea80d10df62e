"""Session 18: the frozen probe of session 17 (maps_probe.py; cached Lite0 96 px stage maps in /tmp/s17/maps), with
the logits of a global-pooling head and a grid-pooling head averaged. Args: TAG DRAWS PERS [GRID]
Prints per draw: global, grid, the logit average, the probability average (full 10k test set)."""
import sys, numpy as np, torch, json
sys.path.insert(0, "/work/main/bench")
sys.path.insert(0, "/work/main/notes/issue-18-s17")
import classify as bench
from loupe_trainer.classify.engine import fit_linear, _probe_wd, pool_matrix
torch.set_num_threads(1)
FD = "/tmp/s17/maps"
tag, draws, pers = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], [int(s) for s in sys.argv[3].split(",")]
grid = int(sys.argv[4]) if len(sys.argv) > 4 else 3
yte = torch.from_numpy(bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64))
def pooled(arr, pool):
    n = arr.shape[:-3]; K, h, w = arr.shape[-3:]
    P = torch.from_numpy(pool_matrix(h, w, "global" if pool == 1 else "grid", pool).astype(np.float32))
    flat = arr.reshape(-1, K, h * w)
    out = [torch.matmul(torch.from_numpy(flat[s:s + 2000].astype(np.float32)), P).flatten(1)
           for s in range(0, flat.shape[0], 2000)]
    return torch.cat(out).reshape(*n, -1)
te_maps = np.load(f"{FD}/test-{tag}.npy", mmap_mode="r")
te = {g: pooled(te_maps, g) for g in (1, grid)}
for per in pers:
    for seed in draws:
        idx = np.concatenate([np.arange(c * 100, c * 100 + per) for c in range(10)])
        y = torch.from_numpy(np.load(f"{FD}/y-s{seed}.npy")[idx])
        maps = np.load(f"{FD}/tr-s{seed}-{tag}.npy", mmap_mode="r")[:, idx]
        logits = {}
        for g in (1, grid):
            tr = pooled(maps, g).reshape(-1, te[g].shape[1])
            fc = torch.nn.Linear(tr.shape[1], 10)
            fit_linear(fc, tr, y.repeat(maps.shape[0]), _probe_wd(len(y)), 0.1)
            with torch.no_grad():
                logits[g] = fc(te[g])
        acc = lambda z: round((z.argmax(1) == yte).float().mean().item(), 4)
        row = {"per": per, "seed": seed, "tag": tag, "grid": grid, "global": acc(logits[1]), "gridacc": acc(logits[grid]),
               "logit_avg": acc(logits[1] + logits[grid]),
               "prob_avg": acc(logits[1].softmax(1) + logits[grid].softmax(1))}
        print(json.dumps(row), flush=True)
