"""The MQTT reporter against a real Mosquitto broker and a real paho subscriber: the message schema, birth,
last will and clean offline, the retained last result, and a broker that stops mid-run and comes back
(messages queue on disk meanwhile; no result is lost)."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _loupe() -> str:
    return str(Path(sys.executable).with_name("loupe"))


def _images(folder: Path, start: int, count: int) -> list[Path]:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + count):
        p = folder / f"f_{i:04d}.png"
        cv2.imwrite(str(p), np.full((10, 10), i % 200, np.uint8))
        out.append(p)
    return out


def _recipe(path: Path) -> Path:
    path.write_text("loupe_recipe: 1\nname: gauge\ninspect:\n  - tool: classical.intensity\n    name: gray\n"
                    "    limits: {mean: {max: 150}}\n")
    return path


def _wait(cond, timeout=30.0, what="", proc=None):
    t0 = time.time()
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"loupe ended early waiting for {what}: {proc.communicate()}")
        assert time.time() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def _watch(recipe, hot, spec):
    return subprocess.Popen(
        [_loupe(), "run", str(recipe), "--source", f"folder:{hot}", "--source-opt", "watch=true",
         "--source-opt", "settle_s=0", "--source-opt", "poll_s=0.05", "--source-opt", "stop_file=STOP",
         "--report", spec, "--quiet"], env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_results_schema_status_and_retained_last_result(tmp_path, broker, subscriber):
    sub = subscriber(broker.port, "plant/#")
    imgs = _images(tmp_path / "img", 0, 12)
    spec = f"mqtt://127.0.0.1:{broker.port}/plant/line1?retain=1&station=cell-3&spool={tmp_path / 'spool.db'}"
    r = subprocess.run([_loupe(), "run", str(_recipe(tmp_path / "r.yaml")), "--source", f"folder:{imgs[0].parent}",
                        "--report", spec, "--quiet"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    _wait(lambda: len(sub.keys()) == 12 and sub.on("/run")[-1:] and sub.on("/run")[-1][0]["event"] == "ended"
          and sub.on("/status")[-1][0]["state"] == "offline", what="12 results and the end of the run")
    results = [p for p, _ in sub.on("/result")]
    assert sub.keys() == {str(p) for p in imgs}
    m = next(p for p in results if p["key"] == str(imgs[7]))
    assert m["schema"] == "loupe.result/1" and m["station"] == "cell-3" and m["recipe"] == "gauge"
    assert m["verdict"] == "pass" and m["results"][0]["step"] == "gray"
    assert m["results"][0]["measurements"]["mean"] == 7.0 and set(m["timings"]) == {"gray"}
    assert len(m["recipe_hash"]) == 64 and m["path"] == str(imgs[7]) and m["index"] == 7
    status = [p["state"] for p, _ in sub.on("/status")]
    assert status[0] == "online" and status[-1] == "offline"  # birth, then a clean offline at the end
    assert [p["event"] for p, _ in sub.on("/run")] == ["started", "ended"]
    # the spool is empty: every message was acknowledged
    assert sqlite3.connect(tmp_path / "spool.db").execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 0
    # a late subscriber gets the last result (retained) and the offline status at once
    late = subscriber(broker.port, "plant/line1/#", client_id="late")
    _wait(lambda: late.on("/result") and late.on("/status"), what="retained messages")
    (last, retained), = late.on("/result")
    assert retained and last["key"] == str(imgs[-1])


def test_broker_stops_mid_run_and_returns_no_result_lost(tmp_path, broker, subscriber):
    sub = subscriber(broker.port, "plant/#")
    hot = tmp_path / "hot"
    hot.mkdir()
    spool = tmp_path / "spool.db"
    proc = _watch(_recipe(tmp_path / "r.yaml"), hot, f"mqtt://127.0.0.1:{broker.port}/plant/line1?spool={spool}")
    _images(hot, 0, 30)
    _wait(lambda: len(sub.keys()) == 30, 60, "30 results before the outage", proc)
    broker.stop()  # the broker goes away mid-run (it keeps the subscriber's session on disk)
    _images(hot, 30, 40)  # results keep coming: they queue in the on-disk spool

    def spooled():
        try:
            return sqlite3.connect(spool).execute("SELECT COUNT(*) FROM spool").fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    _wait(lambda: spooled() >= 40, 30, "40 results in the on-disk spool", proc)
    broker.start()
    _images(hot, 70, 30)
    _wait(lambda: len(sub.keys()) == 100, 60, "all 100 results after the broker came back", proc)
    (hot / "STOP").write_text("")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert sub.keys() == {str(hot / f"f_{i:04d}.png") for i in range(100)}
    assert spooled() == 0


def test_last_will_says_offline_when_the_process_dies(tmp_path, broker, subscriber):
    sub = subscriber(broker.port, "plant/+/status")
    hot = tmp_path / "hot"
    hot.mkdir()
    proc = _watch(_recipe(tmp_path / "r.yaml"), hot,
                  f"mqtt://127.0.0.1:{broker.port}/plant/line2?spool={tmp_path / 'spool.db'}")
    _wait(lambda: any(p["state"] == "online" for p, _ in sub.on("/status")), 30, "the birth message", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _wait(lambda: sub.on("/status")[-1][0]["state"] == "offline", 30, "the last will")
    will = sub.on("/status")[-1][0]
    assert will["ts"] is None  # the will (set at connect), not a clean offline


def test_unreachable_broker_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    imgs = _images(tmp_path / "img", 0, 2)
    r = subprocess.run([_loupe(), "run", str(_recipe(tmp_path / "r.yaml")), "--source", f"folder:{imgs[0].parent}",
                        "--report", f"mqtt://127.0.0.1:{port}/plant/x", "--quiet"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot connect to the broker" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_results_left_in_the_spool_are_sent_by_the_next_run(tmp_path, broker, subscriber):
    sub = subscriber(broker.port, "plant/#")
    hot = tmp_path / "hot"
    hot.mkdir()
    spool = tmp_path / "spool.db"
    spec = f"mqtt://127.0.0.1:{broker.port}/plant/line3?spool={spool}&flush_s=0.5"
    recipe = _recipe(tmp_path / "r.yaml")
    proc = _watch(recipe, hot, spec)
    _images(hot, 0, 5)
    _wait(lambda: len(sub.keys()) == 5, 60, "5 results", proc)
    broker.stop()
    _images(hot, 5, 10)  # published while the broker is down: they go to the spool ...
    time.sleep(1.0)
    (hot / "STOP").write_text("")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err  # ... and the run ends with them still there
    left = sqlite3.connect(spool).execute("SELECT COUNT(*) FROM spool").fetchone()[0]
    assert left >= 10 and "stay in the spool" in err
    broker.start()
    more = _images(tmp_path / "more", 100, 2)
    r = subprocess.run([_loupe(), "run", str(recipe), "--source", f"folder:{more[0].parent}", "--report", spec,
                        "--quiet"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    _wait(lambda: len(sub.keys()) == 17, 30, "the 10 spooled and the 2 new results")
    assert sub.keys() == {str(hot / f"f_{i:04d}.png") for i in range(15)} | {str(p) for p in more}
    assert sqlite3.connect(spool).execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 0


def test_a_full_queue_drops_and_counts_never_blocks(tmp_path, broker, subscriber):
    """With a one-frame queue the runner outpaces the publisher: every result is either delivered or counted
    as overflow (write() is a put_nowait: it never waits for the publisher or the broker)."""
    from host import FrameResult, Recipe, RunInfo, create_plugin_manager
    from loupe_mqtt.reporter import MqttReporter

    sub = subscriber(broker.port, "plant/line9/result")
    pm = create_plugin_manager()
    recipe = Recipe.from_dict({"loupe_recipe": 1, "name": "q", "inspect": [{"tool": "classical.intensity"}]},
                              pm.catalogue)
    run = RunInfo(run_id="overflow1", recipe=recipe, recipe_hash=recipe.hash, source="memory:", started=time.time())
    rep = MqttReporter(f"//127.0.0.1:{broker.port}/plant/line9?queue=1&spool={tmp_path / 'spool.db'}", run)
    rep.open()
    n = 3000
    for i in range(n):
        rep.write(FrameResult(f"k{i}", i, "memory", None, time.time(), "pass", [], {}, recipe.hash))
    rep.close()
    assert rep.overflow > 0
    _wait(lambda: len(sub.keys()) == n - rep.overflow, 30, "every result not counted as overflow")
    assert rep.published == n - rep.overflow + 2  # + the run's started and ended events
