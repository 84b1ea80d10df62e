"""Fast candidate runs for few-shot classification (issue 18, item 3): one ``loupe train classify`` on the
bench's draw, scored on the full Fashion-MNIST test set with ONNX Runtime (1 thread), CPU time reported.

    OMP_NUM_THREADS=1 .venv/bin/python bench/classify_sweep.py --per 10 --name base [--seed 0] \
        [--tta] -- [extra options for loupe train classify]

The draw is ``bench/classify.py``'s (same seed -> same training images). Training runs in-process
(``ClassifyTrainer.train``, 1 thread) so that ``time.process_time`` covers it; export and its parity check
are included. Results are appended as one JSON line to ``--log``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import classify as bench  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", required=True)
    ap.add_argument("--work", default="/tmp/h18c")
    ap.add_argument("--log", default="/tmp/h18c/sweep.jsonl")
    ap.add_argument("--test", type=int, default=10000, help="first N test images")
    ap.add_argument("--reuse", action="store_true", help="score an existing bundle of this name")
    ap.add_argument("--tta", action="store_true", help="also score the mean of the logits of x and its mirror")
    ap.add_argument("params", nargs="*", help="KEY=JSON trainer parameters")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    xtr, ytr = bench.read_idx("train-images-idx3-ubyte"), bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
    xte, yte = bench.read_idx("t10k-images-idx3-ubyte"), bench.read_idx("t10k-labels-idx1-ubyte").astype(np.int64)
    xte, yte = xte[:args.test], yte[:args.test]
    rng = np.random.default_rng(args.seed)
    order = {c: rng.permutation(np.flatnonzero(ytr == c)) for c in range(10)}
    sel = np.concatenate([order[c][:args.per] for c in range(10)])
    data = work / f"fmnist-s{args.seed}-{args.per}"
    if not data.exists():
        bench.write_folders(data / "train", xtr[sel], ytr[sel])
    from host import Bundle, Progress
    from loupe_trainer.classify.trainer import ClassifyParams, ClassifyTrainer
    from loupe_dl_classify.model import Classifier, softmax
    from host import prepare_images

    kw = {"threads": 1, "max_minutes": 30, "test_fraction": 0.0}  # the bench has a test/ folder
    for p in args.params:
        k, v = p.split("=", 1)
        kw[k] = json.loads(v)
    params = ClassifyParams(**kw)
    out = work / f"model-{args.name}-s{args.seed}-{args.per}"
    c0, t0 = time.process_time(), time.perf_counter()
    if not (args.reuse and out.exists()):
        ClassifyTrainer().train(data, out, params, Progress())
    train_cpu = time.process_time() - c0
    train_wall = time.perf_counter() - t0
    meta = json.loads((out / "bundle.json").read_text())
    clf = Classifier(Bundle.load(out), threads=1)
    c1 = time.process_time()
    probs, tta = [], []
    for s in range(0, len(xte), 100):
        xb = prepare_images(list(xte[s:s + 100]), clf.size, clf.norm)
        lg, _ = clf.run(xb)
        probs.append(softmax(lg.astype(np.float64)))
        if args.tta:
            lf, _ = clf.run(np.ascontiguousarray(xb[..., ::-1]))
            tta.append(softmax(((lg + lf) / 2).astype(np.float64)))
    eval_cpu_ms = (time.process_time() - c1) / len(xte) * 1000
    probs = np.concatenate(probs)
    pred = np.array([bench.NAMES.index(clf.classes[i]) for i in probs.argmax(1)])  # model classes are sorted
    acc = float((pred == yte).mean())
    extra = {}
    if args.tta:
        tp = np.array([bench.NAMES.index(clf.classes[i]) for i in np.concatenate(tta).argmax(1)])
        extra["acc_tta_hflip"] = round(float((tp == yte).mean()), 4)
    row = {"name": args.name, "per": args.per, "seed": args.seed, "params": {k: v for k, v in kw.items()},
           "acc": round(acc, 4), "train_cpu_s": round(train_cpu, 1), "train_wall_s": round(train_wall, 1),
           "eval_cpu_ms": round(eval_cpu_ms, 2), "metrics": meta.get("metrics"), "test": len(xte), **extra}
    print(json.dumps(row), flush=True)
    with open(args.log, "a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
