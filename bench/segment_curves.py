"""Per-epoch curves of a segmentation training run, to choose a stopping rule offline.

    OMP_NUM_THREADS=1 .venv/bin/python bench/segment_curves.py DATA RUN_DIR [--set seed=1 --set epochs=40 ...]
    OMP_NUM_THREADS=1 .venv/bin/python bench/segment_curves.py DATA RUN_DIR --test-epochs 20,30,40

First form: runs ``loupe train segment`` in-process (``SegmentTrainer.train``, the same code as the
CLI, ``--set`` overriding ``SegmentParams`` fields; ``threads`` 1 and ``max_minutes`` 60 unless set)
into ``RUN_DIR/bundle``. After every epoch it saves the network's weights to ``RUN_DIR/e<N>.pt`` and
scores the validation images (the trainer's own held-out split) by several candidate scores:

* ``iou``        (mean IoU + defect IoU) / 2 at threshold 0.5, the trainer's score;
* ``soft_dice``  mean over the defect classes of the soft Dice of the probabilities, pooled over all
  validation pixels (no threshold: less jumpy than IoU on 9 images);
* ``defect_dice`` soft Dice of ``1 - p(background)`` against "any defect";
* ``nll``        mean per-pixel negative log-likelihood.

The scoring's CPU time is counted apart (``eval_cpu``) so ``cpu_seconds - eval_cpu_total`` is the
training's own. Everything goes to ``RUN_DIR/curves.json``.

Second form: scores the saved weights of the given epochs on DATA's test images (threshold 0.5, the
runtime's path: stride-4 softmax upsampled bilinearly) and adds ``test`` to those epochs' records.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _val_split(ds, params):
    """The trainer's validation split (same calls as ``SegmentTrainer.train`` with a test folder)."""
    from loupe_dl_classify.data import stratified_split
    from loupe_trainer.segment.trainer import main_class

    mains = [main_class(ds.load(s)[1]) for s in ds.train]
    _, va = stratified_split(mains, params.val_fraction, params.seed + 1)
    return va


def _load(ds, samples, size):
    import numpy as np

    from host import resize_mask, resize_to, to_rgb8

    xs, ys = [], []
    for s in samples:
        im, mk = ds.load(s)
        xs.append(resize_to(to_rgb8(im), size))
        ys.append(resize_mask(mk, size))
    return np.stack(xs), ys


def _probs(net, x, stride):
    import numpy as np
    import torch

    from loupe_trainer.backbone import to_tensor
    from loupe_trainer.segment.net import probabilities

    net.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(x), 8):
            out.append(probabilities(net, to_tensor(x[s:s + 8]), stride).numpy())
    return np.concatenate(out)


def _scores(probs, truth, classes):
    import numpy as np

    from loupe_dl_segment.evaluate import metrics
    from loupe_dl_segment.model import label_map

    k1 = len(classes) + 1
    cm = np.zeros((k1, k1), np.int64)
    inter = np.zeros(k1)
    psum = np.zeros(k1)
    tsum = np.zeros(k1)
    d_inter = d_p = d_t = 0.0
    nll = 0.0
    npx = 0
    for p, t in zip(probs, truth):
        t = t.astype(np.int64)
        cm += np.bincount(t.ravel() * k1 + label_map(p, 0.5).astype(np.int64).ravel(),
                          minlength=k1 * k1).reshape(k1, k1)
        onehot = np.eye(k1, dtype=np.float32)[t].transpose(2, 0, 1)
        inter += (p * onehot).sum(axis=(1, 2))
        psum += p.sum(axis=(1, 2))
        tsum += onehot.sum(axis=(1, 2))
        dp = 1.0 - p[0]
        dt = (t > 0).astype(np.float32)
        d_inter += float((dp * dt).sum())
        d_p += float(dp.sum())
        d_t += float(dt.sum())
        lp = -np.log(np.clip(np.take_along_axis(p, t[None], 0)[0], 1e-7, 1.0))
        nll += float(lp.sum())
        npx += lp.size
    m = metrics(cm, classes, [], [])
    vals = [v for v in (m["mean_iou"], m["defect_iou"]) if v is not None]
    dice = (2 * inter[1:] + 1.0) / (psum[1:] + tsum[1:] + 1.0)
    return {"iou": float(np.mean(vals)) if vals else 0.0, "mean_iou": m["mean_iou"],
            "defect_iou": m["defect_iou"], "per_class_iou": m["per_class_iou"],
            "soft_dice": float(dice.mean()), "defect_dice": (2 * d_inter + 1.0) / (d_p + d_t + 1.0),
            "nll": nll / npx}


