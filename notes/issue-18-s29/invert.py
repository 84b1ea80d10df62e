"""invert.py PER [SEED]: does a photometric second view help the classifier's frozen probe? Few-shot Fashion-MNIST
(the bench's draw SEED, PER images per class), the classifier's frozen Lite0 maps (stages 4-6 at 96 px, the trainer's
``ClassNet.features``; the images plus 2 augmented copies, the trainer's ``Augment``), grid-pooled 3 x 3, linear probes
(``fit_linear``, ``_probe_wd``, smoothing 0.1), on the full 10k test set, of: the images as they are (the product's
probe), their negatives (255 - x: dark parts on a light ground, as photographs mostly are), both views' pooled
features side by side, and the two probes' probabilities averaged (issue 18, session 29; maps cached in /tmp/s29/cls)."""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import classify as bench  # noqa: E402
from loupe_trainer.classify.augment import Augment  # noqa: E402
from loupe_trainer.classify.engine import ClassNet, _probe_wd, fit_linear, pooled_features  # noqa: E402

torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", 1)))
CACHE = Path(__import__("os").environ.get("S29_CACHE", "/tmp/s29/cls"))
CACHE.mkdir(parents=True, exist_ok=True)
PER, SEED = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0


def pooled_maps(x):
    return pooled_features(net, x, batch=200).numpy()


torch.manual_seed(0)
net = ClassNet(10, pooling="grid").eval()
xtr, ytr = bench.read_idx("train-images-idx3-ubyte"), bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
sel = bench.draw(ytr, PER, SEED)
x = bench.rgb_images(xtr[sel])
arng = np.random.default_rng(SEED)
copies = [x] + [Augment()(x, arng) for _ in range(2)]
xte = bench.rgb_images(bench.read_idx("t10k-images-idx3-ubyte"))
feats = {}
for view in ("orig", "neg"):
    f = (lambda a: a) if view == "orig" else (lambda a: 255 - a)
    ftr, fte = CACHE / f"tr-{view}-s{SEED}-{PER}.npy", CACHE / f"te-{view}.npy"
    if not ftr.exists():
        np.save(ftr, np.stack([pooled_maps(f(c)) for c in copies]))
    if not fte.exists():
        np.save(fte, pooled_maps(f(xte)))
    feats[view] = (torch.from_numpy(np.load(ftr)), torch.from_numpy(np.load(fte)))
yte = torch.from_numpy(bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64))
y = torch.from_numpy(ytr[sel])


def probe(tr, te):
    fc = torch.nn.Linear(tr.shape[-1], 10)
    fit_linear(fc, tr.flatten(0, 1), y.repeat(len(tr)), _probe_wd(len(y)), 0.1)
    with torch.no_grad():
        return torch.softmax(fc(te), 1)


probs = {}
for name, (tr, te) in [("orig", feats["orig"]), ("neg", feats["neg"]),
                       ("concat", (torch.cat([feats["orig"][0], feats["neg"][0]], -1),
                                   torch.cat([feats["orig"][1], feats["neg"][1]], -1)))]:
    t0 = time.perf_counter()
    probs[name] = probe(tr, te)
    print(json.dumps({"per": PER, "seed": SEED, "probe": name, "dim": tr.shape[-1],
                      "acc": round((probs[name].argmax(1) == yte).float().mean().item(), 4),
                      "s": round(time.perf_counter() - t0, 1)}), flush=True)
avg = (probs["orig"] + probs["neg"]) / 2
print(json.dumps({"per": PER, "seed": SEED, "probe": "mean(orig, neg)",
                  "acc": round((avg.argmax(1) == yte).float().mean().item(), 4)}), flush=True)
