"""loupe run --executor ray: same verdicts as a local run, --resume, a worker killed mid-run."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from host import ENGINE_CHOICES
from host.testing import run_loupe

pytest.importorskip("ray")

RECIPE = """\
loupe_recipe: 1
name: exposure
preprocess:
  - tool: classical.gray
inspect:
  - tool: classical.intensity
    name: light
    limits:
      mean: {min: 60, max: 150}
  - tool: classical.blob
    name: spots
    params: {threshold: fixed, level: 128}
    limits: {}
  - tool: testsupport.boom
    params: {above: 170}
  - tool: testsupport.engine
"""


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _strip(row: dict) -> dict:
    """A frame's result without the timings (which differ from run to run)."""
    return {"key": row["key"], "index": row["index"], "source": row["source"], "verdict": row["verdict"],
            "error": row["error"],
            "results": [{k: v for k, v in r.items() if k != "ms"} for r in row["results"]]}


def test_ray_gives_the_local_verdicts_frame_for_frame(tmp_path, archive, ray_address, env):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    src = ["--source", f"folder:{archive}", "--source-opt", "recursive=true"]
    src += ["--engine", "openvino"]  # not the default: the workers must get it from the command line
    local = run_loupe("run", recipe, *src, "--report", f"jsonl:{tmp_path / 'local.jsonl'}", "-q", env=env)
    assert local.returncode == 0, local.stderr
    r = run_loupe("run", recipe, *src, "--executor", f"ray:{ray_address}", "--workers", "2",
                  "--report", f"jsonl:{tmp_path / 'ray.jsonl'}", "--report", f"parquet:{tmp_path / 'pq'}",
                  "-q", env=env)
    assert r.returncode == 0, r.stderr
    assert "42 frames" in r.stdout and "executor ray" in r.stdout
    want = {row["key"]: _strip(row) for row in _jsonl(tmp_path / "local.jsonl")}
    got = [_strip(row) for row in _jsonl(tmp_path / "ray.jsonl")]
    assert len(got) == len(want) == 42
    assert {g["key"]: g for g in got} == want
    verdicts = [g["verdict"] for g in got]
    assert {"pass", "fail", "error"} <= set(verdicts)  # the recipe really separates the images
    engines = {res["measurements"]["engine"] for v in want.values() for res in v["results"]
               if res["step"] == "engine" and not v["error"]}
    assert engines == {ENGINE_CHOICES.index("openvino")}
    bad = {Path(k).name: v for k, v in want.items() if v["error"]}
    assert set(bad) == {"900_corrupt.png", "901_empty.png"}
    assert any(res["error"] and "boom" in res["error"] for v in want.values() for res in v["results"])
    # the Parquet reporter holds the same frames
    import pyarrow.dataset as pads

    table = pads.dataset(str(tmp_path / "pq"), format="parquet").to_table()
    assert sorted(table["key"].to_pylist()) == sorted(want)
    assert dict(zip(table["key"].to_pylist(), table["verdict"].to_pylist())) == \
        {k: v["verdict"] for k, v in want.items()}


def test_resume_over_a_manifest_skips_stored_frames(tmp_path, archive, ray_address, env):
    import pyarrow as pa
    import pyarrow.parquet as pq

    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    files = sorted(str(p.relative_to(archive)) for p in archive.rglob("*.png"))
    manifest = archive / "manifest.parquet"
    pq.write_table(pa.table({"path": files, "label": ["ok"] * len(files)}), manifest, row_group_size=10)
    db = tmp_path / "r.sqlite"
    common = ["--source", f"manifest:{manifest}", "--source-opt", "label_column=label",
              "--executor", f"ray:{ray_address}", "--workers", "2", "--report", f"sqlite:{db}", "-q"]
    first = run_loupe("run", recipe, *common, "--limit", "15", env=env)
    assert first.returncode == 0, first.stderr
    assert "15 frames" in first.stdout
    second = run_loupe("run", recipe, *common, "--resume", env=env)
    assert second.returncode == 0, second.stderr
    assert f"{len(files) - 15} frames" in second.stdout and "15 already stored" in second.stdout
    con = sqlite3.connect(db)
    keys = [k for (k,) in con.execute("SELECT key FROM frames")]
    assert len(keys) == len(set(keys)) == len(files)
    assert set(keys) == {str(archive / f) for f in files}
    assert con.execute("SELECT COUNT(DISTINCT run_id) FROM frames").fetchone()[0] == 1
    # the same run locally, from the same manifest, gives the same verdicts
    loc = run_loupe("run", recipe, "--source", f"manifest:{manifest}", "--report",
                    f"jsonl:{tmp_path / 'l.jsonl'}", "-q", env=env)
    assert loc.returncode == 0, loc.stderr
    assert {r["key"]: r["verdict"] for r in _jsonl(tmp_path / "l.jsonl")} == \
        dict(con.execute("SELECT key, verdict FROM frames").fetchall())


