"""Host overhead per frame: the runner against the same step functions in a bare loop.

Both run side by side in one process, alternating, over in-memory frames:

* bare:   for each frame, call the steps' ``process``/``inspect`` directly;
* runner: ``run_recipe`` over a memory source (limits, verdicts, per-step timings,
          result objects, event hooks), with no reporter (reporters are I/O, not host).

Prints the median overhead in µs per frame, and the same as a share of a 5 ms step
(measured directly with a step that spins for 5 ms).

    .venv/bin/python bench/host_overhead.py [--frames 10000] [--rounds 5] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from pydantic import Field

from host import Frame, InspectTool, NoParams, Params, PreprocessTool, Recipe, Source, ToolOutput, hookimpl
from host.core.manager import create_plugin_manager
from host.core.runner import new_run_info, run_recipe


class Identity(PreprocessTool):
    id = "bench.identity"
    Params = NoParams

    def process(self, image):
        return image


class Corner(InspectTool):
    id = "bench.corner"
    Params = NoParams
    measurements = {"value": "the top-left pixel"}

    def inspect(self, image):
        return ToolOutput({"value": int(image[0, 0])})


class SpinParams(Params):
    ms: float = Field(5.0, description="milliseconds to spin")


class Spin(InspectTool):
    id = "bench.spin"
    Params = SpinParams
    measurements = {"value": "the top-left pixel"}

    def inspect(self, image):
        end = time.perf_counter() + self.params.ms / 1e3
        while time.perf_counter() < end:
            pass
        return ToolOutput({"value": int(image[0, 0])})


class MemorySource(Source):
    scheme = "memory"
    frames_list: list[Frame] = []

    def frames(self, skip=None):
        yield from self.frames_list


class BenchPlugin:
    @hookimpl
    def loupe_preprocess(self, register):
        register(Identity)

    @hookimpl
    def loupe_inspect(self, register):
        register(Corner)
        register(Spin)

    @hookimpl
    def loupe_acquire(self, register):
        register(MemorySource)


def make_recipe(pm, tool: str):
    return Recipe.from_dict({
        "loupe_recipe": 1, "name": "overhead",
        "preprocess": [{"tool": "bench.identity"}],
        "inspect": [{"tool": tool, "name": f"s{i}", "limits": {"value": {"min": 0, "max": 255}}} for i in range(3)],
    }, pm.catalogue)


def bare_loop(recipe, frames) -> float:
    pre = [s.tool_cls(s.params, recipe.context(s)).process for s in recipe.preprocess]
    insp = [s.tool_cls(s.params, recipe.context(s)).inspect for s in recipe.inspect]
    t0 = time.perf_counter()
    for frame in frames:
        image = frame.image
        for fn in pre:
            image = fn(image)
        for fn in insp:
            fn(image)
    return time.perf_counter() - t0


def runner_loop(pm, recipe, frames) -> float:
    MemorySource.frames_list = frames
    source = MemorySource(MemorySource.Params(target=""))
    run = new_run_info(recipe, "memory:", pm)
    t0 = time.perf_counter()
    summary = run_recipe(recipe, source, [], pm, run)
    elapsed = time.perf_counter() - t0
    assert summary.frames == len(frames) and summary.counts["pass"] == len(frames)
    return elapsed


def measure(pm, tool: str, n: int, rounds: int) -> dict:
    recipe = make_recipe(pm, tool)
    img = np.full((8, 8), 7, np.uint8)
    frames = [Frame(image=img, source="memory", index=i) for i in range(n)]
    bare, host = [], []
    for _ in range(rounds):
        bare.append(bare_loop(recipe, frames) / n * 1e6)
        host.append(runner_loop(pm, recipe, frames) / n * 1e6)
    b, h = statistics.median(bare), statistics.median(host)
    return {"frames": n, "rounds": rounds, "bare_us_per_frame": b, "runner_us_per_frame": h,
            "overhead_us_per_frame": h - b, "overhead_pct": 100.0 * (h - b) / b}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--spin-frames", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    pm = create_plugin_manager(autoload=False)
    pm.register_plugin(BenchPlugin(), name="bench", distribution="(bench)")
    trivial = measure(pm, "bench.corner", args.frames, args.rounds)
    spin = measure(pm, "bench.spin", args.spin_frames, 3)
    # the 5 ms case: three 5 ms steps per frame; overhead relative to one 5 ms step
    spin["overhead_pct_of_5ms_step"] = 100.0 * spin["overhead_us_per_frame"] / 5000.0
    trivial_pct_of_5ms = 100.0 * trivial["overhead_us_per_frame"] / 5000.0
    out = {"trivial_steps": trivial, "five_ms_steps": spin, "overhead_pct_of_5ms_step_from_trivial": trivial_pct_of_5ms}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"trivial steps (1 preprocess + 3 inspect with limits), {trivial['frames']} frames, "
          f"median of {trivial['rounds']} rounds:")
    print(f"  bare loop   {trivial['bare_us_per_frame']:8.2f} µs/frame")
    print(f"  loupe run   {trivial['runner_us_per_frame']:8.2f} µs/frame")
    print(f"  host overhead {trivial['overhead_us_per_frame']:6.2f} µs/frame "
          f"(target < 50 µs) = {trivial_pct_of_5ms:.2f}% of a 5 ms step (target < 2%)")
    print(f"5 ms steps, {spin['frames']} frames: bare {spin['bare_us_per_frame'] / 1e3:.3f} ms, "
          f"runner {spin['runner_us_per_frame'] / 1e3:.3f} ms per frame; overhead "
          f"{spin['overhead_us_per_frame']:.1f} µs = {spin['overhead_pct_of_5ms_step']:.2f}% of one 5 ms step")


if __name__ == "__main__":
    main()
