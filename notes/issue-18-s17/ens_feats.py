"""Frozen features for the multi-trunk study: VARIANT SIZE BLUR -> cache test + draws 0,1 at 100/class (+2 aug copies)."""
import sys, time, os
from pathlib import Path
import numpy as np, torch, cv2
sys.path.insert(0, "/work/main/bench")
import classify as bench
from host import resize_to, to_rgb8
from loupe_trainer.classify.engine import ClassNet, pooled_features
from loupe_trainer.classify.augment import Augment
from loupe_trainer.backbone import build_backbone, stage_channels
torch.set_num_threads(1)
variant, size, blur = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
FD = Path("/tmp/s17/feats"); FD.mkdir(parents=True, exist_ok=True)
tag = f"{variant}-{size}-b{blur:g}"
torch.manual_seed(0)
net = ClassNet(10, pooling="grid", pretrained=False).eval()
net.backbone = build_backbone(variant=variant); net.backbone.fc = torch.nn.Identity()
net.channels = sum(stage_channels(s, variant) for s in net.stage_names)
def prep(imgs):
    x = np.stack([resize_to(to_rgb8(im), (size, size)) for im in imgs])
    if blur > 0:
        x = np.stack([cv2.GaussianBlur(a, (0, 0), blur) for a in x])
    return x
xtr, ytr = bench.read_idx("train-images-idx3-ubyte"), bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
xte = bench.read_idx("t10k-images-idx3-ubyte")
ft = FD / f"test-{tag}.npy"
if not ft.exists():
    t = time.process_time()
    np.save(ft, pooled_features(net, prep(xte)).numpy().astype(np.float32)); print(tag, "test", time.process_time() - t, flush=True)
for seed in (0, 1):
    fp = FD / f"tr-s{seed}-{tag}.npy"
    if fp.exists():
        continue
    rng = np.random.default_rng(seed)
    order = {c: rng.permutation(np.flatnonzero(ytr == c)) for c in range(10)}
    sel = np.concatenate([order[c][:100] for c in range(10)])
    x = np.stack([resize_to(to_rgb8(im), (size, size)) for im in xtr[sel]])
    arng = np.random.default_rng(100 + seed); aug = Augment()
    views = [x] + [aug(x, arng) for _ in range(4)]
    if blur > 0:
        views = [np.stack([cv2.GaussianBlur(a, (0, 0), blur) for a in v]) for v in views]
    np.save(fp, torch.stack([pooled_features(net, v) for v in views]).numpy().astype(np.float32))
    np.save(FD / f"y-s{seed}.npy", ytr[sel])
    print(tag, "draw", seed, flush=True)
