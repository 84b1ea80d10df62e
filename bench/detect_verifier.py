"""Feasibility of a second-stage verifier for detection (issue 17, session 7): re-score the detector's
candidates with a frozen-ImageNet-feature classifier of their crops, seen at a higher resolution.

    OMP_NUM_THREADS=1 .venv/bin/python bench/detect_verifier.py BUNDLE DATA --eval DATA DEV [--crop 64 ...]

1. The bundle's detector (ONNX Runtime, the runtime's own decoding) proposes candidates at a low score
   (``--cand``) on the training images the bundle trained on (its held-out images excluded: they are
   re-derived with the trainer's own ``split_names``), under the 8 quarter-turn/flip views.
2. Each candidate, each true box (jittered) and random background boxes are cropped as a square of side
   ``--margin`` x the box's longer side around the box's centre, resized to ``--crop`` px (OpenCV).
   Labels: the true class for a true box or a candidate at IoU >= 0.5 with one; background for a candidate
   at IoU < 0.3 with every true box and for the random boxes.
3. Features: the frozen EfficientNet-Lite0 (ImageNet) up to ``--stages``, each stage average- and
   max-pooled; a linear softmax over {background, class 1..K} fitted by the classifier's L-BFGS probe
   (``fit_linear``, L2 by ``_probe_wd``); or an MLP (``--mlp``); ``--finetune N`` then also trains stage5-6
   (BatchNorm frozen, on stage4 maps computed once) with the linear layer for N epochs.
4. Combinations of the detector's score s and the verifier's probabilities p (chosen, with the operating
   threshold, on the bundle's held-out images under their 8 views by the trainer's ``choose_threshold``):
   ``det`` (the detector alone), ``gmean`` sqrt(s * p[class]), ``gmean_relabel`` (the verifier's best
   class c, sqrt(s * p[c])), ``verifier`` p[class] alone, ``gmean_fg`` sqrt(s * (1 - p[background])).
5. Reports, on the test split of every ``--eval`` folder: count accuracy at the chosen threshold and the
   best over thresholds, mAP50 and mAP50:95 and the TP/FP AUROC, per combination; two ceilings (an oracle
   that drops every candidate not on a part, and that with the true class); and (unless ``--no-timing``) the
   verifier's CPU ms per image (1 thread, median, on the first ``--eval`` set): OpenCV crops + one batched
   ONNX Runtime call of the exported verifier graph, beside the detector's own time.

Nothing is chosen on the test or dev images. The crop geometry (``loupe_dl_detect.verify``), the candidate
labelling, the features and the fine-tuning (``loupe_trainer.detect.verifier``) are the product's own; the MLP,
the other combinations, the ceilings and the AUROC are this script's.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from host import Bundle, create_session
from loupe_dl_detect.data import load, preprocess, scan
from loupe_dl_detect.metrics import evaluate_detections
from loupe_dl_detect.model import Detector, iou_matrix
from loupe_dl_detect.verify import crop_boxes, relabel
from loupe_trainer.classify.engine import _probe_wd, fit_linear
from loupe_trainer.detect.trainer import THRESHOLDS, choose_threshold, count_scores, split_names
from loupe_trainer.detect.verifier import (Verifier, export_verifier, features, finetune, stage4_maps, to_input,
                                           training_crops, views)

def candidates(det: Detector, rgb: np.ndarray, cand: float):
    return det.predict(np.ascontiguousarray(rgb[:, :, ::-1]), min_score=cand)    # the runtime takes BGR


def fit_mlp(net: Verifier, feats: torch.Tensor, labels: torch.Tensor, hidden: int, wd: float, seed: int,
            epochs: int = 300) -> None:
    """Replace ``net.fc`` by a one-hidden-layer MLP fitted on the fixed features (full batch, AdamW, the
    standardisation folded into the first layer)."""
    torch.manual_seed(seed)
    mu, sd = feats.mean(0), feats.std(0) + 1e-3
    z = (feats - mu) / sd
    mlp = nn.Sequential(nn.Linear(z.shape[1], hidden), nn.ReLU(), nn.Dropout(0.3),
                        nn.Linear(hidden, net.fc.out_features))
    opt = torch.optim.AdamW(mlp.parameters(), lr=3e-3, weight_decay=wd)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(mlp(z), labels).backward()
        opt.step()
    mlp.eval()
    with torch.no_grad():
        first = mlp[0]
        first.bias.copy_(first.bias - (first.weight * (mu / sd)).sum(1))
        first.weight.copy_(first.weight / sd)
    net.fc = mlp


def bench_training_crops(det, samples, args, rng):
    """Crops and labels (0 background, 1..K the classes) from the training images under their 8 views."""
    cand = args.cand_train if args.cand_train is not None else args.cand

    def image_views():
        for s in samples:
            rgb0, gb0, gl = load(s)
            for img, gb in views(rgb0, gb0):
                yield img, gb, gl

    return training_crops(lambda img: candidates(det, img, cand), image_views(), rng, args.crop, args.margin,
                          args.jitter, args.n_random)


def combine(kind: str, s: np.ndarray, lab: np.ndarray, p: np.ndarray):
    if kind == "det" or not len(s):
        return s, lab
    if kind == "gmean":
        return np.sqrt(s * p[np.arange(len(s)), lab + 1]), lab
    if kind == "gmean_relabel":
        return relabel(s, p)
    if kind == "verifier":
        return p[np.arange(len(s)), lab + 1], lab
    if kind == "gmean_fg":
        return np.sqrt(s * (1.0 - p[:, 0])), lab
    raise ValueError(kind)


COMBOS = ("det", "gmean", "gmean_relabel", "verifier", "gmean_fg")


def scored(det, net, images, args):
    """Per image: (candidate boxes, detector scores, labels, verifier probabilities)."""
    out = []
    for rgb in images:
        d = candidates(det, rgb, args.cand)
        if len(d):
            with torch.no_grad():
                p = net(to_input(crop_boxes(rgb, d.boxes, args.crop, args.margin))).numpy()
        else:
            p = np.zeros((0, len(det.classes) + 1), np.float32)
        out.append((d.boxes, d.scores, d.labels, p))
    return out


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a true positive scores above a false one), ties half."""
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.concatenate([pos, neg])
    r = np.argsort(np.argsort(allv, kind="stable"), kind="stable") + 1.0
    # average ranks of ties
    for v in np.unique(allv):
        m = allv == v
        if m.sum() > 1:
            r[m] = r[m].mean()
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def tp_fp_auroc(cands, gts, kind) -> float:
    """TP (IoU >= 0.5 with an unmatched true box of the same class, best score first) vs the rest."""
    pos, neg = [], []
    for (b, s, l, p), (gb, gl) in zip(cands, gts):
        sc, lab = combine(kind, s, l, p)
        iou = iou_matrix(b, gb) if len(b) and len(gb) else np.zeros((len(b), len(gb)))
        used = set()
        for i in np.argsort(-sc, kind="stable"):
            j = int(np.argmax(iou[i])) if len(gb) else -1
            if j >= 0 and iou[i, j] >= 0.5 and j not in used and lab[i] == gl[j]:
                used.add(j)
                pos.append(sc[i])
            else:
                neg.append(sc[i])
    return auroc(np.array(pos), np.array(neg))


