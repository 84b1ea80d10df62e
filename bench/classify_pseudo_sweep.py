"""Feasibility of using unlabelled images (issue 18 item 3): self-training of the linear probe on frozen features.

The bench draw (seed 0, N/class labelled images), U further training images without their labels, scored on the
first 5000 test images. Lite0 stages 4-6 at 96 px, grid pooling, 2 augmented copies (the trainer's defaults):
probe on the labelled images -> pseudo-label the unlabelled ones -> keep the most confident share per predicted
class -> refit the probe on labelled + pseudo-labelled features; two rounds.

    OMP_NUM_THREADS=1 .venv/bin/python bench/classify_pseudo_sweep.py 100 5000
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import classify as bench  # noqa: E402
from host import resize_to, to_rgb8  # noqa: E402
from loupe_trainer.backbone import to_tensor  # noqa: E402
from loupe_trainer.classify.augment import Augment  # noqa: E402
from loupe_trainer.classify.engine import ClassNet, _probe_wd, fit_linear  # noqa: E402

torch.set_num_threads(1)
per, n_u = int(sys.argv[1]), int(sys.argv[2])
xtr, ytr = bench.read_idx("train-images-idx3-ubyte"), bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
xte, yte = bench.read_idx("t10k-images-idx3-ubyte"), bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64)
rng = np.random.default_rng(0)
order = {c: rng.permutation(np.flatnonzero(ytr == c)) for c in range(10)}
sel = np.concatenate([order[c][:per] for c in range(10)])
rest = np.setdiff1d(np.arange(len(ytr)), sel)
uns = np.random.default_rng(1).choice(rest, n_u, replace=False)
prep = lambda a: np.stack([resize_to(to_rgb8(im), (96, 96)) for im in a])  # noqa: E731
net = ClassNet(10, pooling="grid").eval()


@torch.no_grad()
def feats(imgs):
    return torch.cat([net.pool(net.features(to_tensor(imgs[s:s + 100]))) for s in range(0, len(imgs), 100)])


t = time.process_time()
x, y = prep(xtr[sel]), ytr[sel]
aug, r = Augment(), np.random.default_rng(0)
FL = torch.cat([feats(c) for c in [x, aug(x, r), aug(x, r)]])
YL = torch.from_numpy(y).repeat(3)
FU = feats(prep(xtr[uns]))
FT = feats(prep(xte[:5000]))
yt = yte[:5000]
print("features cpu s", round(time.process_time() - t, 1), flush=True)


def fit(f, lab, n):
    head = torch.nn.Linear(f.shape[1], 10)
    fit_linear(head, f, lab, _probe_wd(n), 0.1)
    return head


head = fit(FL, YL, len(x))
with torch.no_grad():
    acc0 = float((head(FT).argmax(1).numpy() == yt).mean())
    print(json.dumps({"per": per, "unlabelled": n_u, "round": 0, "acc": round(acc0, 4)}), flush=True)
for keep in (0.5, 1.0):
    h = head
    for rnd in (1, 2):
        with torch.no_grad():
            p = torch.softmax(h(FU), 1)
        conf, lab = p.max(1)
        idx = []
        for c in range(10):  # the most confident share of each predicted class (keeps the classes balanced)
            m = torch.nonzero(lab == c).flatten()
            idx.append(m[conf[m].argsort(descending=True)[:max(1, int(len(m) * keep))]])
        idx = torch.cat(idx)
        pl_acc = float((lab[idx].numpy() == ytr[uns][idx.numpy()]).mean())
        h = fit(torch.cat([FL, FU[idx]]), torch.cat([YL, lab[idx]]), len(x) + len(idx))
        with torch.no_grad():
            acc = float((h(FT).argmax(1).numpy() == yt).mean())
        print(json.dumps({"per": per, "unlabelled": n_u, "keep": keep, "round": rnd, "pseudo_labels": len(idx),
                          "pseudo_label_acc": round(pl_acc, 4), "acc": round(acc, 4),
                          "cpu_s": round(time.process_time() - t, 1)}), flush=True)
