"""The TCP ASCII channel, tested with plain socket clients; the simulated PLC against it."""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import time

import pytest

from line_support import SERVE_ENV, Client, loupe_exe, write_station


def port_of(st) -> int:
    (spec, adapter), = st.adapters
    return adapter.port


def test_trg_job_state_and_errors(make_station, tmp_path):
    st = make_station(write_station(tmp_path, buffer=2), io=["tcp://127.0.0.1:0"])
    c = Client(port_of(st))
    try:
        assert c.cmd("STATE?") == "OK,Ready"
        reply = c.cmd("TRG")
        fields = reply.split(",")
        assert fields[:3] == ["OK", "1", "pass"]
        # the measurements follow in the recipe's order: light.mean, light.std, ..., holes.count, ...
        r = st.result(1)
        scalars = [v for v in r.measurements.values() if isinstance(v, (int, float))]
        assert len(fields) - 3 == len(scalars)
        assert float(fields[3]) == pytest.approx(r.measurements["light.mean"], rel=1e-5)
        assert str(r.measurements["holes.count"]) in fields[3:]
        assert st.result(1).acknowledged  # the reply acknowledges (auto_ack)
        assert c.cmd("JOB three") == "OK,three"
        assert c.cmd("JOB?") == "OK,three"
        assert c.cmd("job four") == "OK,four"  # case-insensitive
        assert c.cmd("JOB nope") == "ER,JOB,unknown_job"
        assert c.cmd("JOB") == "ER,JOB,bad_argument"
        assert c.cmd("FOO bar") == "ER,FOO,unknown_command"
        assert c.cmd("ACK x") == "ER,ACK,bad_argument"
        assert c.cmd("ACK") == "ER,ACK,no_result"
        assert c.cmd("START") == "OK,ContinuousExecution"
        assert c.cmd("TRG") == "ER,TRG,busy"
        assert c.cmd("JOB three") == "ER,JOB,busy"
        assert c.cmd("STOP") == "OK,Ready"
        assert c.cmd("RESET") == "OK,Ready"
        c.send("")  # blank lines are ignored
        assert c.cmd("STATE?") == "OK,Ready"
        assert st.status()["missed"] == 1
    finally:
        c.close()


def test_manual_acknowledge_and_overrun(make_station, tmp_path):
    path = write_station(tmp_path, buffer=2,
                         io='[{spec: "tcp://127.0.0.1:0", auto_ack: false, measurements: [holes.count]}]')
    st = make_station(path)
    c = Client(port_of(st))
    try:
        assert c.cmd("TRG") == "OK,1,pass,4"
        assert c.cmd("TRG") == "OK,2,pass,4"
        assert c.cmd("TRG") == "ER,TRG,buffer_full"  # the PLC did not acknowledge: overrun, counted
        assert st.status()["overrun"] and st.status()["missed"] == 1
        assert c.cmd("ACK 1") == "OK,1"
        assert c.cmd("ACK") == "OK"  # the oldest: 2
        assert c.cmd("TRG") == "OK,3,pass,4"
        assert c.cmd("STATE?") == "OK,Ready"
    finally:
        c.close()


def test_pipelined_triggers_reply_in_order(make_station, tmp_path):
    st = make_station(write_station(tmp_path, buffer=8), io=["tcp://127.0.0.1:0"])
    c = Client(port_of(st))
    try:
        for _ in range(6):
            c.send("TRG")
        c.send("STATE?")
        replies = [c.recv() for _ in range(7)]
        assert [r.split(",")[1] for r in replies[:6]] == [str(i) for i in range(1, 7)]
        assert replies[6] == "OK,Ready"  # runs after the triggers before it
    finally:
        c.close()


