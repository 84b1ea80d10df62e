"""The host-overhead benchmark and `loupe bench` run end to end (no timing assertions: figures are
reported by the benchmark, as ratios in one run)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from host.testing import run_loupe

ROOT = Path(__file__).resolve().parents[2]


def test_host_overhead_benchmark_runs():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "host_overhead.py"), "--frames", "300", "--rounds", "1",
                        "--spin-frames", "3", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    t = out["trivial_steps"]
    assert t["frames"] == 300 and t["runner_us_per_frame"] > 0 and t["bare_us_per_frame"] > 0


def test_loupe_bench_recipe(tmp_path, image_dir):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"loupe_recipe: 1\nsource: folder:{image_dir}\npreprocess: [{{tool: classical.gray}}]\n"
                      "inspect: [{tool: classical.intensity, name: light}]\n")
    r = run_loupe("bench", recipe, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["images"] == 3  # the three readable images; the broken ones are not timed
    assert out["median_ms"] > 0 and "step.light.median_ms" in out and "step.gray.median_ms" in out
