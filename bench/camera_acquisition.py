"""GenICam acquisition: the source's cost per frame against a bare harvesters loop, same run.

    .venv/bin/python bench/camera_acquisition.py [--frames 300] [--rounds 5] [--json]

Both loops fetch from the same software camera (viky.cti from the pinned `genicam`
wheel, Mono8, the highest frame rate it offers) and make the one copy a frame needs to
outlive its GenTL buffer. A frame's wait for the producer is the same for both, so
the figure compared is the CPU time per frame (``time.process_time``), median of the
rounds; the sustained frame rate into a classical recipe is measured in the same run.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

CTI = str(Path(importlib.util.find_spec("genicam").origin).parent / "viky.cti")
FEATURES = {"PixelFormat": "Mono8", "Width": 640, "Height": 480, "AcquisitionFrameRate": 200.0}


def bare(frames: int) -> tuple[float, float]:
    from harvesters.core import Harvester

    h = Harvester()
    h.add_file(CTI)
    h.update()
    ia = h.create(0)
    nm = ia.remote_device.node_map
    for k, v in FEATURES.items():
        setattr(getattr(nm, k), "value", v)
    ia.start()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(frames):
        with ia.fetch(timeout=3) as buf:
            comp = buf.payload.components[0]
            comp.data.reshape(comp.height, comp.width).copy()
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    ia.destroy()
    h.reset()
    return cpu / frames, frames / wall


def source(frames: int) -> tuple[float, float]:
    from host import create_plugin_manager
    from host.core.runner import open_source

    pm = create_plugin_manager()
    src = open_source("genicam:0", pm.catalogue, options={"cti": CTI, "features": FEATURES})
    it = src.frames()
    next(it)  # open the camera outside the timed loop, as the bare loop does
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(frames):
        next(it)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    it.close()
    return cpu / frames, frames / wall


def recipe_rate(frames: int) -> float:
    """Frames per second from the camera through a classical recipe (intensity + blob)."""
    import tempfile

    from host import Recipe, create_plugin_manager
    from host.core.runner import new_run_info, open_source, run_recipe

    pm = create_plugin_manager()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cam.yaml"
        path.write_text(json.dumps({
            "loupe_recipe": 1, "name": "cam",
            "inspect": [{"tool": "classical.intensity", "limits": {}},
                        {"tool": "classical.blob", "limits": {}}]}))
        recipe = Recipe.load(path, pm.catalogue)
        src = open_source("genicam:0", pm.catalogue,
                          options={"cti": CTI, "features": FEATURES, "max_frames": frames})
        run = new_run_info(recipe, "genicam:0", pm)
        summary = run_recipe(recipe, src, [], pm, run)
    return summary.frames / summary.seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    b, s, ratios = [], [], []
    for _ in range(args.rounds):
        bc, bfps = bare(args.frames)
        sc, sfps = source(args.frames)
        b.append((bc, bfps))
        s.append((sc, sfps))
        ratios.append(sc / bc)
    out = {
        "frames_per_round": args.frames, "rounds": args.rounds, "format": "Mono8 640x480",
        "bare_cpu_us_per_frame": round(statistics.median(x[0] for x in b) * 1e6, 1),
        "source_cpu_us_per_frame": round(statistics.median(x[0] for x in s) * 1e6, 1),
        "overhead_ratio_median": round(statistics.median(ratios), 3),
        "bare_fps": round(statistics.median(x[1] for x in b), 1),
        "source_fps": round(statistics.median(x[1] for x in s), 1),
        "recipe_fps": round(recipe_rate(args.frames), 1),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>26}: {v}")


if __name__ == "__main__":
    main()
