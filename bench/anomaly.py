"""Anomaly detection benchmarks (issue 4). Run with 2 CPU threads:

    OMP_NUM_THREADS=2 .venv/bin/python bench/anomaly.py [--out bench-anomaly] [--fmnist-test N] [--skip-fmnist]
        [--skip-textures] [--skip-tiling] [--speed-only]
    OMP_NUM_THREADS=2 .venv/bin/python bench/anomaly.py --set hard [--seed S] [--params JSON]
        [--category C ...] [--strengths S1,S2,...]

1. Fashion-MNIST one-class: for each class, 200 training images of that class,
   scored on the 10k test set (that class normal), with the trainer's default
   parameters (auto input size 64 px and the auto global term for 28 px images).
   The features of the test set are computed once (ONNX Runtime, the trainer's
   feature graph) and each class's model is built by the trainer's own ``fit``
   (coreset, position statistics, global term); its ``score_features`` is what
   the exported graph computes (parity-checked at every export), so no per-class
   10k-image graph runs are needed.
2. Generated textures (``loupe_trainer.samples``): 200 good training images at
   256x256 per category, trained with the default ``loupe train anomaly``
   parameters (training time measured), evaluated with the runtime (image and
   pixel AUROC).
3. Speed at 256x256, batch 1: ``loupe run``'s per-frame path (host Pipeline, the
   ``anomaly.patchcore`` step) against a bare ONNX Runtime session and the trunk
   alone (same feature graph without the search) on the same decoded images, in
   the same process, interleaved; medians.
4. Memory: peak RSS of a ``loupe run`` subprocess over the test images.
``--set hard`` (issue 18) runs only the hard development set (``loupe_trainer.samples_hard``: metal,
wood, tissue, brick; faint stains, scratches, dents and holes): per category 200 good training images
from data seed ``--seed``, default parameters (or ``--params``, a JSON object of ``AnomalyParams``
fields), image and pixel AUROC per category and per defect type. ``--strengths`` also evaluates the
same model on test sets whose defects are drawn at other strengths (the calibration of the set).
5. Tiling: 1024 x 1024 brushed-metal images with one ~8 px spot; a model on the
   whole image (resized to 256) against one trained and run on 256 px tiles.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FMNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(name: str) -> np.ndarray:
    from loupe_trainer.datasets import fashion_mnist_file, read_idx as read

    return read(fashion_mnist_file(name, FMNIST))


def gray_to_input(imgs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What loupe_dl_anomaly.data.prepare does for gray images: resize to the model input (bilinear), gray -> RGB;
    (n, h, w) uint8 -> (n, 3, H, W) float32."""
    import cv2

    b = np.stack([cv2.resize(im, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for im in imgs])
    return np.repeat(b[:, None].astype(np.float32), 3, axis=1)


def graph_features(sess, imgs: np.ndarray, size: tuple[int, int], with_global: bool = True, batch: int = 64,
                   with_gauss: bool = False):
    """Patch features (and global descriptors) of gray images through a feature graph (``FeatureGraph``),
    in batches: ``(features, global or None)``; with ``with_gauss`` also the Gaussian term's descriptors,
    ``(features, global, gauss)``."""
    pf, gf, hf = [], [], []
    for i in range(0, len(imgs), batch):
        out = sess.run(None, {"image": gray_to_input(imgs[i:i + batch], size)})
        pf.append(out[0])
        if with_global:
            gf.append(out[1])
        if with_gauss:
            hf.append(out[2])
    res = np.concatenate(pf), (np.concatenate(gf) if with_global else None)
    return res + (np.concatenate(hf),) if with_gauss else res


def fmnist(args) -> dict:
    """Each class: the trainer's own ``fit`` (default parameters, auto input size and global term) on 200
    training images; the 10k test features are extracted once with the trainer's feature graph."""
    import torch

    from loupe_dl_anomaly.metrics import auroc
    from loupe_trainer.anomaly.model import FeatureGraph
    from loupe_trainer.anomaly.trainer import (AnomalyParams, _input_size, feature_outputs, fit, make_features,
                                               use_global_term)
    from loupe_trainer.backbone import build_backbone
    from loupe_trainer.common import export_onnx, ort_session

    xtr = read_idx("train-images-idx3-ubyte")
    ytr = read_idx("train-labels-idx1-ubyte")
    xte = read_idx("t10k-images-idx3-ubyte")[: args.fmnist_test]
    yte = read_idx("t10k-labels-idx1-ubyte")[: args.fmnist_test]
    params = AnomalyParams(**({"image_size": args.fmnist_size} if args.fmnist_size else {}),
                           **({"global_term": args.fmnist_global} if args.fmnist_global else {}),
                           **json.loads(args.params or "{}"))
    if params.augment != "none":
        raise SystemExit("bench fmnist: --params augment is not supported here (features are computed once)")
    size = _input_size(xtr[0], params.image_size)
    use_global = use_global_term(params, xtr[0])
    feats = make_features(params, build_backbone(variant=params.backbone), use_global)
    tmp = Path(args.out) / "fmnist_features.onnx"
    outputs = feature_outputs(feats)
    use_gauss = "gauss" in outputs
    export_onnx(FeatureGraph(feats), torch.zeros(1, 3, *size), tmp, ["image"], outputs, dynamic_batch=True,
                fold_pads=True)
    sess = ort_session(tmp, 2)

    def features(imgs: np.ndarray):
        out = graph_features(sess, imgs, size, use_global, with_gauss=use_gauss)
        return out if use_gauss else out + (None,)

    t0 = time.perf_counter()
    fte, gte, hte = features(xte)
    fte = torch.from_numpy(fte)
    gte = torch.from_numpy(gte) if use_global else None
    hte = torch.from_numpy(hte) if use_gauss else None
    t_test = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    per_class = {}
    for c in range(10):
        idx = rng.choice(np.nonzero(ytr == c)[0], 200, replace=False)
        ftr, gtr, htr = features(xtr[idx])
        order = np.random.default_rng(params.seed).permutation(len(idx))   # the trainer's split
        n_cal = max(min(5, len(idx) // 2), int(round(params.calibration_fraction * len(idx))))
        cal, bank = order[:n_cal], order[n_cal:]
        model, _, info = fit(feats, ftr[bank], ftr[cal], params, gtr[bank] if use_global else None,
                             gtr[cal] if use_global else None, input_shape=size,
                             h_bank=htr[bank] if use_gauss else None, h_cal=htr[cal] if use_gauss else None)
        with torch.no_grad():
            score = np.concatenate([model.score_features(fte[i:i + 500], None if gte is None else gte[i:i + 500],
                                                         None if hte is None else hte[i:i + 500])[1]
                                    .numpy() for i in range(0, len(fte), 500)])
        per_class[CLASSES[c]] = auroc(score, (yte != c).astype(int))
        print(f"  fmnist {c} {CLASSES[c]:<12} AUROC {per_class[CLASSES[c]]:.4f}  bank {info['memory_bank']['bank_size']}",
              flush=True)
    return {"mean_auroc": float(np.mean(list(per_class.values()))), "per_class": per_class, "input_size": list(size),
            "global_term": use_global, "n_test": int(len(fte)), "n_train_per_class": 200,
            "test_feature_s": round(t_test, 1), "params": params.model_dump()}


def textures(args) -> dict:
    from host import Bundle, Progress
    from loupe_dl_anomaly.runtime import AnomalyRuntime
    from loupe_trainer.anomaly.trainer import AnomalyParams, AnomalyTrainer
    from loupe_trainer.samples import make_texture_dataset

    out = {}
    for cat in ("brushed_metal", "fabric"):
        root = make_texture_dataset(Path(args.out) / "data", cat, 200, 30, 15, 256, seed=0)
        t0 = time.perf_counter()
        bundle = AnomalyTrainer().train(root, Path(args.out) / f"{cat}.bundle",
                                        AnomalyParams(**json.loads(args.params or "{}")), Progress())
        train_s = time.perf_counter() - t0
        res = AnomalyRuntime().evaluate(Bundle.load(bundle.path), root, Path(args.out) / f"eval_{cat}", Progress())
        out[cat] = {"image_auroc": res["image_auroc"], "pixel_auroc": res["pixel_auroc"], "f1": res["f1"],
                    "train_s": round(train_s, 1), "bank": bundle.meta["memory_bank"]["bank_size"],
                    "eval_ms_per_image": res["ms_per_image"], "per_type_auroc": res["per_type_auroc"]}
        print(f"  {cat}: {out[cat]}", flush=True)
    return out


def _cpu_ms_per_image(bundle, images_dir: Path, n: int = 20) -> float:
    """Median CPU time (process time: immune to the process being paused) of one bare ONNX Runtime run of
    the bundle's graph, preprocessing included; meaningful with one thread (``--params '{"threads":1}'``)."""
    from loupe_dl_anomaly.data import list_images, prepare, read_image
    from loupe_trainer.common import ort_session

    size = tuple(bundle.meta["input_size"])
    sess = ort_session(bundle.path / "model.onnx", int(bundle.meta["params"].get("threads", 1)))
    imgs = [read_image(p) for p in list_images(images_dir)[:n]]
    sess.run(None, {"image": prepare(imgs[0], size)})
    times = []
    for _ in range(3):
        for im in imgs:
            c0 = time.process_time()
            sess.run(None, {"image": prepare(im, size)})
            times.append((time.process_time() - c0) * 1e3)
    return round(statistics.median(times), 2)


def hard(args) -> dict:
    """The hard development set: train once per category, evaluate at the calibrated strength (and
    optionally at other strengths, on test sets that share the training and good test images)."""
    import shutil

    from host import Bundle, Progress
    from loupe_dl_anomaly.runtime import AnomalyRuntime
    from loupe_trainer.anomaly.trainer import AnomalyParams, AnomalyTrainer
    from loupe_trainer.samples_hard import HARD_CATEGORIES, STRENGTH, make_hard_dataset

    params = AnomalyParams(**json.loads(args.params or "{}"))
    strengths = [float(v) for v in args.strengths.split(",")] if args.strengths else []
    out: dict = {"seed": args.seed, "params": json.loads(args.params or "{}"), "categories": {}}
    base = Path(args.data) if args.data else Path(args.out)
    for cat in args.category or HARD_CATEGORIES:
        data = base / f"hard_seed{args.seed}"
        root = data / cat
        if not (root / "train").is_dir():
            make_hard_dataset(data, cat, 200, 40, 10, 256, seed=args.seed)
        t0, c0 = time.perf_counter(), time.process_time()
        bundle = AnomalyTrainer().train(root, Path(args.out) / f"hard_{cat}.bundle", params, Progress())
        train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        b = Bundle.load(bundle.path)
        res = AnomalyRuntime().evaluate(b, root, None, Progress())
        row = {"strength": STRENGTH[cat], "image_auroc": round(res["image_auroc"], 4),
               "pixel_auroc": round(res["pixel_auroc"], 4),
               "per_type_auroc": {k: round(v, 4) for k, v in res["per_type_auroc"].items()},
               "train_s": round(train_s, 1), "train_cpu_s": round(train_cpu_s, 1),
               "eval_ms_per_image": round(res["ms_per_image"], 1),
               "cpu_ms_per_image": _cpu_ms_per_image(b, root / "test" / "good")}
        for st in strengths:
            sroot = base / f"hard_seed{args.seed}_s{st}" / cat
            if not (sroot / "test").is_dir():
                # the training images are drawn (not written) first, so the good test images are those of
                # the full set and only the defects differ
                make_hard_dataset(sroot.parent, cat, 200, 40, 10, 256, seed=args.seed, strength=st,
                                  write_train=False)
            r = AnomalyRuntime().evaluate(b, sroot, None, Progress())
            row[f"s{st}"] = {"image_auroc": round(r["image_auroc"], 4), "pixel_auroc": round(r["pixel_auroc"], 4),
                             "per_type_auroc": {k: round(v, 4) for k, v in r["per_type_auroc"].items()}}
            if not args.data:
                shutil.rmtree(sroot.parent, ignore_errors=True)
        out["categories"][cat] = row
        print(f"  hard {cat}: {json.dumps(row)}", flush=True)
    cats = out["categories"].values()
    out["mean_image_auroc"] = round(float(np.mean([c["image_auroc"] for c in cats])), 4)
    out["mean_pixel_auroc"] = round(float(np.mean([c["pixel_auroc"] for c in cats])), 4)
    return out


RECIPE = """\
loupe_recipe: 1
name: bench-anomaly
source: {{spec: "folder:{images}", pattern: "*.png"}}
inspect:
  - tool: anomaly.patchcore
    name: surface
    params: {{model: {{path: {bundle}, sha256: {sha}}}}}
    limits: {{score: {{max: 1.0, review_max: 1.3}}}}
"""


def speed(args, cat: str = "brushed_metal") -> dict:
    """loupe's per-frame path vs the bare session vs the trunk alone, interleaved, same process."""
    from host import Bundle, create_plugin_manager, model_sha256
    from host.core.recipe import Recipe
    from host.core.runner import Pipeline
    from host.core.types import Frame
    from loupe_dl_anomaly.data import list_images, prepare, read_image
    from loupe_trainer.common import ort_session

    bundle = Path(args.out) / f"{cat}.bundle"
    images_dir = Path(args.out) / "data" / cat / "test" / "good"
    recipe_path = Path(args.out) / "bench_recipe.yaml"
    recipe_path.write_text(RECIPE.format(images=images_dir.resolve(), bundle=bundle.resolve(),
                                         sha=model_sha256(bundle)))
    pm = create_plugin_manager()
    recipe = Recipe.load(recipe_path, pm.catalogue)
    imgs = [read_image(p) for p in list_images(images_dir)]
    frames = [Frame(im, "bench", i, path=f"{i}.png") for i, im in enumerate(imgs)]
    meta = Bundle.load(bundle).meta
    sess = ort_session(bundle / "model.onnx", 2)
    size = tuple(meta["input_size"])
    # the trunk alone (the same feature graph, without the search) to attribute the time
    import torch

    from loupe_trainer.anomaly.model import PatchFeatures
    from loupe_trainer.backbone import build_backbone
    from loupe_trainer.common import export_onnx

    feat = meta["feature"]
    trunk = PatchFeatures(build_backbone(variant=feat["backbone"].replace("efficientnet_", "")), tuple(feat["layers"]),
                          feat["aggregate"]).eval()
    tpath = export_onnx(trunk, torch.zeros(1, 3, *size), Path(args.out) / "trunk_only.onnx", ["image"], ["features"],
                        fold_pads=bool(meta.get("graph", {}).get("pads_folded")))
    tsess = ort_session(tpath, 2)
    pipe = Pipeline(recipe)
    t_pipe, t_bare, t_trunk = [], [], []
    try:
        pipe.process(frames[0])
        sess.run(None, {"image": prepare(imgs[0], size)})
        tsess.run(None, {"image": prepare(imgs[0], size)})
        # blocks of all images per path, the order rotated each round, the first run of each block (after a
        # switch) dropped: three sessions' caches and thread pools would otherwise disturb each other
        def bare(i):
            sess.run(None, {"image": prepare(imgs[i], size)})

        def piped(i):
            pipe.process(frames[i])

        def trunk_run(i):
            tsess.run(None, {"image": prepare(imgs[i], size)})

        paths = [(bare, t_bare), (piped, t_pipe), (trunk_run, t_trunk)]
        for r in range(args.repeat * 2):
            for fn, acc in paths[r % 3:] + paths[:r % 3]:
                fn(0)
                for i in range(len(imgs)):
                    t0 = time.perf_counter()
                    fn(i)
                    acc.append((time.perf_counter() - t0) * 1e3)
    finally:
        pipe.close()
    res = {"loupe_pipeline_ms": statistics.median(t_pipe), "bare_ort_ms": statistics.median(t_bare),
           "trunk_only_ms": statistics.median(t_trunk), "n": len(t_pipe),
           "bank": meta["memory_bank"]["bank_size"], "dim": feat["dim"], "map_size": feat["map_size"],
           "loadavg": os.getloadavg()}
    res["overhead_pct"] = 100.0 * (res["loupe_pipeline_ms"] / res["bare_ort_ms"] - 1.0)
    # peak RSS of a real `loupe run`
    # measured from a fresh parent, so that no earlier child of this process counts
    exe = Path(sys.executable).with_name("loupe")
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", probe, str(exe), "run", str(recipe_path), "--report",
                        f"jsonl:{Path(args.out) / 'run.jsonl'}", "-q"], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "2"})
    wall = time.perf_counter() - t0
    rc, maxrss = (int(v) for v in r.stdout.split()[-2:])
    r.returncode = rc
    after = before = maxrss
    res["loupe_run_rc"] = r.returncode
    res["loupe_run_wall_s"] = round(wall, 2)
    res["loupe_run_peak_rss_mb"] = round(max(after, before) / 1024.0, 1)
    print(f"  speed: {res}", flush=True)
    return res


