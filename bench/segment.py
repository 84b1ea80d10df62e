"""Benchmark: supervised defect segmentation from tens of labelled images.

    OMP_NUM_THREADS=2 .venv/bin/python bench/segment.py [--work DIR] [--json OUT] [--surface S ...]

1. Writes the generated data set (``loupe_trainer.segment.samples``): 3 defect classes
   (scratch, stain, dent: faint, the anomaly generator's subtle defects) on 3 surfaces
   (brushed metal and fabric, procedural; brick, a real photograph from scikit-image);
   train: 16 good + 8 per class; test: 30 good + 30 per class; 256 x 256.
2. Reference: a per-pixel linear probe on frozen ImageNet EfficientNet-Lite0 features
   (stride 4, 8 and 16 maps, upsampled to stride 4 and concatenated; logistic regression
   on all defect cells and a sample of background cells), probabilities upsampled to the
   image and scored exactly like ``loupe eval``.
3. Loupe: ``loupe train segment DATA --out BUNDLE`` with no flags (wall clock of the whole
   command, and its CPU seconds), scored by ``loupe eval --json``.
4. Inference through ``loupe run``: a recipe with the ``segment.defects`` step over the 120
   test images (256 x 256), JSONL report; the median of the runner's per-step times.
5. ``loupe optimize --method int8`` on the bundle, scored and timed the same way.

Everything runs with 2 threads. On a shared machine wall-clock figures are inflated; the
CPU seconds of the training command are reported beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOUPE = [str(Path(sys.executable).with_name("loupe"))]


def loupe(*args, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "LOUPE_ORT_THREADS": "2"}
    r = subprocess.run(LOUPE + [str(a) for a in args], env=env, capture_output=True, text=True)
    if check and r.returncode not in (0, 1):
        sys.exit(f"loupe {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return r


def child_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


# ------------------------------------------------------------------ reference


def linear_probe(data: Path, size: int = 256, bg_samples: int = 40000, seed: int = 0) -> dict:
    import cv2
    import torch
    import torch.nn.functional as F
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from loupe_dl_segment.data import resize_mask, resize_to, scan, to_rgb8
    from loupe_dl_segment.evaluate import auroc, metrics
    from loupe_dl_segment.model import label_map
    from loupe_trainer.backbone import build_backbone, to_tensor

    torch.set_num_threads(2)
    net = build_backbone()
    ds = scan(data)
    k1 = len(ds.classes) + 1

    def feats(rgb: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            f = net.stages(to_tensor(rgb), ["stage2", "stage3", "stage5"])
            s4 = f["stage2"].shape[-2:]
            cat = torch.cat([f["stage2"]] + [F.interpolate(f[n], size=s4, mode="bilinear", align_corners=False)
                                             for n in ("stage3", "stage5")], 1)
        return cat[0].permute(1, 2, 0).reshape(-1, cat.shape[1]).numpy()

    t0 = time.perf_counter()
    xs, ys = [], []
    rng = np.random.default_rng(seed)
    for s in ds.train:
        img, mask = ds.load(s)
        rgb = resize_to(to_rgb8(img), (size, size))
        m = resize_mask(mask, (size, size))
        f = feats(rgb[None])
        h = size // 4
        # a stride-4 cell takes the defect class covering most of it (any defect pixel counts)
        cells = m.reshape(h, 4, h, 4).transpose(0, 2, 1, 3).reshape(h * h, 16)
        lab = np.array([np.bincount(c, minlength=k1)[1:].argmax() + 1 if c.any() else 0 for c in cells])
        xs.append(f)
        ys.append(lab)
    x, y = np.concatenate(xs), np.concatenate(ys)
    fg = np.flatnonzero(y > 0)
    bg = np.flatnonzero(y == 0)
    bg = rng.choice(bg, min(len(bg), bg_samples), replace=False)
    idx = np.concatenate([fg, bg])
    scaler = StandardScaler().fit(x[idx])
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(scaler.transform(x[idx]), y[idx])
    train_s = time.perf_counter() - t0
    cm = np.zeros((k1, k1), np.int64)
    good, bad = [], []
    for s in ds.test:
        img, truth = ds.load(s)
        rgb = resize_to(to_rgb8(img), (size, size))
        p = clf.predict_proba(scaler.transform(feats(rgb[None])))
        full = np.zeros((size // 4 * size // 4, k1), np.float32)
        full[:, clf.classes_] = p
        h, w = truth.shape
        probs = cv2.resize(full.reshape(size // 4, size // 4, k1), (w, h), interpolation=cv2.INTER_LINEAR)
        probs = probs.transpose(2, 0, 1)
        lab = label_map(probs, 0.5)
        cm += np.bincount(truth.astype(np.int64).ravel() * k1 + lab.ravel(), minlength=k1 * k1).reshape(k1, k1)
        (bad if truth.any() else good).append(float((1 - probs[0]).max()))
    out = metrics(cm, ds.classes, good, bad)
    out["train_seconds"] = round(train_s, 1)
    out["image_auroc"] = auroc(good, bad)
    return out


# ------------------------------------------------------------------ loupe run


def time_loupe_run(bundle: Path, images: Path, work: Path, name: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from host import model_sha256

    recipe = work / f"{name}-recipe.yaml"
    recipe.write_text(json.dumps({
        "loupe_recipe": 1, "name": f"segment-{name}",
        "inspect": [{"tool": "segment.defects", "name": "defects",
                     "params": {"model": {"path": str(bundle), "sha256": model_sha256(bundle)}, "threads": 2},
                     "limits": {"ok": {"equals": True}}}]}))
    report = work / f"{name}-run.jsonl"
    report.unlink(missing_ok=True)
    loupe("run", recipe, "--source", f"folder:{images}", "--report", f"jsonl:{report}", "-q")
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    step = [r["timings_ms"]["defects"] for r in rows if "defects" in r.get("timings_ms", {})]
    if not step:
        sys.exit(f"loupe run produced no timed frames ({len(rows)} rows in {report})")
    return {"images": len(rows), "median_ms": statistics.median(step), "p90_ms": float(np.percentile(step, 90))}


def _strip(d: dict) -> dict:
    keys = ("mean_iou", "defect_iou", "per_class_iou", "image_auroc", "n_images", "ms_per_image", "threshold")
    return {k: d[k] for k in keys if k in d}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/loupe-bench-segment", help="scratch folder")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--surface", nargs="+", default=["brushed_metal", "fabric", "brick"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-probe", action="store_true", help="skip the linear-probe reference")
    ap.add_argument("--bundle", help="score this already trained bundle instead of training one")
    ap.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                    help="extra options for loupe train segment (default: none)")
    a = ap.parse_args()
    work = Path(a.work)
    data = work / "data"
    if not (data / "classes.txt").exists():
        from loupe_trainer.segment.samples import make_segment_dataset

        make_segment_dataset(data, a.surface, 16, 8, 30, 30, 256, a.seed)
    res: dict = {"data": {"surfaces": a.surface, "train": "16 good + 8 per class", "test": "30 good + 30 per class",
                          "size": 256}, "threads": 2}

    if not a.no_probe:
        print("reference: linear probe on frozen EfficientNet-Lite0 features ...", file=sys.stderr, flush=True)
        res["linear_probe"] = linear_probe(data)
        print(json.dumps(res["linear_probe"]), file=sys.stderr, flush=True)

    if a.bundle:
        bundle = Path(a.bundle)
        res["train"] = {"bundle": str(bundle), "note": "trained separately"}
    else:
        print("loupe train segment (no flags) ...", file=sys.stderr, flush=True)
        bundle = work / "segment.bundle"
        c0, t0 = child_cpu(), time.perf_counter()
        loupe("train", "segment", data, "--out", bundle, "-q", *a.train_args)
        res["train"] = {"wall_seconds": round(time.perf_counter() - t0, 1),
                        "cpu_seconds": round(child_cpu() - c0, 1)}
    meta = json.loads((bundle / "bundle.json").read_text())
    res["train"].update({k: meta["metrics"].get(k) for k in ("best_epoch", "epochs_run", "stopped")})
    res["loupe"] = _strip(json.loads(loupe("eval", bundle, data, "--json", "--out", work / "eval").stdout))
    res["loupe"]["loupe_run"] = time_loupe_run(bundle, data / "test" / "images", work, "fp32")
    print(json.dumps(res["loupe"]), file=sys.stderr, flush=True)

    print("loupe optimize --method int8 ...", file=sys.stderr, flush=True)
    q = work / "segment-int8.bundle"
    loupe("optimize", bundle, "--method", "int8", "--out", q, "-q")
    res["int8"] = _strip(json.loads(loupe("eval", q, data, "--json").stdout))
    res["int8"]["loupe_run"] = time_loupe_run(q, data / "test" / "images", work, "int8")
    res["int8"]["float_groups"] = json.loads((q / "bundle.json").read_text())["optimization"]["float_groups"]
    text = json.dumps(res, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
