"""Probe-only head experiments on frozen features (issue 18 item 3): the bench draw (seed 0), all N/class images
(as in the final head refit), scored on the first 5000 test images. Frozen stages 3-6 are computed once
(image + 8 augmented copies); then linear heads (the trainer's L-BFGS probe) for stage sets, pooling, copies, L2.

    OMP_NUM_THREADS=1 .venv/bin/python bench/classify_probe_sweep.py 100 [lite0] [96]
"""
import sys, time, json
import numpy as np, torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import classify as bench
from host import resize_to, to_rgb8
from loupe_trainer.classify.engine import ClassNet, fit_linear, _probe_wd, pool_matrix
from loupe_trainer.classify.augment import Augment
from loupe_trainer.backbone import to_tensor
torch.set_num_threads(1)
per = int(sys.argv[1])
variant = sys.argv[2] if len(sys.argv) > 2 else "lite0"
size = int(sys.argv[3]) if len(sys.argv) > 3 else 96
xtr, ytr = bench.read_idx("train-images-idx3-ubyte"), bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
xte, yte = bench.read_idx("t10k-images-idx3-ubyte"), bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64)
rng = np.random.default_rng(0)
order = {c: rng.permutation(np.flatnonzero(ytr == c)) for c in range(10)}
sel = np.concatenate([order[c][:per] for c in range(10)])
prep = lambda a: np.stack([resize_to(to_rgb8(im), (size, size)) for im in a])
x, y = prep(xtr[sel]), ytr[sel]
NT = 5000
xt, yt = prep(xte[:NT]), yte[:NT]
net = ClassNet(10, stages=("stage3", "stage4", "stage5", "stage6"), variant=variant).eval()
P = {}
@torch.no_grad()
def feats(imgs):
    out = {}
    for s in range(0, len(imgs), 100):
        st = net.backbone.stages(to_tensor(imgs[s:s+100]), net.stage_names)
        for k, m in st.items():
            h, w = m.shape[-2:]
            if (h, w) not in P: P[(h, w)] = torch.from_numpy(pool_matrix(h, w, "grid"))
            out.setdefault(k, []).append(torch.matmul(m.flatten(2), P[(h, w)]))  # [N, C, 10]
    return {k: torch.cat(v) for k, v in out.items()}
t = time.process_time()
aug = Augment(); r = np.random.default_rng(0)
copies = [x] + [aug(x, r) for _ in range(8)]
F = [feats(c) for c in copies]
FT = feats(xt)
print("features cpu", time.process_time() - t, flush=True)
def get(Fd, stages, pool):
    a = torch.cat([Fd[s] for s in stages], 1)
    return a[:, :, 0] if pool == "global" else a.flatten(1)
res = []
for stages in [("stage4", "stage5", "stage6"), ("stage3", "stage4", "stage5", "stage6"), ("stage5", "stage6"),
               ("stage4", "stage5")]:
    for pool in ["grid", "global"]:
        for nc in [3, 9]:
            for wdm in [1.0, 0.3, 3.0] if (nc == 3 and stages[0] == "stage4" and len(stages) == 3) else [1.0]:
                tr = torch.cat([get(F[i], stages, pool) for i in range(nc)])
                yy = torch.from_numpy(y).repeat(nc)
                head = torch.nn.Linear(tr.shape[1], 10)
                fit_linear(head, tr, yy, _probe_wd(len(x)) * wdm, 0.1)
                with torch.no_grad():
                    acc = float((head(get(FT, stages, pool)).argmax(1).numpy() == yt).mean())
                row = dict(per=per, variant=variant, size=size, stages="+".join(s[5:] for s in stages), pool=pool,
                           copies=nc - 1, wd=wdm, acc=round(acc, 4))
                print(json.dumps(row), flush=True)
