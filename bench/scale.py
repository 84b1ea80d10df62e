"""Scale benchmark (issue 20): one local process against Ray with 1 and 2 workers, same images.

    OMP_NUM_THREADS=1 .venv/bin/python bench/scale.py [--images 1000] [--repeat 3] [--anomaly BUNDLE [--skip-classical]] [--json]
    OMP_NUM_THREADS=1 .venv/bin/python bench/scale.py --eval BUNDLE DATA [--repeat 3] [--json]

* Images: real photos (scikit-image) at random exposures and crops, 512 x 512 gray PNG, written once.
* Recipes: a classical one (gray, Gaussian blur, intensity, blobs, Hough lines) and, with ``--anomaly BUNDLE``
  (e.g. one made by ``loupe train anomaly``), a recipe with the ``anomaly.patchcore`` step.
* Each mode is the real ``loupe run`` command (a subprocess); the time is the run's own
  (``in X s`` in its summary: reading, steps, reporters; no interpreter start-up). Ray joins an
  instance started once by this script (``ray.init`` here, 3 CPU slots, no dashboard), so Ray's
  own start-up is not counted, but each run's actor start-up (plugins + recipe + pipeline build)
  is. Modes are interleaved, ``--repeat`` times; medians.
* Driver overhead per frame: what the driver does for each frame that a worker sent back
  (unpickle the result, write it to SQLite / Parquet), timed in this process over real results.

``--eval BUNDLE DATA`` times ``loupe eval BUNDLE DATA --json`` instead: locally and with
``--executor ray:ADDRESS --workers 2`` (the same instance), interleaved, wall time of the command
(interpreter start, listing, predictions, metrics); it checks that both print the same JSON
(``ms_per_image`` aside).

The machine is shared and has 2 cores: 2 Ray workers with 1 thread each against one local
process with 1 thread (``OMP_NUM_THREADS=1``) is the fair comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSICAL = """\
loupe_recipe: 1
name: scale-classical
preprocess:
  - tool: classical.gray
  - tool: classical.gaussian
    params: {sigma: 1.5}
inspect:
  - tool: classical.intensity
    limits: {mean: {min: 60, max: 170}}
  - tool: classical.blob
    params: {threshold: fixed, level: 128}
    limits: {}
  - tool: classical.lines
    limits: {}
"""

ANOMALY = """\
loupe_recipe: 1
name: scale-anomaly
inspect:
  - tool: anomaly.patchcore
    params: {{model: {{path: {bundle}, sha256: {sha}}}, threads: 1}}
"""


def make_images(d: Path, n: int, seed: int = 0) -> None:
    import cv2
    import skimage.data as data

    rng = np.random.default_rng(seed)
    photos = [data.camera(), data.coins(), data.moon(), data.page(), cv2.cvtColor(data.astronaut(),
                                                                                    cv2.COLOR_RGB2GRAY)]
    photos = [cv2.resize(p, (768, 768)) for p in photos]
    for i in range(n):
        p = photos[i % len(photos)]
        x, y = rng.integers(0, 256, 2)
        img = np.clip(p[y:y + 512, x:x + 512].astype(np.float32) * rng.uniform(0.5, 1.5), 0, 255).astype(np.uint8)
        sub = d / f"part{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        cv2.imwrite(str(sub / f"{i:06d}.png"), img)


def loupe(*args: str) -> tuple[float, int]:
    exe = Path(sys.executable).with_name("loupe")
    r = subprocess.run([str(exe), *args, "-q"], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode != 0:
        raise SystemExit(f"loupe {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    m = re.search(r"(\d+) frames: .* in ([\d.]+) s", r.stdout)
    return float(m.group(2)), int(m.group(1))


def driver_overhead(recipe_file: Path, images: Path, n: int = 300) -> dict:
    """Per-frame cost on the driver: unpickle a worker's result, write it to SQLite and to Parquet."""
    from host import Pipeline, Recipe, RunInfo, create_plugin_manager
    from loupe_ray.sources import ArchiveSource, read_frame

    pm = create_plugin_manager()
    recipe = Recipe.load(recipe_file, pm.catalogue)
    pipe = Pipeline(recipe)
    src = ArchiveSource(ArchiveSource.Params(target=str(images)))
    blobs = []
    for i, path, _ in src.iter_paths():
        if i >= n:
            break
        r = pipe.process(read_frame(i, path, "bench"))
        r.image = None
        for t in r.results:
            t.overlays = list(t.overlays)
        blobs.append(pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL))
    pipe.close()
    out = {"result_bytes_median": statistics.median(len(b) for b in blobs)}
    with tempfile.TemporaryDirectory() as tmp:
        for scheme, target in (("sqlite", f"{tmp}/r.sqlite"), ("parquet", f"{tmp}/pq")):
            run = RunInfo(run_id=f"bench{scheme}", recipe=recipe, recipe_hash=recipe.hash, source="bench",
                          started=time.time())
            rep = pm.catalogue.reporters[scheme].cls(target, run)
            rep.open()
            t0 = time.perf_counter()
            for b in blobs:
                rep.write(pickle.loads(b))
            rep.close()
            out[f"driver_ms_per_frame_{scheme}"] = 1e3 * (time.perf_counter() - t0) / len(blobs)
        t0 = time.perf_counter()
        for b in blobs:
            pickle.loads(b)
        out["unpickle_ms_per_frame"] = 1e3 * (time.perf_counter() - t0) / len(blobs)
    return out


