"""Frozen-trunk linear heads at 10 images per class over several draws (issue 18, session 9).

    OMP_NUM_THREADS=1 .venv/bin/python bench/classify_frozen_heads.py 1,2,3,4,5,0 [N_TEST]

Lite0 at 96 px, stages 3-6 grid-pooled (global + 3 x 3 cells) once for the test set and for each draw's 100
training images plus 16 augmented copies (the trainer's ``Augment``); then the trainer's probe (``fit_linear``,
``_probe_wd``, label smoothing 0.1) with copies / L2 / stage / pooling variants. The draw is
``bench/classify.py``'s. Features cached in $FROZEN_CACHE (default /tmp/loupe-frozen). One JSON line per draw.
"""
import json, os, sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).resolve().parent))
import classify as bench
from host import resize_to, to_rgb8
from loupe_trainer.classify.engine import ClassNet, pooled_features, fit_linear, _probe_wd
from loupe_trainer.classify.augment import Augment
torch.set_num_threads(1)
FD = Path(os.environ.get("FROZEN_CACHE", "/tmp/loupe-frozen")); FD.mkdir(parents=True, exist_ok=True)
STG = ("stage3", "stage4", "stage5", "stage6")
torch.manual_seed(0)
net = ClassNet(10, stages=STG, pooling="grid").eval()
def feats(imgs):
    x = np.stack([resize_to(to_rgb8(im), (96, 96)) for im in imgs])
    return x
xtr, ytr = bench.read_idx("train-images-idx3-ubyte"), bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
xte, yte = bench.read_idx("t10k-images-idx3-ubyte"), bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64)
NTE = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
ft = FD / f"test{NTE}.npy"
if not ft.exists():
    t = time.process_time()
    np.save(ft, pooled_features(net, feats(xte[:NTE])).numpy()); print("test feats", time.process_time() - t, flush=True)
Fte = torch.from_numpy(np.load(ft)); yte = yte[:NTE]
NC = 16
for seed in [int(s) for s in sys.argv[1].split(",")]:
    rng = np.random.default_rng(seed)
    order = {c: rng.permutation(np.flatnonzero(ytr == c)) for c in range(10)}
    sel = np.concatenate([order[c][:10] for c in range(10)])
    x, y = feats(xtr[sel]), ytr[sel]
    fp = FD / f"tr-s{seed}.npy"
    if not fp.exists():
        arng = np.random.default_rng(100 + seed)
        aug = Augment()
        fs = [pooled_features(net, x)] + [pooled_features(net, aug(x, arng)) for _ in range(NC)]
        np.save(fp, torch.stack(fs).numpy())
    F = torch.from_numpy(np.load(fp))   # [1+NC, N, 424*10]
    ch = {"stage3": (0, 40), "stage4": (40, 120), "stage5": (120, 232), "stage6": (232, 424)}
    def sl(f, stages, pool):
        f = f.reshape(*f.shape[:-1], 424, 10)
        f = torch.cat([f[..., ch[s][0]:ch[s][1], :] for s in stages], -1 if False else -2)
        if pool == "global": f = f[..., :1]
        return f.reshape(*f.shape[:-2], -1)
    res = {}
    def run(name, stages=("stage4", "stage5", "stage6"), pool="grid", copies=2, wdm=1.0, l2n=False, smooth=0.1):
        tr = sl(F[:1 + copies], stages, pool).reshape(-1, sl(F[:1], stages, pool).shape[-1])
        te = sl(Fte, stages, pool)
        if l2n:
            tr = tr / tr.norm(dim=1, keepdim=True); te = te / te.norm(dim=1, keepdim=True)
        fc = torch.nn.Linear(tr.shape[1], 10)
        fit_linear(fc, tr, torch.from_numpy(y).repeat(1 + copies), _probe_wd(len(y)) * wdm, smooth)
        with torch.no_grad():
            res[name] = round(float((fc(te).argmax(1).numpy() == yte).mean()), 4)
    run("base")
    run("c8", copies=8); run("c16", copies=16)
    run("wd3", wdm=3); run("wd10", wdm=10); run("wd0.3", wdm=0.3)
    run("s3456", stages=STG); run("s3456c8", stages=STG, copies=8)
    run("c8wd3", copies=8, wdm=3)
    run("global", pool="global")
    run("sm0", smooth=0.0)
    print(json.dumps({"seed": seed, **res}), flush=True)
    with open(FD / "frozen_heads.jsonl", "a") as f:
        f.write(json.dumps({"seed": seed, "test": NTE, **res}) + "\n")
