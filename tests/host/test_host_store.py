"""The SQLite results store survives kill -9; --resume finishes with no lost and no duplicated frame.
Ctrl-C finishes the current frame and closes the reporters cleanly."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

N = 150


@pytest.fixture
def many_images(tmp_path) -> Path:
    import cv2

    d = tmp_path / "many"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N):
        cv2.imwrite(str(d / f"img_{i:04d}.png"), rng.integers(0, 255, (24, 24), dtype=np.uint8))
    return d


def _start(recipe, source, db, env):
    exe = Path(sys.executable).with_name("loupe")
    return subprocess.Popen([str(exe), "run", str(recipe), "--source", f"folder:{source}", "--report", f"sqlite:{db}",
                             "--quiet"], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


def _wait_for(db: Path, n: int, proc, timeout=60.0):
    t0 = time.time()
    while _count(db) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, "the run stored nothing"
        time.sleep(0.05)


def _recipe(tmp_path, ms):
    p = tmp_path / "slow.yaml"
    p.write_text(f"loupe_recipe: 1\nname: slow\ninspect:\n  - tool: testsupport.sleep\n    params: {{ms: {ms}}}\n")
    return p


def test_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path, many_images, support_env):
    db = tmp_path / "store.sqlite"
    recipe = _recipe(tmp_path, 15)
    proc = _start(recipe, many_images, db, support_env)
    _wait_for(db, 40, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stored = _count(db)
    assert 0 < stored < N, stored
    r = subprocess.run([str(Path(sys.executable).with_name("loupe")), "run", str(recipe), "--source",
                        f"folder:{many_images}", "--report", f"sqlite:{db}", "--resume", "--quiet"],
                       env={**os.environ, **support_env}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"{stored} already stored" in r.stdout
    con = sqlite3.connect(db)
    (run_id,) = {r for (r,) in con.execute("SELECT run_id FROM runs")}
    assert f"run {run_id}," in r.stdout  # --resume prints the id the rows are stored under
    keys = [k for (k,) in con.execute("SELECT key FROM frames")]
    assert len(keys) == N and len(set(keys)) == N
    assert con.execute("SELECT COUNT(DISTINCT run_id) FROM frames").fetchone()[0] == 1
    assert con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == N
    # each frame's tool result is there, with the right measurement
    assert con.execute("SELECT COUNT(*) FROM results WHERE measurements LIKE '%mean%'").fetchone()[0] == N


def test_ctrl_c_finishes_the_frame_and_closes_reporters(tmp_path, many_images, support_env):
    db = tmp_path / "store.sqlite"
    jl = tmp_path / "out.jsonl"
    exe = Path(sys.executable).with_name("loupe")
    proc = subprocess.Popen([str(exe), "run", str(_recipe(tmp_path, 20)), "--source", f"folder:{many_images}",
                             "--report", f"sqlite:{db}", "--report", f"jsonl:{jl}", "--quiet"],
                            env={**os.environ, **support_env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(db, 1, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    n = _count(db)
    assert 0 < n < N
    # every processed frame is in both reporters: nothing lost at the interruption
    assert len(jl.read_text().splitlines()) == n
    con = sqlite3.connect(db)
    assert con.execute("SELECT ended FROM runs").fetchone()[0] is not None
    assert f"{n} frames" in out
