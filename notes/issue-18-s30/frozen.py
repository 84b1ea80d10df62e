"""The frozen features that session 30's studies (semi.py, spread.py, open.py) share, cached in $S30_CACHE
(default /tmp/s30/cls): the classifier's Lite0 maps (stages 4-6 at 96 px, the product's ``ClassNet``) grid-pooled 3 x 3
(the product's ``pooled_features``) of the bench's draw SEED (PER labelled images per class, plus the trainer's 2
augmented copies), of NU further training images whose labels the studies hide (``bench/classify.py``'s
``unlabelled_draw``), and of the full 10k test set; and the trainer's linear probe on them."""
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import classify as bench  # noqa: E402
from loupe_trainer.classify.augment import Augment  # noqa: E402
from loupe_trainer.classify.engine import ClassNet, _probe_wd, fit_linear, pooled_features  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
CACHE = Path(os.environ.get("S30_CACHE", "/tmp/s30/cls"))


def features(per: int, seed: int, nu: int):
    """(ftr [3, N, D]: the labelled images and their 2 augmented copies, y [N], fu [NU, D], yu [NU], fte [10k, D],
    yte [10k]), torch tensors; the labels of the unlabelled images are for scoring only."""
    CACHE.mkdir(parents=True, exist_ok=True)
    xtr, ytr = bench.read_idx("train-images-idx3-ubyte"), bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
    sel = bench.draw(ytr, per, seed)
    unl = bench.unlabelled_draw(len(ytr), sel, nu, seed)
    net = None

    def pooled(x):
        nonlocal net
        if net is None:
            torch.manual_seed(0)
            net = ClassNet(10, pooling="grid").eval()
        return pooled_features(net, x, batch=200).numpy()

    def cached(name, make):
        f = CACHE / f"{name}.npy"
        if not f.exists():
            np.save(f, make())
        return torch.from_numpy(np.load(f))

    def copies():
        x, arng = bench.rgb_images(xtr[sel]), np.random.default_rng(seed)
        return np.stack([pooled(c) for c in [x] + [Augment()(x, arng) for _ in range(2)]])

    ftr = cached(f"tr-s{seed}-{per}", copies)
    fu = cached(f"u-s{seed}-{per}-{nu}", lambda: pooled(bench.rgb_images(xtr[unl])))
    fte = cached("te", lambda: pooled(bench.rgb_images(bench.read_idx("t10k-images-idx3-ubyte"))))
    yte = torch.from_numpy(bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64))
    return ftr, torch.from_numpy(ytr[sel]), fu, torch.from_numpy(ytr[unl]), fte, yte


def probe(f: torch.Tensor, labels: torch.Tensor, n: int, n_out: int = 10) -> torch.nn.Linear:
    """The trainer's probe (``fit_linear``, smoothing 0.1) with the L2 strength ``_probe_wd(n)``."""
    fc = torch.nn.Linear(f.shape[-1], n_out)
    fit_linear(fc, f, labels, _probe_wd(n), 0.1)
    return fc


def accuracy(fc: torch.nn.Linear, f: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return round((fc(f).argmax(1) == y).float().mean().item(), 4)
