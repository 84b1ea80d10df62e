"""``loupe bench``: medians of per-image time for a recipe or a bundle, and bundle comparisons."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.bundle import MANIFEST, Bundle
from ..core.contracts import Command, Progress
from ..core.errors import LoupeError, UsageError
from ..core.recipe import Recipe
from ..core.runner import Pipeline, open_source
from ..core.sessions import ENGINE_CHOICES, create_session, probe_inputs, set_engine_override
from .support import json_default, source_options


class BenchCommand(Command):
    """``loupe bench``: median per-frame time of a recipe (per step too) or a bundle's predictor."""

    name = "bench"
    help = "median time per image of a recipe or a bundle"

    def add_arguments(self, s: argparse.ArgumentParser) -> None:
        s.add_argument("target", nargs="?", metavar="RECIPE|BUNDLE")
        s.add_argument("--source", help="images to time on (default: the recipe's source; for bundles the test "
                                        "split of --data, else random images of the model's input size)")
        s.add_argument("--source-opt", action="append", metavar="KEY=VALUE", help="a source option (repeatable)")
        s.add_argument("--json", action="store_true")
        s.add_argument("--repeat", type=int, default=1, help="passes over the source (default 1)")
        s.add_argument("--limit", type=int, default=200, help="at most N images (default 200)")
        s.add_argument("--compare", nargs="+", metavar="BUNDLE", help="compare bundles side by side")
        s.add_argument("--data", help="evaluation data for --compare (accuracy / AUROC column)")
        s.add_argument("--out", help="write the comparison as DIR/bench.md and DIR/bench.json")
        s.add_argument("--engine", action="append", choices=ENGINE_CHOICES,
                       help="inference engine; repeat it to compare engines on a BUNDLE side by side "
                            "(batch 1 and best batch, parity against the CPU)")

    def run(self, args: argparse.Namespace) -> int:
        result = bench_target(args.plugin_manager, args)
        if args.json:
            print(json.dumps(result, default=json_default))
        elif result.get("kind") == "compare":
            print(result["markdown"])
        else:
            for k, v in result.items():
                print(f"{k:>24}: {v:.4f}" if isinstance(v, float) else f"{k:>24}: {v}")
        return 0


def _load_images(pm, spec, base_dir: Path, limit: int, options: dict[str, Any] | None = None) -> list:
    source = open_source(spec, pm.catalogue, base_dir=base_dir, options=options)
    frames = []
    try:
        for frame in source.frames():
            if frame.image is not None:
                frames.append(frame)
            if len(frames) >= limit:
                break
    finally:
        source.close()
    if not frames:
        raise UsageError(f"source {spec if isinstance(spec, str) else spec.spec!r}: no readable images to time")
    return frames


def bench_recipe(pm, recipe: Recipe, frames: list, repeat: int = 1) -> dict[str, Any]:
    """Time the per-frame path (images decoded beforehand): median total and per-step ms."""
    pipeline = Pipeline(recipe)
    try:
        pipeline.process(frames[0])  # warm-up: lazy initialisation, caches
        totals: list[float] = []
        steps: dict[str, list[float]] = {}
        for _ in range(max(1, repeat)):
            for frame in frames:
                t0 = time.perf_counter()
                result = pipeline.process(frame)
                totals.append((time.perf_counter() - t0) * 1e3)
                for k, v in result.timings.items():
                    steps.setdefault(k, []).append(v)
    finally:
        pipeline.close()
    med = statistics.median(totals)
    out: dict[str, Any] = {"target": recipe.file, "kind": "recipe", "images": len(frames),
                           "runs": len(totals), "median_ms": med, "images_per_s": 1e3 / med if med else 0.0}
    for k, v in steps.items():
        out[f"step.{k}.median_ms"] = statistics.median(v)
    out["host_overhead_ms"] = med - sum(statistics.median(v) for v in steps.values())
    return out


def bench_bundle(pm, bundle: Bundle, images: list[np.ndarray], repeat: int = 1) -> dict[str, Any]:
    entry = pm.catalogue.runtimes.get(bundle.task)
    if entry is None:
        raise UsageError(f"{bundle.path}: no installed runtime opens {bundle.task!r} bundles")
    predict = entry.cls().predictor(bundle)
    for img in images[:3]:
        predict(img)
    times = []
    for _ in range(max(1, repeat)):
        for img in images:
            t0 = time.perf_counter()
            predict(img)
            times.append((time.perf_counter() - t0) * 1e3)
    med = statistics.median(times)
    size = sum(f.stat().st_size for f in bundle.path.iterdir() if f.is_file()) / 1e6
    return {"target": str(bundle.path), "kind": "bundle", "task": bundle.task, "images": len(images),
            "runs": len(times), "median_ms": med, "images_per_s": 1e3 / med if med else 0.0, "size_mb": size,
            "optimization": bundle.meta.get("optimization", {}).get("method", "none")}


