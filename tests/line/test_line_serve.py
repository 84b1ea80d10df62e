"""``loupe serve`` as a process: SIGTERM finishes and stores the frame in progress; kill -9 never reuses ids."""
from __future__ import annotations

import signal
import sqlite3
import time

from line_support import Client, write_images, write_station


def rows(db):
    with sqlite3.connect(db) as c:
        return c.execute("SELECT idx, verdict, error FROM frames ORDER BY idx").fetchall()


def test_sigterm_finishes_the_frame_in_progress(serve, tmp_path):
    # big images and a heavy blur: a frame takes long enough to be caught in progress
    write_images(tmp_path / "images", size=12)
    slow = tmp_path / "slow.yaml"
    slow.write_text("""loupe_recipe: 1
name: slow
preprocess:
  - tool: classical.gray
  - tool: classical.median
    params: {ksize: 5}
  - tool: classical.gaussian
    params: {sigma: 25}
inspect:
  - tool: classical.intensity
    name: light
""")
    path = write_station(tmp_path, io="[tcp://127.0.0.1:0]", extra="")
    path.write_text(path.read_text().replace("four: four-holes.yaml", "four: slow.yaml"))
    srv = serve(path)
    c = Client(srv.port, timeout=60)
    assert c.cmd("TRG").startswith("OK,1,")  # warm
    t0 = time.perf_counter()
    assert c.cmd("TRG").startswith("OK,2,")
    frame_s = time.perf_counter() - t0
    assert frame_s > 0.03, frame_s  # long enough to be caught in progress
    probe = Client(srv.port, timeout=60)
    c.send("TRG")
    deadline = time.monotonic() + 10
    while probe.cmd("STATE?") != "OK,SingleExecution":  # the trigger was taken: its frame is in progress
        assert time.monotonic() < deadline
    rc, out, err = srv.stop(signal.SIGTERM)
    reply = c.recv()  # the frame in progress was finished and answered before the adapter closed
    assert reply.startswith("OK,3,"), (reply, out, err)
    assert rc == 0, err
    assert "3 results issued" in out and "next result id 4" in out
    assert [r[0] for r in rows(tmp_path / "results.sqlite")] == [1, 2, 3]
    assert [r[1] for r in rows(tmp_path / "results.sqlite")] == ["pass"] * 3
    assert c.sock.recv(16) == b""  # closed by the station
    c.close()
    probe.close()


def test_kill_9_then_restart_continues_result_ids(serve, tmp_path):
    path = write_station(tmp_path, io="[tcp://127.0.0.1:0]", buffer=8)
    srv = serve(path)
    c = Client(srv.port)
    first = [int(c.cmd("TRG").split(",")[1]) for _ in range(5)]
    c.close()
    srv.proc.kill()  # SIGKILL: no clean shutdown
    srv.proc.wait()
    srv2 = serve(path)
    c = Client(srv2.port)
    then = [int(c.cmd("TRG").split(",")[1]) for _ in range(3)]
    c.close()
    rc, out, err = srv2.stop(signal.SIGINT)  # Ctrl-C stops it as cleanly as SIGTERM
    assert rc == 0, err
    assert first == [1, 2, 3, 4, 5]
    assert min(then) > max(first) and then == sorted(then) and len(set(then)) == 3
    ids = [r[0] for r in rows(tmp_path / "results.sqlite")]
    assert len(ids) == len(set(ids)) and set(then) <= set(ids)
