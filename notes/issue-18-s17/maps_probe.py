"""Probe on cached maps. Args: SPECS (tag:pool[+tag:pool], comma list) DRAWS PERS"""
import sys, numpy as np, torch, json
sys.path.insert(0, "/work/main/bench")
import classify as bench
from loupe_trainer.classify.engine import fit_linear, _probe_wd, pool_matrix
torch.set_num_threads(1)
FD = "/tmp/s17/maps"
yte = torch.from_numpy(bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64))
_cache = {}
def pooled(arr, pool):
    n = arr.shape[:-3]; K, h, w = arr.shape[-3:]
    P = torch.from_numpy(pool_matrix(h, w, "global" if pool == 1 else "grid", pool).astype(np.float32))
    out = []
    flat = arr.reshape(-1, K, h * w)
    for s in range(0, flat.shape[0], 2000):
        out.append(torch.matmul(torch.from_numpy(flat[s:s+2000].astype(np.float32)), P).flatten(1))
    return torch.cat(out).reshape(*n, -1)
def test_feats(tag, pool):
    k = ("te", tag, pool)
    if k not in _cache:
        _cache[k] = pooled(np.load(f"{FD}/test-{tag}.npy", mmap_mode="r"), pool)
    return _cache[k]
specs, draws, pers = sys.argv[1].split(","), [int(s) for s in sys.argv[2].split(",")], [int(s) for s in sys.argv[3].split(",")]
for per in pers:
    for seed in draws:
        idx = np.concatenate([np.arange(c * 100, c * 100 + per) for c in range(10)])
        y = torch.from_numpy(np.load(f"{FD}/y-s{seed}.npy")[idx])
        for spec in specs:
            parts = [p.split(":") for p in spec.split("+")]
            tr = torch.cat([pooled(np.load(f"{FD}/tr-s{seed}-{t}.npy", mmap_mode="r")[:, idx], int(g)) for t, g in parts], -1)
            te = torch.cat([test_feats(t, int(g)) for t, g in parts], -1)
            tr = tr.reshape(-1, tr.shape[-1])
            fc = torch.nn.Linear(tr.shape[1], 10)
            fit_linear(fc, tr, y.repeat(3), _probe_wd(len(y)), 0.1)
            with torch.no_grad():
                acc = (fc(te).argmax(1) == yte).float().mean().item()
            print(json.dumps({"per": per, "seed": seed, "spec": spec, "acc": round(acc, 4)}), flush=True)