def train(data: Path, run: Path, sets: list[str]) -> None:
    import numpy as np
    import torch

    from host import Progress
    from loupe_dl_segment.data import scan
    import loupe_trainer.segment.net as netmod
    from loupe_trainer.segment.trainer import SegmentParams, SegmentTrainer

    kw: dict = {"threads": 1, "max_minutes": 60}
    for s in sets:
        k, v = s.split("=", 1)
        kw[k] = v
    params = SegmentParams(**kw)
    ds = scan(data)
    size = (params.input_size, params.input_size)
    va = _val_split(ds, params)
    vx, vy = _load(ds, [ds.train[i] for i in va], size)
    classes = ds.classes
    k1 = len(classes) + 1
    run.mkdir(parents=True, exist_ok=True)
    holder: dict = {}

    class Recorded(netmod.SegNet):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            holder["net"] = self

    records: list[dict] = []
    eval_total = [0.0]

    class P(Progress):
        def on_update(self, stage, done, total, metrics):
            if stage != "train":
                return
            c0 = time.process_time()
            net = holder["net"]
            was = net.training
            torch.save({k: v for k, v in net.state_dict().items()}, run / f"e{done}.pt")
            sc = _scores(_probs(net, vx, params.output_stride), vy, classes)
            net.train(was)
            eval_total[0] += time.process_time() - c0
            rec = {"epoch": done, "val": sc, "eval_cpu_total": round(eval_total[0], 2),
                   "cpu_seconds": round(time.process_time(), 2), **metrics}
            records.append(rec)
            print(json.dumps({"epoch": done, "loss": metrics.get("loss"), "val_iou": round(sc["iou"], 4),
                              "soft_dice": round(sc["soft_dice"], 4), "nll": round(sc["nll"], 5)}), flush=True)

        def log(self, message):
            print(message, flush=True)

    netmod_orig = netmod.SegNet
    netmod.SegNet = Recorded
    try:
        c0 = time.process_time()
        bundle = SegmentTrainer().train(data, run / "bundle", params, P())
        cpu = time.process_time() - c0
    finally:
        netmod.SegNet = netmod_orig
    out = {"params": params.model_dump(), "val_names": [ds.train[i].name for i in va], "records": records,
           "train_cpu_total": round(cpu, 2), "eval_cpu_total": round(eval_total[0], 2),
           "metrics": bundle.meta.get("metrics")}
    (run / "curves.json").write_text(json.dumps(out, indent=1))


def test(data: Path, run: Path, epochs: list[int]) -> None:
    import torch

    from loupe_dl_segment.data import scan
    from loupe_trainer.segment.net import SegNet
    from loupe_trainer.segment.trainer import SegmentParams

    cur = json.loads((run / "curves.json").read_text())
    params = SegmentParams(**{"deep_stage": "stage5", **cur["params"]})   # runs before session 7: stage5
    ds = scan(data)
    size = (params.input_size, params.input_size)
    tx, ty = _load(ds, ds.test, size)
    net = SegNet(len(ds.classes) + 1, width=params.width, pretrained=False, deep_stage=params.deep_stage)
    by_epoch = {r["epoch"]: r for r in cur["records"]}
    for e in epochs:
        if e not in by_epoch or "test" in by_epoch[e]:
            continue
        net.load_state_dict(torch.load(run / f"e{e}.pt"), strict=False)   # aux heads: not in the graph
        sc = _scores(_probs(net, tx, params.output_stride), ty, ds.classes)
        by_epoch[e]["test"] = {k: sc[k] for k in ("defect_iou", "mean_iou", "per_class_iou")}
        print(e, json.dumps(by_epoch[e]["test"]), flush=True)
        (run / "curves.json").write_text(json.dumps(cur, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("run", type=Path)
    ap.add_argument("--set", action="append", default=[], help="SegmentParams field=value")
    ap.add_argument("--test-epochs", default="", help="comma-separated epochs to score on the test images")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if a.test_epochs:
        test(a.data, a.run, [int(e) for e in a.test_epochs.split(",") if e])
    else:
        train(a.data, a.run, a.set)
    return 0


if __name__ == "__main__":
    sys.exit(main())