def _workers() -> list[int]:
    """Process ids of the Ray actor processes running the Loupe worker (their title names the class)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if b"LoupeWorker" in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def test_a_worker_killed_mid_run_loses_and_doubles_no_frame(tmp_path, archive, ray_address, env):
    recipe = tmp_path / "slow.yaml"
    recipe.write_text(textwrap.dedent("""\
        loupe_recipe: 1
        name: slow
        inspect:
          - tool: testsupport.sleep
            params: {ms: 100}
    """))
    out = tmp_path / "slow.jsonl"
    exe = Path(sys.executable).with_name("loupe")
    proc = subprocess.Popen([str(exe), "run", str(recipe), "--source", f"archive:{archive}", "--executor",
                             f"ray:{ray_address}", "--workers", "2", "--report", f"jsonl:{out}", "-q"],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not killed:
        # once results flow, kill one busy worker process outright
        if out.exists() and len(out.read_text().splitlines()) >= 4:
            for pid in _workers():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    assert killed, "the run ended before a worker could be killed"
    rows = _jsonl(out)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == 42  # none lost, none doubled
    by_name = {Path(r["key"]).name: r for r in rows}
    assert by_name["900_corrupt.png"]["verdict"] == "error"
    assert sum(r["verdict"] == "pass" for r in rows) == 40  # every readable image was re-run, not lost

    # a worker that dies every time it comes back: after its restarts (2 here) the frames not done
    # are recorded as error frames with the reason, and the run ends normally
    out2 = tmp_path / "dying.jsonl"
    code = ("import sys; from loupe_ray.executor import RayExecutor; RayExecutor.max_restarts = 2; "
            "from host.cli import main; sys.exit(main())")
    proc = subprocess.Popen([sys.executable, "-c", code, "run", str(recipe), "--source", f"archive:{archive}/day1",
                             "--executor", f"ray:{ray_address}", "--workers", "1", "--limit", "3",
                             "--report", f"jsonl:{out2}", "-q"],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and proc.poll() is None:
        for pid in _workers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    rows = _jsonl(out2)
    assert len(rows) == len({r["key"] for r in rows}) == 3
    assert all(r["verdict"] == "error" and r["error"].startswith("lost: ") and "ActorDiedError" in r["error"]
               for r in rows), [r["error"] for r in rows]
    assert "3 frames: 0 pass, 0 review, 0 fail, 3 error" in stdout


def test_bad_specs_get_one_clear_message(tmp_path, archive, env):
    """No Ray needed: a manifest without the named column, an unknown executor, a hot folder on Ray."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,label\nday1/000_coins_0.5.png,ok\n")
    r = run_loupe("run", recipe, "--source", f"manifest:{manifest}", "-q", env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "m.csv" in r.stderr and "path_column" in r.stderr and "'path'" in r.stderr
    r = run_loupe("run", recipe, "--source", f"folder:{archive}", "--executor", "spark", "-q", env=env)
    assert r.returncode == 2 and "unknown executor 'spark'" in r.stderr and "ray" in r.stderr
    r = run_loupe("run", recipe, "--source", f"folder:{archive}", "--source-opt", "watch=true",
                  "--executor", "ray", "-q", env=env)
    assert r.returncode == 2 and "watch mode" in r.stderr
