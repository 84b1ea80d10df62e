"""The frozen Lite2 probe (session 17's cache, /tmp/s17/feats, ens_feats.py lite2 96 0) averaged with the product's
bundle and the scratch CNN (this session's probs in /tmp/s24/c): how far does a three-member ensemble go at
100/class? Draws 0, 1.    OMP_NUM_THREADS=1 .venv/bin/python notes/issue-18-s24/ens3.py"""
import sys

import numpy as np
import torch

sys.path.insert(0, "/work/main/bench")
import classify as bench  # noqa: E402
from loupe_trainer.classify.engine import _probe_wd, fit_linear  # noqa: E402

torch.set_num_threads(1)
FD, C = "/tmp/s17/feats", "/tmp/s24/c"
y = bench.read_idx("t10k-labels-idx1-ubyte")
acc = lambda s: round(float((s.argmax(1) == y).mean()), 4)  # noqa: E731
for seed in (0, 1):
    F = torch.from_numpy(np.load(f"{FD}/tr-s{seed}-lite2-96-b0.npy")[:3])
    yt = torch.from_numpy(np.load(f"{FD}/y-s{seed}.npy"))
    fc = torch.nn.Linear(F.shape[-1], 10)
    fit_linear(fc, F.reshape(-1, F.shape[-1]), yt.repeat(3), _probe_wd(len(yt)), 0.1)
    with torch.no_grad():
        l2 = torch.log_softmax(fc(torch.from_numpy(np.load(f"{FD}/test-lite2-96-b0.npy"))), 1).double().numpy()
    lb = np.log(np.load(f"{C}/probs-base-s{seed}-100.npy") + 1e-9)
    ls = np.log(np.load(f"{C}/probs-scratcha-s{seed}-100.npy") + 1e-9)
    print(f"draw {seed}: base {acc(lb)} lite2 {acc(l2)} scratch {acc(ls)} | base|lite2 {acc(lb + l2)} "
          f"base|scratch(0.3) {acc(0.7 * lb + 0.3 * ls)} | base|lite2|scratch: "
          + " ".join(f"w{w} {acc((1 - w) / 2 * (lb + l2) + w * ls)}" for w in (0.2, 0.3, 0.4)), flush=True)