def _synthetic(bundle: Bundle, n: int = 30) -> list[np.ndarray]:
    size = bundle.meta.get("input_size") or [256, 256]
    h, w = (size, size) if isinstance(size, int) else size[:2]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _timing_images(pm, args, bundle: Bundle | None = None) -> list[np.ndarray] | None:
    """Images to time on: --source (with --source-opt), else the test split of --data, else None."""
    options = source_options(getattr(args, "source_opt", None))
    if args.source:
        frames = _load_images(pm, args.source, Path.cwd(), args.limit, options)
    elif getattr(args, "data", None):
        data = Path(args.data)
        folder = data / "test" if (data / "test").is_dir() else data
        frames = _load_images(pm, f"folder:{folder}", Path.cwd(), args.limit, {"recursive": True, **options})
    else:
        return None
    return [f.image for f in frames]


def bench_target(pm, args) -> dict[str, Any]:
    if len(getattr(args, "engine", None) or []) > 1:
        return compare_engines(pm, args, args.engine)
    if args.compare:
        return compare_bundles(pm, [Path(b) for b in args.compare], args)
    if not args.target:
        raise UsageError("bench needs a RECIPE or BUNDLE (or --compare BUNDLE...)")
    target = Path(args.target)
    if target.is_dir() and (target / MANIFEST).exists():
        bundle = Bundle.load(target)
        images = _timing_images(pm, args)
        return bench_bundle(pm, bundle, images if images is not None else _synthetic(bundle), args.repeat)
    recipe = Recipe.load(target, pm.catalogue)
    if args.source:
        frames = _load_images(pm, args.source, Path.cwd(), args.limit,
                              source_options(args.source_opt))
    elif recipe.doc.source is not None:
        frames = _load_images(pm, recipe.doc.source, recipe.base_dir, args.limit)
    else:
        raise UsageError(f"{target}: the recipe names no source; give one with --source folder:PATH")
    return bench_recipe(pm, recipe, frames, args.repeat)


def compare_bundles(pm, paths: list[Path], args) -> dict[str, Any]:
    """Size, median ms, images/s and (with --data) accuracy or AUROC of each bundle, in one run."""
    bundles = [Bundle.load(p) for p in paths]
    images = _timing_images(pm, args)  # --source, else the --data test split, else synthetic per bundle
    rows = []
    for b in bundles:
        row = bench_bundle(pm, b, images if images is not None else _synthetic(b), args.repeat)
        if args.data:
            runtime = pm.catalogue.runtimes[b.task].cls()
            metrics = runtime.evaluate(b, Path(args.data), None, Progress())
            for key in ("accuracy", "image_auroc", "pixel_auroc", "f1"):
                if key in metrics:
                    row[key] = metrics[key]
        rows.append(row)
    base = rows[0]["median_ms"]
    for r in rows:
        r["speedup"] = base / r["median_ms"] if r["median_ms"] else 0.0
    table = _markdown(rows)
    out = {"kind": "compare", "rows": rows, "markdown": table,
           "threads": os.environ.get("OMP_NUM_THREADS", "default")}
    if args.out:
        d = Path(args.out)
        d.mkdir(parents=True, exist_ok=True)
        (d / "bench.md").write_text(table + "\n")
        (d / "bench.json").write_text(json.dumps(rows, indent=2))
    return out