def _small_spot(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Darken a soft spot of radius ~4 px in place; return its exact mask."""
    h, w = img.shape[:2]
    cy, cx = rng.uniform(0.1, 0.9, 2) * (h, w)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    alpha = np.clip(1.3 - ((y - cy) ** 2 + (x - cx) ** 2) / 16.0, 0, 1) ** 0.7
    img[...] = np.clip(np.round(img.astype(np.float32) - 28.0 * alpha[..., None]), 0, 255).astype(np.uint8)
    return alpha > 0.15


def tiling(args, size: int = 1024) -> dict:
    import cv2

    from host import Bundle, Progress
    from loupe_dl_anomaly.runtime import AnomalyRuntime
    from loupe_trainer.anomaly.trainer import AnomalyParams, AnomalyTrainer
    from loupe_trainer.samples import texture_image

    root = Path(args.out) / "data" / "large_metal"
    rng = np.random.default_rng(5)
    for sub, n in (("train/good", 30), ("test/good", 10), ("test/spot", 10)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, _ = texture_image("brushed_metal", rng, size)
            if sub == "test/spot":
                (root / "ground_truth" / "spot").mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / "ground_truth" / "spot" / f"{i:03d}_mask.png"),
                            _small_spot(img, rng).astype(np.uint8) * 255)
            cv2.imwrite(str(root / sub / f"{i:03d}.png"), img)
    out = {}
    for name, kw in (("whole_image_256", {}), ("tiles_256", {"tile": 256})):
        t0 = time.perf_counter()
        b = AnomalyTrainer().train(root, Path(args.out) / f"large_{name}.bundle", AnomalyParams(**kw), Progress())
        train_s = time.perf_counter() - t0
        res = AnomalyRuntime().evaluate(Bundle.load(b.path), root, None, Progress())
        out[name] = {"image_auroc": res["image_auroc"], "pixel_auroc": res["pixel_auroc"], "f1": res["f1"],
                     "train_s": round(train_s, 1), "ms_per_image": round(res["ms_per_image"], 1),
                     "tiles": (b.meta.get("tiling") or {}).get("n_training_tiles")}
        print(f"  tiling {name}: {out[name]}", flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="bench-anomaly")
    p.add_argument("--fmnist-test", type=int, default=10000)
    p.add_argument("--fmnist-size", type=int, default=0, help="model input size (default: the trainer's auto)")
    p.add_argument("--fmnist-global", choices=["auto", "on", "off"], default=None)
    p.add_argument("--skip-fmnist", action="store_true")
    p.add_argument("--skip-textures", action="store_true")
    p.add_argument("--skip-tiling", action="store_true")
    p.add_argument("--speed-only", action="store_true", help="reuse OUT's trained bundles: speed and memory only")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--set", choices=["easy", "hard"], default="easy",
                   help="hard: only the hard development set of issue 18")
    p.add_argument("--seed", type=int, default=0, help="data seed of the hard set (choose on 1, report on 0)")
    p.add_argument("--params", default=None, help="JSON object of AnomalyParams fields (every set)")
    p.add_argument("--category", nargs="+", default=None, help="hard-set categories (default: all)")
    p.add_argument("--strengths", default=None, help="hard set: also evaluate at these defect strengths")
    p.add_argument("--data", default=None, help="hard set: keep (and reuse) the generated images here")
    args = p.parse_args()
    import torch

    torch.set_num_threads(2)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    result: dict = {"threads": 2, "loadavg_start": load0}
    if args.set == "hard":
        result["hard"] = hard(args)
        result["loadavg_end"] = os.getloadavg()
        name = f"anomaly_hard_seed{args.seed}.json"
        (Path(args.out) / name).write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return 0
    if args.speed_only:
        result["speed"] = speed(args)
    elif not args.skip_textures:
        result["textures"] = textures(args)
        result["speed"] = speed(args)
    if not args.skip_tiling and not args.speed_only:
        result["tiling"] = tiling(args)
    if not args.skip_fmnist and not args.speed_only:
        result["fmnist"] = fmnist(args)
    result["loadavg_end"] = os.getloadavg()
    (Path(args.out) / "anomaly_bench.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
