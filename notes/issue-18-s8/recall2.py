import numpy as np, sys, collections
rng = np.random.default_rng(0)
def pca(b, d):
    mu = b.mean(0); w, v = np.linalg.eigh(np.cov((b - mu).T)); return v[:, ::-1][:, :d], mu
agg = collections.defaultdict(list)
for run in ("mb2048", "mb2048s1"):
    for cat in ("metal", "wood", "tissue", "brick"):
        z = np.load(f"/tmp/h18s/f_{run}_{cat}.npz")
        X = z["feats"].reshape(-1, 120).astype(np.float64)[::4]
        B = z["bank"].astype(np.float64)
        d2 = (X * X).sum(1)[:, None] - 2 * X @ B.T + (B * B).sum(1)[None]
        ex = np.sqrt(np.maximum(d2.min(1), 0))
        K = len(B)
        for d in (24, 32, 48):
            P, mu = pca(B, d); XP, BP = (X - mu) @ P, (B - mu) @ P
            for bias in ("proj", "full"):
                bb = (BP * BP).sum(1) if bias == "proj" else ((B - mu) ** 2).sum(1)
                c = -2 * XP @ BP.T + bb[None]
                for G in (1, 4, 8):
                    perm = rng.permutation(K)
                    cg = c[:, perm].reshape(len(X), G, K // G)
                    cand = perm[cg.argmin(2) + np.arange(G)[None] * (K // G)]
                    dd = np.sqrt(np.maximum(((X[:, None, :] - B[cand]) ** 2).sum(2).min(1), 0))
                    rel = dd / np.maximum(ex, 1e-9) - 1
                    agg[(d, bias, G)].append(((rel < 1e-6).mean(), np.percentile(rel, 99), rel.max(), rel.mean()))
print("d bias G  exact_frac  p99_rel  max_rel  mean_rel  (mean over 8 sets)")
for k, v in sorted(agg.items()):
    v = np.array(v); print(k, " ".join(f"{x:.4f}" for x in v.mean(0)), f" worst exact_frac {v[:,0].min():.4f}")
