"""Benchmark of ``loupe optimize`` on the demo models: fp32 vs int8 vs prune (vs fp16), one run each task.

    .venv/bin/python bench/optimize.py --work /tmp/loupe-opt-bench [--quick]

Builds (once, cached in --work) a generated texture set (``loupe_trainer.samples``, MVTec layout) and a
Fashion-MNIST subset (class folders), trains a small anomaly and a small classification model with the
normal ``loupe train`` commands, optimises each with ``loupe optimize --method int8|prune|fp16``, then runs
``loupe bench --compare`` (fp32 first, so the speed-up column is against fp32) with ``--data`` for the
accuracy / AUROC column. Timings: OMP_NUM_THREADS=2, ONNX Runtime 2 intra-op threads, median over
``--repeat`` passes on the evaluation images. Writes WORK/<task>/bench.md and bench.json and prints them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOUPE = [str(ROOT / ".venv" / "bin" / "loupe")]
FMNIST = Path("/usr/share/datasets/fashion-mnist")
FM_CLASSES = {0: "tshirt", 1: "trouser", 2: "pullover", 3: "dress", 7: "sneaker", 8: "bag"}



from loupe_trainer.datasets import read_idx, write_class_folders  # noqa: E402


def make_fashion(out: Path, n_train: int, n_test: int, classes: dict[int, str] = FM_CLASSES) -> Path:
    """train/<class>/ and test/<class>/ PNGs from the Fashion-MNIST test file (deterministic)."""
    if (out / "train").is_dir():
        return out
    x = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")
    y = read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz")
    return write_class_folders(out, x, y, classes, {"train": slice(0, n_train), "test": slice(500, 500 + n_test)})


def make_texture(out: Path, category: str, n_train: int, n_good: int, n_defect: int, size: int) -> Path:
    from loupe_trainer.samples import make_texture_dataset

    if not (out / category / "train").is_dir():
        make_texture_dataset(out, category, n_train, n_good, n_defect, size=size, seed=0)
    return out / category


def loupe(*args, quiet=False) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    cmd = LOUPE + [str(a) for a in args]
    print("$ loupe " + " ".join(str(a) for a in args), flush=True)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-4000:], r.stderr[-4000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/loupe-opt-bench")
    ap.add_argument("--quick", action="store_true", help="smaller data and shorter recovery")
    ap.add_argument("--task", choices=["anomaly", "classify", "both"], default="both")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fp16", action="store_true", help="also build and time an fp16 bundle")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    q = args.quick
    results = {}
    if args.task in ("classify", "both"):
        data = make_fashion(work / "fashion", 20 if q else 60, 15 if q else 50)
        b = work / "classify" / "fp32"
        if not (b / "manifest.json").exists():
            loupe("train", "classify", data, "--out", b, "--input-size", 96, "--epochs", 3 if q else 8,
                  "--max-minutes", 3 if q else 6, "-q")
        results["classify"] = optimise_and_compare(work / "classify", b, data, args)
    if args.task in ("anomaly", "both"):
        data = make_texture(work / "textures", "fabric", 30 if q else 60, 10 if q else 20, 10 if q else 20, 256)
        b = work / "anomaly" / "fp32"
        if not (b / "manifest.json").exists():
            loupe("train", "anomaly", data, "--out", b, "-q")
        results["anomaly"] = optimise_and_compare(work / "anomaly", b, data, args)
    for task, table in results.items():
        print(f"\n## {task}\n\n{table}")
    return 0


def optimise_and_compare(d: Path, fp32: Path, data: Path, args) -> str:
    bundles = [fp32]
    for method, extra in (("int8", []), ("prune", ["--steps", 60, "--max-minutes", 2] if args.quick else []),
                          *((("fp16", []),) if args.fp16 else ())):
        out = d / method
        if not (out / "manifest.json").exists():
            t0 = time.time()
            loupe("optimize", fp32, "--method", method, "--out", out, "-q", *extra)
            print(f"  {method}: {time.time() - t0:.0f} s")
        bundles.append(out)
        rec = json.loads((out / "bundle.json").read_text())["optimization"]
        keep = {k: rec[k] for k in ("float_groups", "backbone_macs", "accuracy", "cpu_timing") if k in rec}
        print(json.dumps(keep, indent=1)[:1500])
    # the folder source does not recurse by default and bench has no --source-opt: time on a flat copy of up
    # to 60 test images (all classes / defect types, interleaved)
    timing = d / "timing-images"
    if not timing.is_dir():
        import shutil

        timing.mkdir()
        files = sorted(p for p in (data / "test").rglob("*.png"))
        rng = np.random.default_rng(0)
        for i in sorted(rng.permutation(len(files))[:60]):
            shutil.copy(files[i], timing / f"{files[i].parent.name}_{files[i].name}")
    loupe("bench", "--compare", *bundles, "--source", f"folder:{timing}", "--data", data, "--repeat", args.repeat,
          "--out", d, "--limit", 60)
    table = (d / "bench.md").read_text()
    graph = graph_timing(bundles, d, rounds=args.repeat + 1)
    (d / "graph-timing.md").write_text(graph + "\n")
    return table + "\nGraph only (one session at a time, thread spinning off, 4 alternating rounds):\n\n" + graph


def graph_timing(bundles: list[Path], d: Path, rounds: int = 4) -> str:
    """Median ms of each bundle's ONNX graph alone, plus the fp32 graph with the float-only rewrites the int8
    optimiser also applies (Pad folded into Conv; anomaly distance as one GEMM + min): numerically identical,
    it shows how much of the int8 bundle's gain is quantisation and how much is the graph fix.
    One session alive at a time, made by the host's session factory (idle threads sleep: on this shared 2-core
    machine, idle ORT threads that spin steal the CPU from whatever runs next, which distorts interleaved
    comparisons)."""
    import gc
    import statistics

    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from loupe_trainer.optimize.common import model_file
    from loupe_trainer.optimize.graph import fold_pads, fuse_nn_distance
    from host import Bundle, create_session

    bs = [Bundle.load(b) for b in bundles]
    graphs = [(b.path.name, b.path / model_file(b)) for b in bs]
    folded = d / "fp32-folded.onnx"
    quant_pre_process(str(graphs[0][1]), str(folded), skip_symbolic_shape=True)
    m = onnx.load(str(folded))
    fold_pads(m)
    fuse_nn_distance(m)
    onnx.save(m, str(folded))
    graphs.insert(1, ("fp32 + int8's float rewrites (reference)", folded))
    h, w = bs[0].meta["input_size"][:2]
    lo, hi = (0.0, 255.0) if bs[0].task == "anomaly" else (-1.0, 1.0)
    x = np.random.default_rng(0).uniform(lo, hi, (1, 3, h, w)).astype(np.float32)
    times: dict[str, list[float]] = {n: [] for n, _ in graphs}
    for r in range(rounds):
        for name, path in (graphs if r % 2 == 0 else graphs[::-1]):
            s = create_session(path, 2)
            inp = s.get_inputs()[0].name
            for _ in range(3):
                s.run(None, {inp: x})
            for _ in range(20):
                t0 = time.perf_counter()
                s.run(None, {inp: x})
                times[name].append((time.perf_counter() - t0) * 1e3)
            del s
            gc.collect()
    base = statistics.median(times[graphs[0][0]])
    lines = ["| graph | median ms | speed-up vs fp32 |", "|---|---|---|"]
    for name, _ in graphs:
        med = statistics.median(times[name])
        lines.append(f"| {name} | {med:.2f} | {base / med:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
