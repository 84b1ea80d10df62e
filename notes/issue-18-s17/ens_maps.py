"""Unpooled frozen stage 4-6 maps (float16): VARIANT SIZE DRAWS -> test + draws at 100/class (+2 aug copies)."""
import sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, "/work/main/bench")
import classify as bench
from host import resize_to, to_rgb8
from loupe_trainer.classify.engine import ClassNet
from loupe_trainer.classify.augment import Augment
from loupe_trainer.backbone import build_backbone, stage_channels, to_tensor
torch.set_num_threads(1)
variant, size = sys.argv[1], int(sys.argv[2])
draws = [int(s) for s in sys.argv[3].split(",")]
FD = Path("/tmp/s17/maps"); FD.mkdir(parents=True, exist_ok=True)
tag = f"{variant}-{size}"
net = ClassNet(10, pooling="grid", pretrained=False).eval()
net.backbone = build_backbone(variant=variant); net.backbone.fc = torch.nn.Identity()
@torch.no_grad()
def maps(x):
    return torch.cat([net.features(to_tensor(x[s:s + 64])) for s in range(0, len(x), 64)]).half().numpy()
prep = lambda imgs: np.stack([resize_to(to_rgb8(im), (size, size)) for im in imgs])
xtr, ytr = bench.read_idx("train-images-idx3-ubyte"), bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
ft = FD / f"test-{tag}.npy"
if not ft.exists():
    t = time.process_time(); np.save(ft, maps(prep(bench.read_idx("t10k-images-idx3-ubyte")))); print(tag, "test", time.process_time() - t, flush=True)
for seed in draws:
    fp = FD / f"tr-s{seed}-{tag}.npy"
    if fp.exists():
        continue
    rng = np.random.default_rng(seed)
    order = {c: rng.permutation(np.flatnonzero(ytr == c)) for c in range(10)}
    sel = np.concatenate([order[c][:100] for c in range(10)])
    x = prep(xtr[sel]); arng = np.random.default_rng(100 + seed); aug = Augment()
    np.save(fp, np.stack([maps(v) for v in [x] + [aug(x, arng) for _ in range(2)]]))
    np.save(FD / f"y-s{seed}.npy", ytr[sel]); print(tag, "draw", seed, flush=True)
