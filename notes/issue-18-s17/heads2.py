import sys, numpy as np, torch, time
sys.path.insert(0, "/work/main/bench")
import classify as bench
from sklearn.svm import SVC
from sklearn.decomposition import PCA
torch.set_num_threads(1)
FD = "/tmp/s17/feats"
yte = bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64)
tags = sys.argv[1].split("+")
for per in (100, 10):
  for seed in (0, 1):
    idx = np.concatenate([np.arange(c * 100, c * 100 + per) for c in range(10)])
    y = np.load(f"{FD}/y-s{seed}.npy")[idx]
    tr = np.concatenate([np.load(f"{FD}/tr-s{seed}-{t}.npy")[:3, idx] for t in tags], -1)
    te = np.concatenate([np.load(f"{FD}/test-{t}.npy") for t in tags], -1)
    tr = tr.reshape(-1, tr.shape[-1]); yy = np.tile(y, 3)
    mu, sd = tr.mean(0), tr.std(0) + 1e-3
    z, zt = (tr - mu) / sd, (te - mu) / sd
    for C in (1.0, 10.0):
        t = time.process_time()
        m = SVC(C=C, kernel="rbf", gamma="scale").fit(z, yy)
        print(f"per {per} seed {seed} svc C{C}: {(m.predict(zt) == yte).mean():.4f} ({time.process_time()-t:.0f}s)", flush=True)