def _markdown(rows: list[dict[str, Any]]) -> str:
    metric_keys = [k for k in ("accuracy", "image_auroc", "pixel_auroc", "f1") if any(k in r for r in rows)]
    head = ["bundle", "method", "size MB", "median ms", "img/s", "speed-up"] + metric_keys
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [Path(r["target"]).name, r["optimization"], f"{r['size_mb']:.2f}", f"{r['median_ms']:.2f}",
                 f"{r['images_per_s']:.1f}", f"{r['speedup']:.2f}x"]
        cells += [f"{r[k]:.4f}" if k in r else "" for k in metric_keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare_engines(pm, args, engines: list[str]) -> dict[str, Any]:
    """One bundle on several engines in one run: per-image latency through the runtime (batch 1), the
    graph's throughput at its best batch size, and the largest difference of the predictions from the
    CPU's on the same images."""
    target = Path(args.target or "")
    if not (target.is_dir() and (target / MANIFEST).exists()):
        raise UsageError("bench --engine A --engine B compares engines on a BUNDLE")
    bundle = Bundle.load(target)
    images = _timing_images(pm, args)
    images = images if images is not None else _synthetic(bundle)
    runtime = pm.catalogue.runtimes[bundle.task].cls()
    set_engine_override("cpu")
    reference = [runtime.predictor(bundle)(img) for img in images[:20]]
    rows = []
    for engine in engines:
        set_engine_override(engine)
        row: dict[str, Any] = {"engine": engine}
        try:
            predict = runtime.predictor(bundle)
            got = [predict(img) for img in images[:20]]
            row.update(bench_bundle(pm, bundle, images, args.repeat))
            row["max_diff_vs_cpu"] = max((_prediction_diff(a, b) for a, b in zip(reference, got)), default=0.0)
            row.update(_best_batch(bundle, engine))
            row["status"] = "ok"
        except LoupeError as exc:
            row["status"] = f"not usable: {exc}"
        rows.append(row)
    set_engine_override(None)
    head = ["engine", "runs on", "median ms (batch 1)", "img/s (batch 1)", "graph img/s (batch 1)", "best batch",
            "ms per batch (best)", "img/s (best batch)", "max diff vs cpu", "engine parity", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['engine']} |" + " |" * (len(head) - 2) + f" {r['status']} |")
            continue
        par = r.get("engine_parity") or {}
        par_txt = (f"{par['worst']:.1e} of scale ({'stored' if par['source'] == 'stored images' else 'probes'})"
                   if par else "reference")
        lines.append(f"| {r['engine']} | {r['runs_on']} | {r['median_ms']:.2f} | {r['images_per_s']:.1f} | "
                     f"{r['batch1_images_per_s']:.1f} | {r['best_batch']} | {r['best_batch_ms']:.2f} | "
                     f"{r['best_batch_images_per_s']:.1f} | {r['max_diff_vs_cpu']:.2e} | {par_txt} | ok |")
    table = "\n".join(lines)
    out = {"kind": "compare", "target": str(bundle.path), "rows": rows, "markdown": table,
           "threads": os.environ.get("OMP_NUM_THREADS", "default")}
    if args.out:
        d = Path(args.out)
        d.mkdir(parents=True, exist_ok=True)
        (d / "bench.md").write_text(table + "\n")
        (d / "bench.json").write_text(json.dumps(rows, indent=2, default=json_default))
    return out


def _prediction_diff(a: Any, b: Any) -> float:
    """The largest absolute difference between two predictions' numbers (maps, scores, probabilities)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return max((_prediction_diff(a[k], b[k]) for k in a if k in b), default=0.0)
    try:
        x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    except (TypeError, ValueError):
        return 0.0 if a == b else float("inf")
    if x.shape != y.shape:
        return float("inf")
    return float(np.abs(x - y).max()) if x.size else 0.0


def _best_batch(bundle: Bundle, engine: str, batches: tuple[int, ...] = (1, 2, 4, 8, 16)) -> dict[str, Any]:
    """The graph's images/s at each batch size its input allows (a fixed batch dimension allows only 1),
    and the engine's parity check on the bundle's stored images (or probes, for older bundles)."""
    model = bundle.file(bundle.info.model_file if bundle.info else bundle.meta.get("model_file", "model.onnx"))
    sess = create_session(model, engine=engine)
    first = sess.get_inputs()[0]
    dynamic = not (isinstance(first.shape[0], int) and first.shape[0] > 0)
    best, best_rate, best_ms, rate1 = 1, 0.0, 0.0, 0.0
    for b in (batches if dynamic else (1,)):
        feed = {i.name: _batched(v, b) for i, v in zip(sess.get_inputs(), probe_inputs(sess).values())}
        sess.run(None, feed)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - t0)
        rate = b / statistics.median(times)
        rate1 = rate if b == 1 else rate1
        if rate > best_rate:
            best, best_rate, best_ms = b, rate, statistics.median(times) * 1e3
    return {"best_batch": best, "best_batch_images_per_s": best_rate, "best_batch_ms": best_ms,
            "batch1_images_per_s": rate1, "batch_dynamic": dynamic, "runs_on": sess.engine,
            "engine_parity": getattr(sess, "parity", None)}


def _batched(x: np.ndarray, b: int) -> np.ndarray:
    return np.repeat(x[:1], b, axis=0)
