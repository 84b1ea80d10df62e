"""Image AUROC of the test sets with the bundle's mu/sd and smoothing, distances from exact vs two-stage search."""
import numpy as np, onnx, collections
from onnx import numpy_helper as nh
from sklearn.metrics import roc_auc_score
rng = np.random.default_rng(0)
def pca(b, d):
    mu = b.mean(0); w, v = np.linalg.eigh(np.cov((b - mu).T)); return v[:, ::-1][:, :d], mu
def gk(sigma=0.5):
    r = max(1, int(np.ceil(3 * sigma))); x = np.arange(-r, r + 1); k = np.exp(-x * x / (2 * sigma * sigma)); return k / k.sum()
k = gk(); r = len(k) // 2
def smooth(m):  # (n, h, w)
    m = np.pad(m, ((0, 0), (r, r), (r, r)), mode="edge")
    m = sum(k[i] * m[:, :, i:i + m.shape[2] - 2 * r] for i in range(len(k)))
    return sum(k[i] * m[:, i:i + m.shape[1] - 2 * r, :] for i in range(len(k)))
configs = [("exact",)] + [(d, G) for d in (24, 32, 48, 64) for G in (1, 2, 4)]
res = collections.defaultdict(list)
for run in ("mb2048", "mb2048s1"):
    for cat in ("metal", "wood", "tissue", "brick"):
        z = np.load(f"/tmp/h18s/f_{run}_{cat}.npz")
        init = {i.name: nh.to_array(i) for i in onnx.load(f"/tmp/a18/{run}/hard_{cat}.bundle/model.onnx").graph.initializer}
        mu_p, sd_p = init["mu"].reshape(32, 32), init["sd"].reshape(32, 32)
        labels = np.array(["/good/" not in p for p in z["paths"]], int)
        F = z["feats"].astype(np.float64); n = len(F); X = F.reshape(-1, 120)
        B = z["bank"].astype(np.float64); K = len(B)
        d2 = (X * X).sum(1)[:, None] - 2 * X @ B.T + (B * B).sum(1)[None]
        for cfg in configs:
            if cfg[0] == "exact":
                dist = np.sqrt(np.maximum(d2.min(1), 0))
            else:
                d, G = cfg; P, mu = pca(B, d)
                perm = rng.permutation(K)
                XP, BP = (X - mu) @ P, (B[perm] - mu) @ P
                c = -2 * XP @ BP.T + ((B[perm] - mu) ** 2).sum(1)[None]
                cand = perm[c.reshape(len(X), G, K // G).argmin(2) + np.arange(G)[None] * (K // G)]
                dist = np.sqrt(((X[:, None, :] - B[cand]) ** 2).sum(2).min(1))
            m = smooth((dist.reshape(n, 32, 32) - mu_p) / sd_p)
            res[cfg].append(roc_auc_score(labels, m.reshape(n, -1).max(1)))
print("config  mean_seed0 mean_seed1  per set")
for cfg, v in res.items():
    v = np.array(v); print(cfg, f"{v[:4].mean():.4f} {v[4:].mean():.4f}", " ".join(f"{x:.3f}" for x in v))
