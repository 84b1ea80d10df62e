"""Probe on cached frozen features: single trunks, concatenations, logit averages. Args: tag,tag+tag,... ."""
import sys, numpy as np, torch
sys.path.insert(0, "/work/main/bench")
import classify as bench
from loupe_trainer.classify.engine import fit_linear, _probe_wd
torch.set_num_threads(1)
FD = "/tmp/s17/feats"
yte = torch.from_numpy(bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64))
copies = 2
def load(tag, seed, per):
    F = np.load(f"{FD}/tr-s{seed}-{tag}.npy")[:1 + copies]
    idx = np.concatenate([np.arange(c * 100, c * 100 + per) for c in range(10)])
    return torch.from_numpy(F[:, idx]), torch.from_numpy(np.load(f"{FD}/test-{tag}.npy"))
def probe(tags, seed, per):
    y = torch.from_numpy(np.load(f"{FD}/y-s{seed}.npy"))
    idx = np.concatenate([np.arange(c * 100, c * 100 + per) for c in range(10)])
    y = y[idx]
    parts = [load(t, seed, per) for t in tags]
    tr = torch.cat([p[0] for p in parts], -1); te = torch.cat([p[1] for p in parts], -1)
    tr = tr.reshape(-1, tr.shape[-1])
    fc = torch.nn.Linear(tr.shape[1], 10)
    fit_linear(fc, tr, y.repeat(1 + copies), _probe_wd(len(y)), 0.1)
    with torch.no_grad():
        return torch.log_softmax(fc(te), 1)
for per in (10, 100):
    for seed in (0, 1):
        for spec in sys.argv[1].split(","):
            if "|" in spec:   # late fusion: mean log-probs of separate probes
                lp = sum(probe([t], seed, per) for t in spec.split("|"))
            else:
                lp = probe(spec.split("+"), seed, per)
            acc = (lp.argmax(1) == yte).float().mean().item()
            print(f"per {per} seed {seed} {spec}: {acc:.4f}", flush=True)
