"""The trainer on unaligned parts: Fashion-MNIST items at random places on a 64 px canvas (position carries no
class information). Default (auto pooling) against forced global / grid; draws DRAWS at PER images per class.
    OMP_NUM_THREADS=1 .venv/bin/python notes/issue-18-s17/shift_trainer.py 0,1,2 10 [WORK]"""
import json, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, "/work/main/bench")
import classify as bench
from host import Bundle, Progress, prepare_images
from loupe_trainer.classify.trainer import ClassifyParams, ClassifyTrainer
from loupe_dl_classify.model import Classifier
draws, per = [int(s) for s in sys.argv[1].split(",")], int(sys.argv[2])
work = Path(sys.argv[3] if len(sys.argv) > 3 else "/tmp/s17/shift"); work.mkdir(parents=True, exist_ok=True)
xtr, ytr = bench.read_idx("train-images-idx3-ubyte"), bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
xte, yte = bench.read_idx("t10k-images-idx3-ubyte")[:3000], bench.read_idx("t10k-labels-idx1-ubyte")[:3000].astype(np.int64)
def scatter(imgs, rng, canvas=64):
    out = np.zeros((len(imgs), canvas, canvas), np.uint8)
    for i, im in enumerate(imgs):
        r, c = rng.integers(0, canvas - 28 + 1, 2)
        out[i, r:r + 28, c:c + 28] = im
    return out
te = scatter(xte, np.random.default_rng(7))
for seed in draws:
    rng = np.random.default_rng(seed)
    order = {c: rng.permutation(np.flatnonzero(ytr == c)) for c in range(10)}
    sel = np.concatenate([order[c][:per] for c in range(10)])
    data = work / f"s{seed}-{per}"
    if not data.exists():
        bench.write_folders(data / "train", scatter(xtr[sel], np.random.default_rng(50 + seed)), ytr[sel])
    for pooling in ("auto", "global", "grid"):
        out = work / f"model-s{seed}-{per}-{pooling}"
        c0 = time.process_time()
        ClassifyTrainer().train(data, out, ClassifyParams(threads=1, test_fraction=0.0, max_minutes=30,
                                                          pooling=pooling), Progress())
        clf = Classifier(Bundle.load(out), threads=1)
        pred = []
        for s in range(0, len(te), 100):
            lg, _ = clf.run(prepare_images(list(te[s:s + 100]), clf.size, clf.norm))
            pred += [bench.NAMES.index(clf.classes[i]) for i in lg.argmax(1)]
        m = json.loads((out / "bundle.json").read_text())["metrics"]
        print(json.dumps({"seed": seed, "per": per, "pooling": pooling, "chosen": m["pooling"],
                          "cv": m.get("pooling_cv_accuracy"), "acc": round(float((np.array(pred) == yte).mean()), 4),
                          "train_cpu_s": round(time.process_time() - c0, 1)}), flush=True)
