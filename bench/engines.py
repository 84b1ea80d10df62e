"""Inference engines side by side, fp32 / fp16 / int8, in one run.

For each bundle given (or, with --make, a small anomaly and a small classify bundle trained here), this
makes its fp16 and int8 variants with ``loupe optimize`` (int8 twice: QOperator for ONNX Runtime's CPU
provider and QDQ, the format OpenVINO and TensorRT read) and runs ``loupe bench VARIANT --engine ...``
on every engine usable here, then writes one Markdown table and one JSON file: latency and images/s at
batch 1 and at the best batch size, the difference from the CPU and the engine parity on the bundle's
stored images, with ratios against ONNX Runtime CPU on the same variant in the same run.

On a GPU machine (``pip install 'loupe-host[gpu]'``, plus TensorRT 10 for ``tensorrt``)::

    OMP_NUM_THREADS=4 .venv/bin/python bench/engines.py --make --out bench-engines \\
        --engine cpu --engine openvino --engine cuda --engine tensorrt --engine auto

or on bundles you have: ``bench/engines.py BUNDLE [BUNDLE ...] --out DIR --engine ...``. An engine that
cannot run here is listed with the reason (what to install); nothing here needs a GPU to run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

LOUPE = [str(Path(sys.executable).with_name("loupe"))]


def loupe(*args, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(LOUPE + [str(a) for a in args], capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"loupe {' '.join(map(str, args))} failed:\n{r.stderr[-3000:]}")
    return r


def make_bundles(work: Path) -> list[Path]:
    """A small anomaly bundle (generated textures, 128 px) and a small classify bundle (Fashion-MNIST, 64 px)."""
    from loupe_trainer.samples import make_texture_dataset

    tex = make_texture_dataset(work / "tex", "brushed_metal", n_train=30, n_test_good=8, n_test_defect=4,
                               size=128, seed=3)
    loupe("train", "anomaly", tex, "--out", work / "anomaly", "--image-size", "128", "--max-bank", "2048", "-q")
    out = [work / "anomaly"]
    try:
        from loupe_trainer.datasets import fashion_mnist_file, read_idx, write_class_folders

        fm = Path("/usr/share/datasets/fashion-mnist")
        x = read_idx(fashion_mnist_file("t10k-images-idx3-ubyte", fm))
        y = read_idx(fashion_mnist_file("t10k-labels-idx1-ubyte", fm))
        data = write_class_folders(work / "fm", x, y, {0: "tshirt", 1: "trouser", 7: "sneaker"},
                                   {"train": slice(0, 12), "test": slice(200, 215)})
        loupe("train", "classify", data, "--out", work / "classify", "--epochs", "1", "--input-size", "64",
              "--pooling", "grid", "--max-minutes", "3", "-q")
        out.append(work / "classify")
    except FileNotFoundError as exc:
        print(f"classify bundle skipped: {exc}", file=sys.stderr)
    return out


def variants(bundle: Path, work: Path) -> list[tuple[str, Path]]:
    out = [("fp32", bundle)]
    for name, args in (("fp16", ["--method", "fp16"]),
                       ("int8 qoperator", ["--method", "int8", "--keep-float", "stem", "block0"]),
                       ("int8 qdq", ["--method", "int8", "--engine", "openvino", "--keep-float", "stem", "block0"])):
        dst = work / f"{bundle.name}-{name.replace(' ', '-')}"
        r = loupe("optimize", bundle, *args, "--out", dst, "-q", check=False)
        if r.returncode == 0:
            out.append((name, dst))
        else:
            print(f"{bundle.name} {name}: not made ({r.stderr.strip()[-300:]})", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="*", type=Path)
    ap.add_argument("--make", action="store_true", help="train a small anomaly and classify bundle first")
    ap.add_argument("--engine", action="append", default=None, help="engines (default: cpu, openvino, cuda, "
                                                                    "tensorrt, auto)")
    ap.add_argument("--limit", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench-engines"))
    a = ap.parse_args()
    engines = a.engine or ["cpu", "openvino", "cuda", "tensorrt", "auto"]
    if "cpu" not in engines:
        engines = ["cpu"] + engines  # the baseline of every ratio
    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="loupe-bench-engines-", dir=a.out))
    bundles = list(a.bundles) + (make_bundles(work) if a.make else [])
    if not bundles:
        ap.error("give BUNDLE(s) or --make")
    rows, lines = [], ["| bundle | variant | engine | ms (b1) | img/s (b1) | best batch | img/s (best) | "
                       "x cpu (b1) | x cpu (best) | max diff vs cpu | engine parity | status |",
                       "|" + "---|" * 12]
    for bundle in bundles:
        for name, path in variants(bundle, work):
            r = loupe("bench", path, *sum((["--engine", e] for e in engines), []), "--limit", a.limit,
                      "--repeat", a.repeat, "--json", check=False)
            if r.returncode != 0:
                lines.append(f"| {bundle.name} | {name} | | | | | | | | | | bench failed: "
                             f"{r.stderr.strip()[-200:]} |")
                continue
            got = json.loads(r.stdout)["rows"]
            cpu = next((g for g in got if g["engine"] == "cpu" and g["status"] == "ok"), None)
            for g in got:
                g.update(bundle=bundle.name, variant=name)
                rows.append(g)
                if g["status"] != "ok":
                    lines.append(f"| {bundle.name} | {name} | {g['engine']} |" + " |" * 8 + f" {g['status'][:160]} |")
                    continue
                x1 = cpu["median_ms"] / g["median_ms"] if cpu else float("nan")
                xb = g["best_batch_images_per_s"] / cpu["best_batch_images_per_s"] if cpu else float("nan")
                par = g.get("engine_parity") or {}
                lines.append(f"| {bundle.name} | {name} | {g['engine']}" + (f" ({g['runs_on']})" if g['engine'] ==
                             "auto" else "") + f" | {g['median_ms']:.2f} | {g['images_per_s']:.1f} | "
                             f"{g['best_batch']} | {g['best_batch_images_per_s']:.1f} | {x1:.2f} | {xb:.2f} | "
                             f"{g['max_diff_vs_cpu']:.1e} | "
                             + (f"{par['worst']:.1e} ({par['source'].split(' ')[0]})" if par else "reference")
                             + " | ok |")
    table = "\n".join(lines)
    head = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'default')}, {a.limit} images x {a.repeat}\n\n"
    (a.out / "engines.md").write_text(head + table + "\n")
    (a.out / "engines.json").write_text(json.dumps(rows, indent=2, default=str))
    print(head + table)


if __name__ == "__main__":
    main()
