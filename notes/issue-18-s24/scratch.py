"""Issue 18, session 24: does a small CNN trained from scratch, averaged with the product's classifier, lift
few-shot Fashion-MNIST?

    OMP_NUM_THREADS=1 .venv/bin/python notes/issue-18-s24/scratch.py PER SEED EPOCHS WIDTH SIZE [TAG]

Draw = bench/classify.py's (seed SEED). The product bundle /tmp/s24/c/model-base-sSEED-PER (made by
bench/classify_sweep.py --work /tmp/s24/c) gives its test probabilities; the scratch CNN is trained on the same
images (no validation split, fixed schedule) and scored on the 10k test set, alone and averaged.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import classify as bench  # noqa: E402
from loupe_trainer.classify.augment import Augment  # noqa: E402


def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Small(nn.Module):
    def __init__(self, n, w=32):
        super().__init__()
        self.f = nn.Sequential(block(3, w), nn.MaxPool2d(2), block(w, 2 * w), nn.MaxPool2d(2), block(2 * w, 4 * w),
                               nn.MaxPool2d(2))
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(4 * w, n)

    def forward(self, x):
        return self.fc(self.drop(self.f(x).mean((2, 3))))


def to_t(x):
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    return (t - 0.5) / 0.25


def main():
    per, seed, epochs, width, size = (int(a) for a in sys.argv[1:6])
    tag = sys.argv[6] if len(sys.argv) > 6 else ""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    xtr, ytr = bench.read_idx("train-images-idx3-ubyte"), bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
    xte, yte = bench.read_idx("t10k-images-idx3-ubyte"), bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64)
    rng = np.random.default_rng(seed)
    order = {c: rng.permutation(np.flatnonzero(ytr == c)) for c in range(10)}
    sel = np.concatenate([order[c][:per] for c in range(10)])
    def prep(x):
        return np.stack([cv2.cvtColor(cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2RGB)
                         for im in x])
    x, y = prep(xtr[sel]), ytr[sel]
    xt = to_t(prep(xte))
    net = Small(10, width)
    aug = Augment()
    bs = 64 if per >= 50 else 32
    steps = max(1, int(np.ceil(len(x) / bs))) * epochs
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    arng = np.random.default_rng(seed + 7)
    t0 = time.process_time()
    for ep in range(epochs):
        net.train()
        perm = arng.permutation(len(x))
        for s in range(0, len(x), bs):
            idx = perm[s:s + bs]
            xb = to_t(aug(x[idx], arng))
            loss = F.cross_entropy(net(xb), torch.from_numpy(y[idx]), label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    train_s = time.process_time() - t0
    net.eval()
    with torch.no_grad():
        lg = torch.cat([net(xt[s:s + 500]) for s in range(0, len(xt), 500)])
        lgf = torch.cat([net(xt[s:s + 500].flip(3)) for s in range(0, len(xt), 500)])
    ps = torch.softmax(lg.double(), 1).numpy()
    psf = torch.softmax(((lg + lgf) / 2).double(), 1).numpy()
    row = {"per": per, "seed": seed, "epochs": epochs, "width": width, "size": size, "tag": tag,
           "scratch": round(float((ps.argmax(1) == yte).mean()), 4),
           "scratch_tta": round(float((psf.argmax(1) == yte).mean()), 4), "train_cpu_s": round(train_s, 1)}
    bp = Path(f"/tmp/s24/c/probs-base-s{seed}-{per}.npy")
    if bp.exists():
        pb = np.load(bp)
        row["base"] = round(float((pb.argmax(1) == yte).mean()), 4)
        for w in (0.3, 0.5):
            row[f"avg{w}"] = round(float((((1 - w) * np.log(pb + 1e-9) + w * np.log(ps + 1e-9)).argmax(1) == yte).mean()), 4)
            row[f"avgp{w}"] = round(float((((1 - w) * pb + w * ps).argmax(1) == yte).mean()), 4)
    np.save(f"/tmp/s24/c/probs-scratch{tag}-s{seed}-{per}.npy", ps)
    print(json.dumps(row), flush=True)
    with open(ROOT / "notes/issue-18-s24/scratch.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
