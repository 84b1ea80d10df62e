"""The PostgreSQL results store against a real server: what it stores, three writers at once, kill -9 and
--resume, a server restart mid-run, a wrong password, an unreachable server, schema migrations."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pg_helpers import cli, free_port, loupe_exe, run_loupe, wait_until, write_gray_images, write_recipe


def _count(conn, run_id=None) -> int:
    if run_id:
        return conn.execute("SELECT COUNT(*) FROM frames WHERE run_id=%s", (run_id,)).fetchone()[0]
    try:
        return conn.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
    except Exception:  # the table does not exist yet
        return 0


def test_run_stores_frames_steps_measurements_and_full_json(tmp_path, pg_db, pg_connect, capsys):
    spec, env = pg_db
    images = write_gray_images(tmp_path / "img", [10.0, 20.5, 30.25, 41.0, 55.5])
    recipe = write_recipe(tmp_path / "r.yaml", lo=15, hi=50)
    r = cli(capsys, "run", str(recipe), "--source", f"folder:{images[0].parent}", "--report",
                  f"{spec}?station=cell-7", "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    c = pg_connect(spec)
    (version,) = c.execute("SELECT MAX(version) FROM loupe_schema").fetchone()
    assert version == 2
    run_id, station, rhash, started, ended, counts, recipe_json = c.execute(
        "SELECT run_id, station, recipe_hash, started, ended, counts, recipe FROM runs").fetchone()
    assert station == "cell-7" and len(rhash) == 64 and ended >= started
    assert counts == {"pass": 3, "fail": 2}
    assert recipe_json["inspect"][0]["limits"] == {"mean": {"min": 15.0, "max": 50.0}}
    assert f"run {run_id}" in r.stdout
    rows = c.execute("SELECT key, path, verdict, total_ms, timings, result, station FROM frames "
                     "ORDER BY key").fetchall()
    assert [row[0] for row in rows] == [str(p) for p in images]
    assert [row[1] for row in rows] == [str(p) for p in images]  # images by path, never as blobs
    assert [row[2] for row in rows] == ["fail", "pass", "pass", "pass", "fail"]
    for key, path, verdict, total_ms, timings, full, st in rows:
        assert set(timings) == {"gray"} and total_ms == pytest.approx(timings["gray"])  # per-step timings
        assert full["key"] == key and full["verdict"] == verdict and st == "cell-7"
        assert full["results"][0]["step"] == "gray" and "mean" in full["results"][0]["measurements"]
    # one row per measurement: plain-SQL SPC
    meas = c.execute("SELECT m.value, m.lo, m.hi, m.verdict FROM measurements m JOIN frames f ON f.id=m.frame_id "
                     "WHERE m.name='mean' AND m.step='gray' ORDER BY f.key").fetchall()
    assert meas == [(10.0, 15.0, 50.0, "fail"), (20.5, 15.0, 50.0, "pass"), (30.25, 15.0, 50.0, "pass"),
                    (41.0, 15.0, 50.0, "pass"), (55.5, 15.0, 50.0, "fail")]
    # measurements without a limit have no limit and no verdict
    assert c.execute("SELECT COUNT(*), COUNT(lo), COUNT(verdict) FROM measurements WHERE name='std'").fetchone() \
        == (5, 0, 0)
    assert c.execute("SELECT AVG(value) FROM measurements WHERE name='mean'").fetchone()[0] == \
        pytest.approx((10 + 20.5 + 30.25 + 41 + 55.5) / 5)


def test_three_processes_write_one_database_at_once(tmp_path, pg_db, pg_connect):
    spec, env = pg_db
    recipe = write_recipe(tmp_path / "r.yaml", lo=0, hi=255)
    n = 60
    procs = []
    for s in range(3):
        folder = tmp_path / f"station{s}"
        write_gray_images(folder, [float(10 * s + (i % 7)) for i in range(n)], prefix=f"s{s}")
        procs.append(subprocess.Popen(
            [loupe_exe(), "run", str(recipe), "--source", f"folder:{folder}", "--report",
             f"{spec}?station=st{s}&batch=7", "--quiet"], env={**os.environ, **env},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    c = pg_connect(spec)
    assert c.execute("SELECT station, COUNT(*), COUNT(DISTINCT key) FROM frames GROUP BY station "
                     "ORDER BY station").fetchall() == [("st0", n, n), ("st1", n, n), ("st2", n, n)]
    assert c.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 3
    assert c.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 3 * n
    # every measurement row belongs to its frame's station
    assert c.execute("SELECT COUNT(*) FROM measurements m JOIN frames f ON f.id=m.frame_id "
                     "WHERE m.station <> f.station").fetchone()[0] == 0
    assert c.execute("SELECT station, AVG(value) FROM measurements WHERE name='mean' GROUP BY station "
                     "ORDER BY station").fetchall() == [
        ("st0", pytest.approx(sum(i % 7 for i in range(n)) / n)),
        ("st1", pytest.approx(10 + sum(i % 7 for i in range(n)) / n)),
        ("st2", pytest.approx(20 + sum(i % 7 for i in range(n)) / n))]


def _feed_from(folder: Path, start: int, count: int, prefix: str) -> list[Path]:
    import cv2
    import numpy as np

    out = []
    for i in range(start, start + count):
        p = folder / f"{prefix}_{i:04d}.png"
        cv2.imwrite(str(p), np.full((10, 10), i % 200, np.uint8))
        out.append(p)
    return out


def _watch_run(recipe, hot, spec, env):
    return subprocess.Popen(
        [loupe_exe(), "run", str(recipe), "--source", f"folder:{hot}", "--source-opt", "watch=true",
         "--source-opt", "settle_s=0", "--source-opt", "poll_s=0.05", "--source-opt", "stop_file=STOP",
         "--report", f"{spec}?batch=10", "--quiet"],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path, pg_db, pg_connect):
    spec, env = pg_db
    recipe = write_recipe(tmp_path / "r.yaml", lo=0, hi=150)
    hot = tmp_path / "hot"
    hot.mkdir()
    proc = _watch_run(recipe, hot, spec, env)
    c = pg_connect(spec)
    total = 0
    for k in range(8):  # frames arrive while the run is live; it is killed mid-stream
        _feed_from(hot, total, 15, "f")
        total += 15
        time.sleep(0.15)
    wait_until(lambda: _count(c) >= 40, 60, "40 stored frames", proc)
    _feed_from(hot, total, 20, "f")
    total += 20
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stored = _count(c)
    assert 0 < stored < total, stored
    r = run_loupe("run", str(recipe), "--source", f"folder:{hot}", "--report", spec, "--resume", "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    assert f"{stored} already stored" in r.stdout
    keys = [k for (k,) in c.execute("SELECT key FROM frames")]
    assert len(keys) == total and len(set(keys)) == total  # nothing lost, nothing doubled
    assert c.execute("SELECT COUNT(DISTINCT run_id) FROM frames").fetchone()[0] == 1  # the same run continued
    assert c.execute("SELECT COUNT(*) FROM results").fetchone()[0] == total
    assert c.execute("SELECT COUNT(*) FROM measurements WHERE name='mean'").fetchone()[0] == total


def test_server_restart_mid_run_reconnects_and_resends(tmp_path, pg_db, pg_connect, pg_server):
    spec, env = pg_db
    recipe = write_recipe(tmp_path / "r.yaml", lo=0, hi=150)
    hot = tmp_path / "hot"
    hot.mkdir()
    proc = _watch_run(recipe, hot, spec, env)
    c = pg_connect(spec)
    _feed_from(hot, 0, 30, "f")
    wait_until(lambda: _count(c) >= 30, 60, "30 stored frames", proc)
    c.close()
    pg_server.stop("fast")  # the server goes away mid-run ...
    _feed_from(hot, 30, 40, "f")  # ... while frames keep coming
    time.sleep(1.5)
    pg_server.start()
    _feed_from(hot, 70, 30, "f")
    time.sleep(0.3)
    (hot / "STOP").write_text("")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "connection lost" in err.lower() or "retrying" in err.lower()
    c = pg_connect(spec)
    keys = [k for (k,) in c.execute("SELECT key FROM frames")]
    assert len(keys) == 100 and len(set(keys)) == 100
    assert c.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 100
    assert c.execute("SELECT counts FROM runs").fetchone()[0] == {"pass": 100}


def test_wrong_password_unreachable_server_and_password_in_spec_are_clear_errors(tmp_path, pg_db, pg_server, capsys):
    spec, env = pg_db
    images = write_gray_images(tmp_path / "img", [10.0, 20.0])
    recipe = write_recipe(tmp_path / "r.yaml")
    src = f"folder:{images[0].parent}"
    r = cli(capsys, "run", str(recipe), "--source", src, "--report", spec, "--quiet", env={"PGPASSWORD": "wrong"})
    assert r.returncode == 2, r.stderr
    assert "password authentication failed" in r.stderr and "PGPASSWORD" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1

    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    r = cli(capsys, "run", str(recipe), "--source", src, "--report", dead, "--quiet", env=env)
    assert r.returncode == 2 and "cannot connect" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

    r = cli(capsys, "run", str(recipe), "--source", src, "--report",
                  spec.replace("postgres@", "postgres:secret@"), "--quiet", env=env)
    assert r.returncode == 2 and "do not put the password in the spec" in r.stderr, r.stderr
    assert "secret" not in r.stderr


def test_old_schema_is_migrated_forward_with_its_data(tmp_path, pg_db, pg_connect, capsys):
    spec, env = pg_db
    r = cli(capsys, "results", "migrate", spec, "--to", "1", env=env)
    assert r.returncode == 0 and "schema 0 -> 1" in r.stdout, r.stderr
    c = pg_connect(spec)
    # a version-1 store with one frame, as a version-1 writer left it (no measurements table yet)
    c.execute("INSERT INTO runs(run_id, station, recipe_name, recipe_hash, recipe, source, started) VALUES "
              "('r1', 'old', 'gauge', 'h', '{\"inspect\": [{\"name\": \"gray\", \"tool\": \"classical.intensity\", "
              "\"limits\": {\"mean\": {\"min\": 15.0, \"max\": 50.0}}}]}', 'folder:x', now())")
    c.execute("INSERT INTO frames(run_id, station, recipe_hash, key, verdict, ts) VALUES "
              "('r1', 'old', 'h', 'a.png', 'fail', now())")
    c.execute("INSERT INTO results(frame_id, step, tool, verdict, measurements, failures) SELECT id, 'gray', "
              "'classical.intensity', 'fail', '{\"mean\": 12.5, \"std\": 0.5, \"label\": \"x\"}', "
              "'[\"mean=12.5 fail\"]' FROM frames")
    images = write_gray_images(tmp_path / "img", [20.0])
    recipe = write_recipe(tmp_path / "r.yaml")
    run = ("run", str(recipe), "--source", f"folder:{images[0].parent}", "--report", spec, "--quiet")
    r = cli(capsys, *run, env=env)
    assert r.returncode == 2 and "loupe results migrate" in r.stderr and "version 1" in r.stderr, r.stderr
    r = cli(capsys, "results", "migrate", spec, env=env)
    assert r.returncode == 0 and "schema 1 -> 2" in r.stdout, r.stderr
    assert c.execute("SELECT name, value, lo, hi, verdict FROM measurements ORDER BY name").fetchall() == [
        ("mean", 12.5, 15.0, 50.0, "fail"), ("std", 0.5, None, None, None)]
    r = cli(capsys, "results", "migrate", spec, env=env)
    assert r.returncode == 0 and "nothing to do" in r.stdout
    r = cli(capsys, *run, env=env)
    assert r.returncode == 0, r.stderr
    assert c.execute("SELECT COUNT(*) FROM measurements WHERE name='mean'").fetchone()[0] == 2