def figures(cands, gts, kind, n_cls, thr):
    preds = []
    for b, s, l, p in cands:
        sc, lab = combine(kind, s, l, p)
        preds.append((b, sc.astype(np.float32), lab.astype(np.int64)))
    table = count_scores(preds, gts, n_cls, THRESHOLDS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = evaluate_detections(preds, gts, n_cls)
    at = count_scores(preds, gts, n_cls, [thr])[float(thr)][0]
    best_t = max(table, key=lambda t: table[t][0])
    return {"count_acc": at, "best_count_acc": table[best_t][0], "best_thr": best_t, "map50": m["map50"],
            "map50_95": m["map50_95"]}


def time_verifier(det, net, images, args) -> dict:
    """CPU ms per image (thread time, 1 thread) of what the runtime would add: OpenCV crops of the candidates
    above ``--cand`` and one batched ONNX Runtime call of the exported verifier (normalisation included)."""
    tmp = Path(tempfile.mkdtemp()) / "verifier.onnx"
    export_verifier(net, args.crop, tmp)
    threads = args.time_threads
    clock = time.thread_time if threads == 1 else time.perf_counter
    if threads != 1:
        det = Detector(det.bundle, threads=threads, verify=False)
    sess = create_session(tmp, threads)
    times, det_times, n_c = [], [], []
    for rgb in images:
        t0 = clock()
        d = candidates(det, rgb, args.cand)
        t1 = clock()
        if len(d):
            x = np.ascontiguousarray(crop_boxes(rgb, d.boxes, args.crop, args.margin).transpose(0, 3, 1, 2),
                                     np.float32)           # RGB pixels 0..255: the graph normalises
            p = sess.run(["probs"], {"crops": x})[0]
        t2 = clock()
        det_times.append(t1 - t0)
        times.append(t2 - t1)
        n_c.append(len(d))
    # parity of the exported graph with torch on the last image's crops
    if len(d):
        with torch.no_grad():
            ref = net(to_input(crop_boxes(rgb, d.boxes, args.crop, args.margin))).numpy()
        parity = float(np.abs(ref - p).max())
    else:
        parity = float("nan")
    return {"threads": threads, "clock": "thread_time" if threads == 1 else "wall (perf_counter)",
            "verifier_cpu_ms_median": 1000 * float(np.median(times)), "detector_cpu_ms_median":
            1000 * float(np.median(det_times)), "candidates_median": float(np.median(n_c)),
            "candidates_p90": float(np.percentile(n_c, 90)), "onnx_parity_max_abs": parity,
            "onnx_bytes": tmp.stat().st_size}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("data", help="the data the bundle was trained on (its train split)")
    ap.add_argument("--eval", nargs="+", default=[], help="data folders whose test split is scored")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--margin", type=float, default=1.5)
    ap.add_argument("--cand", type=float, default=0.1, help="detector score of a candidate")
    ap.add_argument("--stages", nargs="+", default=["stage4", "stage6"])
    ap.add_argument("--cand-train", type=float, help="detector score of a training candidate (default: --cand)")
    ap.add_argument("--jitter", type=int, default=1, help="jittered copies of each true box (per view)")
    ap.add_argument("--n-random", type=int, default=4, help="random background boxes per image view")
    ap.add_argument("--smoothing", type=float, default=0.0)
    ap.add_argument("--combo", choices=COMBOS, help="fix the combination (else chosen on the held-out images)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--mlp", type=int, default=0, help="hidden units of an MLP instead of the linear probe")
    ap.add_argument("--finetune", type=int, default=0, help="epochs of fine-tuning stage5-6 + the linear layer")
    ap.add_argument("--time-threads", type=int, default=1,
                    help="threads of the timing (1: CPU thread time; more: wall time, both stages alike)")
    ap.add_argument("--mlp-wd", type=float, default=0.05)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cpu0 = time.process_time()
    bundle = Bundle.load(Path(a.bundle))
    det = Detector(bundle, threads=a.threads, verify=False)   # the detector alone proposes
    n_cls = len(det.classes)
    params = bundle.meta["training"]["params"]
    ds = scan(Path(a.data), classes=det.classes)
    samples = ds.train
    if bundle.meta.get("split"):
        held = set(bundle.meta["split"]["test_names"])
        samples = [s for s in samples if s.name not in held]
    tr_idx, va_idx = split_names([s.name for s in samples], params["val_fraction"], params["seed"] + 1)
    train = [samples[i] for i in tr_idx]
    val = [samples[i] for i in va_idx]
    print(f"{len(train)} training and {len(val)} held-out images ({', '.join(s.name for s in val)})")
    rng = np.random.default_rng(a.seed)
    crops, labels, kinds = bench_training_crops(det, train, a, rng)
    counts = {k: int((kinds == k).sum()) for k in np.unique(kinds)}
    print(f"{len(crops)} training crops: {counts}; per label {np.bincount(labels, minlength=n_cls + 1).tolist()}")
    net = Verifier(a.stages, n_cls + 1)
    t0 = time.process_time()
    feats = features(net, crops)
    if a.mlp:
        fit_mlp(net, feats, torch.from_numpy(labels), a.mlp, a.mlp_wd, a.seed)
    else:
        fit_linear(net.fc, feats, torch.from_numpy(labels), _probe_wd(len(train)), a.smoothing)
    if a.finetune:
        finetune(net, stage4_maps(net, crops), labels, a.finetune, a.seed)
        feats = features(net, crops)
    fit_cpu = time.process_time() - t0
    net.eval()
    with torch.no_grad():
        acc = float((net.fc(feats).argmax(1).numpy() == labels).mean())
    print(f"verifier fitted ({feats.shape[1]} features, {fit_cpu:.1f} CPU-s); training accuracy {acc:.3f}")

    # the held-out images under the 8 views: choose the combination and its threshold
    val_imgs, val_gts = [], []
    for s in val:
        rgb, gb, gl = load(s)
        for img, bx in views(rgb, gb):
            val_imgs.append(img)
            val_gts.append((bx, gl))
    vc = scored(det, net, val_imgs, a)
    chosen = {}
    for kind in COMBOS:
        preds = [(b, *combine(kind, s, l, p)) for b, s, l, p in vc]
        preds = [(b, sc.astype(np.float32), lab) for b, sc, lab in preds]
        thr, table = choose_threshold(preds, val_gts, n_cls)
        chosen[kind] = {"threshold": thr, "val_count_acc": table[thr][0],
                        "val_auroc": tp_fp_auroc(vc, val_gts, kind),
                        "val_count_acc_best": max(v[0] for v in table.values())}
        print(f"held-out (8 views): {kind:14s} threshold {thr:.3f}  count acc {table[thr][0]:.3f}  "
              f"TP/FP AUROC {chosen[kind]['val_auroc']:.4f}")
    pick = a.combo or max((k for k in COMBOS if k != "det"), key=lambda k: chosen[k]["val_count_acc"])
    print(f"combination chosen on the held-out images: {pick}")
    result = {"args": vars(a), "n_train_images": len(train), "train_crops": counts, "fit_cpu_s": fit_cpu,
              "train_accuracy": acc, "chosen": chosen, "pick": pick, "eval": {}}
    for root in a.eval:
        es = scan(Path(root), classes=det.classes)
        imgs, gts = [], []
        for s in es.test:
            rgb, gb, gl = load(s)
            imgs.append(rgb)
            gts.append((gb, gl))
        cands = scored(det, net, imgs, a)
        rows = {}
        for kind in COMBOS:
            rows[kind] = figures(cands, gts, kind, n_cls, chosen[kind]["threshold"])
            rows[kind]["auroc"] = tp_fp_auroc(cands, gts, kind)
            r = rows[kind]
            print(f"{root}: {kind:14s} thr {chosen[kind]['threshold']:.3f} count acc {r['count_acc']:.2f} "
                  f"(best {r['best_count_acc']:.2f} at {r['best_thr']:.3f})  mAP50 {r['map50']:.3f} "
                  f"mAP50:95 {r['map50_95']:.3f} AUROC {r['auroc']:.4f}")
        # ceilings at this candidate score: a perfect background filter (each true part keeps its best
        # candidate at IoU >= 0.3, best score first; every other candidate is dropped), and that with the
        # true class too
        for name, relabel in (("ceiling_background_filter", False), ("ceiling_filter_and_class", True)):
            oracle = []
            for (b, s, l, p), (gb, gl) in zip(cands, gts):
                iou = iou_matrix(b, gb) if len(b) and len(gb) else np.zeros((len(b), len(gb)))
                used, keep, lab = set(), [], []
                for i in np.argsort(-s, kind="stable"):
                    j = int(np.argmax(iou[i])) if len(gb) else -1
                    if j >= 0 and iou[i, j] >= 0.3 and j not in used:
                        used.add(j)
                        keep.append(i)
                        lab.append(gl[j] if relabel else l[i])
                keep = np.array(keep, np.int64)
                oracle.append((b[keep], s[keep], np.array(lab, np.int64)))
            table = count_scores(oracle, gts, n_cls, (a.cand,) + THRESHOLDS)
            best_t = max(table, key=lambda t: table[t][0])
            rows[name] = {"count_acc_at_cand": table[a.cand][0], "best_count_acc": table[best_t][0],
                          "best_thr": best_t}
            print(f"{root}: {name}: count acc {table[a.cand][0]:.2f} at {a.cand:g}, "
                  f"best {table[best_t][0]:.2f} at {best_t:.3f}")
        result["eval"][root] = rows
    if a.eval and not a.no_timing:
        es = scan(Path(a.eval[0]), classes=det.classes)
        imgs = [load(s)[0] for s in es.test]
        result["timing"] = time_verifier(det, net, imgs, a)
        print("timing (1 thread, CPU ms per image, median):", json.dumps(result["timing"]))
    result["total_cpu_s"] = time.process_time() - cpu0
    print(f"total CPU {result['total_cpu_s']:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
