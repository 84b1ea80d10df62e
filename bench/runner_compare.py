"""Two versions of host/core/runner.py side by side, interleaved in one process.

The same recipes, frames and plugin manager as ``bench/host_overhead.py``; each round runs the
bare loop, the old runner and the new runner; prints medians per frame in CPU time and wall
time, and the median of the per-round new/old ratios.

    git show f4352c6:host/core/runner.py > /tmp/old_runner.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/runner_compare.py /tmp/old_runner.py [--frames 5000] [--rounds 11]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import host_overhead as ho  # noqa: E402

from host import Frame  # noqa: E402
from host.core import runner as new  # noqa: E402
from host.core.manager import create_plugin_manager  # noqa: E402


def load_old(path: str):
    spec = importlib.util.spec_from_file_location("host.core._old_runner", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["host.core._old_runner"] = mod
    spec.loader.exec_module(mod)
    return mod


def run_once(mod, pm, recipe, frames, clock) -> float:
    ho.MemorySource.frames_list = frames
    src = ho.MemorySource(ho.MemorySource.Params(target=""))
    run = mod.new_run_info(recipe, "memory:", pm)
    t0 = clock()
    s = mod.run_recipe(recipe, src, [], pm, run)
    e = clock() - t0
    assert s.frames == len(frames) and s.counts["pass"] == len(frames)
    return e / len(frames) * 1e6


def bare(recipe, frames, clock) -> float:
    pre = [s.tool_cls(s.params, recipe.context(s)).process for s in recipe.preprocess]
    insp = [s.tool_cls(s.params, recipe.context(s)).inspect for s in recipe.inspect]
    t0 = clock()
    for frame in frames:
        image = frame.image
        for fn in pre:
            image = fn(image)
        for fn in insp:
            fn(image)
    return (clock() - t0) / len(frames) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old", help="path of the old runner.py")
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=11)
    args = ap.parse_args()
    old = load_old(args.old)
    pm = create_plugin_manager(autoload=False)
    pm.register_plugin(ho.BenchPlugin(), name="bench", distribution="(bench)")
    out = {}
    for tool, n, rounds in (("bench.corner", args.frames, args.rounds), ("bench.spin", 200, 5)):
        recipe = ho.make_recipe(pm, tool)
        img = np.full((8, 8), 7, np.uint8)
        frames = [Frame(image=img, source="memory", index=i) for i in range(n)]
        for clock_name, clock in (("cpu", time.process_time), ("wall", time.perf_counter)):
            o, w, b = [], [], []
            for _ in range(rounds):
                b.append(bare(recipe, frames, clock))
                o.append(run_once(old, pm, recipe, frames, clock))
                w.append(run_once(new, pm, recipe, frames, clock))
            out[f"{tool} {clock_name} µs/frame"] = {
                "bare": round(statistics.median(b), 2), "old": round(statistics.median(o), 2),
                "new": round(statistics.median(w), 2),
                "new/old": round(statistics.median([x / y for x, y in zip(w, o)]), 4)}
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