def eval_figure(bundle: str, data: str, address: str, repeat: int) -> dict:
    """``loupe eval`` locally and on 2 Ray workers: wall seconds (medians), images/s, same JSON."""
    exe = Path(sys.executable).with_name("loupe")
    modes = {"local (1 process)": [], "ray, 2 workers": ["--executor", f"ray:{address}", "--workers", "2"]}
    times: dict[str, list[float]] = {m: [] for m in modes}
    out: dict[str, dict] = {}
    for _ in range(repeat):
        for mode, extra in modes.items():
            t0 = time.perf_counter()
            r = subprocess.run([str(exe), "eval", bundle, data, "--json", *extra], capture_output=True, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
            times[mode].append(time.perf_counter() - t0)
            if r.returncode != 0:
                raise SystemExit(f"loupe eval {mode} failed:\n{r.stderr[-3000:]}")
            out[mode] = {k: v for k, v in json.loads(r.stdout).items() if k != "ms_per_image"}
    same = len({json.dumps(v, sort_keys=True) for v in out.values()}) == 1
    n = next(iter(out.values())).get("n_images", 0)
    med = {m: statistics.median(v) for m, v in times.items()}
    base = med["local (1 process)"]
    return {"bundle": bundle, "data": data, "images": n, "repeat": repeat, "same_json": same,
            "modes": {m: {"seconds": round(med[m], 3), "images_per_s": round(n / med[m], 2),
                          "speedup_vs_local": round(base / med[m], 3), "runs_s": [round(x, 3) for x in times[m]]}
                      for m in med}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--anomaly", metavar="BUNDLE", help="also time a recipe with this anomaly bundle")
    ap.add_argument("--skip-classical", action="store_true", help="time only the anomaly recipe")
    ap.add_argument("--workdir", help="keep images here (default: a temporary folder)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--eval", nargs=2, metavar=("BUNDLE", "DATA"),
                    help="time `loupe eval` locally against 2 Ray workers instead of `loupe run`")
    args = ap.parse_args()
    import ray

    if args.eval:
        ctx = ray.init(num_cpus=3, include_dashboard=False, object_store_memory=200 * 1024 * 1024,
                       log_to_driver=False, configure_logging=False)
        try:
            res = eval_figure(*args.eval, ctx.address_info["gcs_address"], args.repeat)
        finally:
            ray.shutdown()
        if args.json:
            print(json.dumps(res, indent=2))
        else:
            print(f"loupe eval, {res['images']} images, median of {res['repeat']}, same JSON: {res['same_json']}")
            for m, r in res["modes"].items():
                print(f"| {m} | {r['seconds']} s | {r['images_per_s']} images/s | {r['speedup_vs_local']} |")
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="loupe-scale-"))
    images = work / "images"
    if not images.exists():
        images.mkdir(parents=True)
        make_images(images, args.images)
    recipes = {}
    if not args.skip_classical:
        recipes["classical"] = work / "classical.yaml"
        recipes["classical"].write_text(CLASSICAL)
    if args.anomaly:
        recipes["anomaly"] = work / "anomaly.yaml"
        from host import model_sha256

        bundle = Path(args.anomaly).resolve()
        recipes["anomaly"].write_text(ANOMALY.format(bundle=json.dumps(str(bundle)), sha=model_sha256(bundle)))
    ctx = ray.init(num_cpus=3, include_dashboard=False, object_store_memory=200 * 1024 * 1024,
                   log_to_driver=False, configure_logging=False)
    address = ctx.address_info["gcs_address"]
    modes = {"local (1 process)": [], "ray, 1 worker": ["--executor", f"ray:{address}", "--workers", "1"],
             "ray, 2 workers": ["--executor", f"ray:{address}", "--workers", "2"],
             # the fixed cost of a Ray run (join, listing, 2 actors loading plugins and the recipe), 2 frames
             "ray start-up": ["--executor", f"ray:{address}", "--workers", "2", "--limit", "2"]}
    results: dict = {"images": args.images, "repeat": args.repeat, "cpus": os.cpu_count(), "recipes": {}}
    try:
        for name, recipe in recipes.items():
            times: dict[str, list[float]] = {m: [] for m in modes}
            for rep in range(args.repeat):
                for k, (mode, extra) in enumerate(modes.items()):
                    db = work / f"{name}-rep{rep}-mode{k}.sqlite"
                    db.unlink(missing_ok=True)
                    s, frames = loupe("run", str(recipe), "--source", f"archive:{images}",
                                      "--report", f"sqlite:{db}", *extra)
                    assert frames == (2 if mode == "ray start-up" else args.images), (mode, frames)
                    times[mode].append(s)
            med = {m: statistics.median(v) for m, v in times.items()}
            base = med["local (1 process)"]
            start = med.pop("ray start-up")
            rows = {m: {"seconds": round(med[m], 3), "ms_per_frame": round(1e3 * med[m] / args.images, 3),
                        "frames_per_s": round(args.images / med[m], 1), "speedup_vs_local": round(base / med[m], 3),
                        "runs_s": [round(x, 3) for x in times[m]]} for m in med}
            for m in med:
                if m.startswith("ray"):  # without the fixed start-up cost: the rate a long run settles at
                    steady = max(med[m] - start, 1e-9)
                    rows[m]["steady_ms_per_frame"] = round(1e3 * steady / args.images, 3)
                    rows[m]["steady_speedup_vs_local"] = round(base / steady, 3)
            rows["ray_startup_s"] = round(start, 3)
            results["recipes"][name] = rows
            results["recipes"][name]["driver"] = driver_overhead(recipe, images)
    finally:
        ray.shutdown()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.images} images 512x512 PNG, median of {args.repeat}, {os.cpu_count()} CPUs (shared)")
    for name, rows in results["recipes"].items():
        print(f"\n{name}")
        print(f"| mode | s | ms/frame | frames/s | vs local | ms/frame without start-up | vs local |\n"
              f"|---|---|---|---|---|---|---|")
        for m in [k for k in modes if k in rows]:
            r = rows[m]
            print(f"| {m} | {r['seconds']} | {r['ms_per_frame']} | {r['frames_per_s']} | {r['speedup_vs_local']} | "
                  f"{r.get('steady_ms_per_frame', '')} | {r.get('steady_speedup_vs_local', '')} |")
        print(f"Ray run start-up (2 frames, 2 workers): {rows['ray_startup_s']} s")
        d = rows["driver"]
        print(f"driver per frame: unpickle {d['unpickle_ms_per_frame']:.3f} ms, + SQLite write "
              f"{d['driver_ms_per_frame_sqlite']:.3f} ms, + Parquet write {d['driver_ms_per_frame_parquet']:.3f} ms; "
              f"result {d['result_bytes_median']:.0f} bytes")


if __name__ == "__main__":
    main()