def test_inspection_thread_replies_keep_the_command_order(make_station, tmp_path):
    """A TRG whose connection waits for its result is answered by the inspection thread as the result is
    published; replies written by the writer thread (refusals, other commands) keep their places."""
    st = make_station(write_station(tmp_path, buffer=2), io=["tcp://127.0.0.1:0"])
    (spec, adapter), = st.adapters
    c = Client(port_of(st))
    try:
        for i in range(1, 11):
            assert c.cmd("TRG").split(",")[:2] == ["OK", str(i)]
            assert st.result(i).acknowledged  # auto_ack: released as it was published
        assert adapter.direct_replies >= 1, adapter.direct_replies
        # pipelined into a buffer of 2: some are refused; every reply in command order
        for _ in range(8):
            c.send("TRG")
        c.send("STATE?")
        replies = [c.recv() for _ in range(9)]
        ok = [int(r.split(",")[1]) for r in replies[:8] if r.startswith("OK,")]
        refused = [r for r in replies[:8] if not r.startswith("OK,")]
        assert ok == list(range(11, 11 + len(ok))) and ok
        assert set(refused) <= {"ER,TRG,buffer_full"} and st.status()["missed"] == len(refused)
        assert replies[8] == "OK,Ready"
        assert c.cmd("TRG").split(",")[1] == str(11 + len(ok))
    finally:
        c.close()


def test_disconnect_and_reconnect_mid_run(make_station, tmp_path):
    st = make_station(write_station(tmp_path, buffer=8), io=["tcp://127.0.0.1:0"])
    port = port_of(st)
    a = Client(port)
    assert a.cmd("TRG").startswith("OK,1,")
    for _ in range(3):  # triggers whose replies the client never reads
        a.send("TRG")
    # the client hangs up (FIN after its triggers). Closing at once with replies unread resets the connection
    # (RST), and the kernel may drop what it has not sent yet (Nagle can hold the last triggers): the CI failure
    a.sock.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and st.status()["results_issued"] < 4:
        time.sleep(0.01)  # the gone client's triggers are still taken
    a.sock.close()
    b = Client(port)
    other = Client(port)  # a second client at the same time
    try:
        assert b.cmd("TRG").split(",")[1] == "5"
        assert other.cmd("STATE?") == "OK,Ready"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and st.status()["buffer"]["used"]:
            time.sleep(0.02)
        s = st.status()
        assert s["buffer"]["used"] == 0  # the gone client's results were stored and released
        assert s["results_issued"] == 5 and s["state"] == "Ready"
        assert s["adapters"]["tcp://127.0.0.1:0"]["connected"] is True
    finally:
        b.close()
        other.close()


def test_plc_command_drives_a_served_station(serve, tmp_path):
    path = write_station(tmp_path, buffer=64, io="[tcp://127.0.0.1:0]")  # rides out stalls of a loaded machine
    srv = serve(path)
    out = subprocess.run(loupe_exe() + ["line", "plc", "--io", f"tcp://127.0.0.1:{srv.port}", "--rate", "25",
                                        "--count", "40", "--ack", "--job", "three", "--json"],
                         env={**os.environ, **SERVE_ENV}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["handshake_ok"] and s["triggers"] == 40 and s["results"] == 40 and s["missed"] == 0
    assert s["first_result_id"] == 1 and s["last_result_id"] == 40
    assert s["verdicts"] == {"pass": 13, "fail": 27}  # 2 of every 6 plates have three holes
    assert s["latency_ms"]["p50"] > 0 and s["state"] == "Ready"
    rc, text, err = srv.stop()
    assert rc == 0, err
    assert "40 results issued" in text
    with sqlite3.connect(tmp_path / "results.sqlite") as c:
        assert c.execute("SELECT COUNT(*), MIN(idx), MAX(idx) FROM frames").fetchone() == (40, 1, 40)


def test_plc_counts_missed_triggers_when_the_buffer_fills(make_station, tmp_path):
    from loupe_line.plc import run_plc

    path = write_station(tmp_path, buffer=3, io='[{spec: "tcp://127.0.0.1:0", auto_ack: false}]')
    st = make_station(path)
    s = run_plc(f"tcp://127.0.0.1:{port_of(st)}", rate=200, count=8, ack=False)
    assert s["results"] == 3 and s["missed"] == 5 and s["handshake_ok"]
    assert st.status()["overruns"] == 5 and st.state == "Ready"
