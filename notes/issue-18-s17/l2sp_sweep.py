"""Whole-trunk fine-tuning with an L2-SP pull toward the pretrained weights and a faster head (issue 18, session 17):
an experiment on top of the trainer, patched in here (the product trainer is unchanged).

    OMP_NUM_THREADS=1 .venv/bin/python notes/issue-18-s17/l2sp_sweep.py SEED PER NAME LR ALPHA HEAD_MULT EPOCHS

ALPHA: after every AdamW step each trunk weight moves lr_t * ALPHA of the way back toward its pretrained value
(decoupled L2-SP); HEAD_MULT: the head's learning rate over the trunk's. Scored like bench/classify_sweep.py."""
import json, sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, "/work/main/bench")
import classify as bench
from loupe_trainer.classify import engine
seed, per, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
lr, alpha, head_mult, epochs = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
_orig_init = torch.optim.AdamW.__init__
class L2SP(torch.optim.AdamW):
    def __init__(self, groups, **kw):
        groups[1]["lr"] = groups[1]["lr"] * head_mult
        for g in groups:
            g["p0"] = [p.detach().clone() for p in g["params"]]
        groups[0]["weight_decay"] = 0.0          # the trunk decays toward its pretrained weights instead
        super().__init__(groups, **kw)
    @torch.no_grad()
    def step(self, closure=None):
        out = super().step(closure)
        g = self.param_groups[0]
        for p, p0 in zip(g["params"], g["p0"]):
            p.sub_(g["lr"] * alpha * (p - p0))
        return out
engine.torch.optim.AdamW = L2SP
from host import Bundle, Progress, prepare_images
from loupe_trainer.classify.trainer import ClassifyParams, ClassifyTrainer
from loupe_dl_classify.model import Classifier
xtr, ytr = bench.read_idx("train-images-idx3-ubyte"), bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
xte, yte = bench.read_idx("t10k-images-idx3-ubyte"), bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64)
rng = np.random.default_rng(seed)
order = {c: rng.permutation(np.flatnonzero(ytr == c)) for c in range(10)}
sel = np.concatenate([order[c][:per] for c in range(10)])
work = Path("/tmp/s17/l2sp"); data = work / f"fmnist-s{seed}-{per}"
if not data.exists():
    bench.write_folders(data / "train", xtr[sel], ytr[sel])
out = work / f"model-{name}-s{seed}-{per}"
c0 = time.process_time()
ClassifyTrainer().train(data, out, ClassifyParams(threads=1, test_fraction=0.0, max_minutes=60, lr=lr, epochs=epochs,
                                                  patience=epochs, finetune_blocks=15), Progress())
cpu = time.process_time() - c0
clf = Classifier(Bundle.load(out), threads=1)
pred = []
for s in range(0, len(xte), 100):
    lg, _ = clf.run(prepare_images(list(xte[s:s + 100]), clf.size, clf.norm))
    pred += [bench.NAMES.index(clf.classes[i]) for i in lg.argmax(1)]
m = json.loads((out / "bundle.json").read_text())
row = {"name": name, "seed": seed, "per": per, "lr": lr, "alpha": alpha, "head_mult": head_mult, "epochs": epochs,
       "acc": round(float((np.array(pred) == yte).mean()), 4), "train_cpu_s": round(cpu, 1),
       "best_epoch": m["metrics"]["best_epoch"], "probe_val": m["metrics"].get("probe_val_accuracy"),
       "val": m["metrics"].get("val_accuracy"), "val_curve": [e["val_acc"] for e in m["training"]["history"]]}
print(json.dumps(row), flush=True)
with open("/tmp/s17/l2sp.jsonl", "a") as f:
    f.write(json.dumps(row) + "\n")
