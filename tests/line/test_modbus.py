"""The Modbus TCP adapter, driven by pymodbus's client and by Debian's mbpoll (an independent master).

The station is the real one (host.core.station or ``loupe serve``) on the example's classical
recipes; every client talks to it over loopback sockets.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import time

import pytest

from line_support import SERVE_ENV, loupe_exe, write_station

# coils
TRIGGER_ENABLE, TRIGGER, RESULTS_ACK, EXECUTE_COMMAND, SET_OFFLINE = range(5)
# discrete inputs
(TRIGGER_READY, TRIGGER_ACK, BUSY, INSPECTION_COMPLETED, RESULTS_VALID, BUFFER_OVERRUN, JOB_PASS, ONLINE,
 COMMAND_COMPLETED, COMMAND_FAILED, ERROR) = range(11)

pytestmark = pytest.mark.timeout(180)


def modbus_station(make_station, tmp_path, buffer=4, options=""):
    path = write_station(tmp_path, buffer=buffer,
                         io=f'[{{spec: "modbus://127.0.0.1:0", measurements: [holes.count, light.mean]{options}}}]')
    st = make_station(path)
    (spec, adapter), = st.adapters
    return st, adapter


class Plc:
    """A pymodbus master, as a PLC program uses the map."""

    def __init__(self, port: int):
        from pymodbus.client import ModbusTcpClient

        self.c = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
        assert self.c.connect()

    def bits(self) -> list[bool]:
        return list(self.c.read_discrete_inputs(0, count=11).bits[:11])

    def regs(self, n: int = 12) -> list[int]:
        return list(self.c.read_input_registers(0, count=n).registers)

    def coil(self, address: int, value: bool) -> None:
        assert not self.c.write_coil(address, value).isError()

    def wait(self, bit: int, value: bool = True, timeout: float = 20) -> list[bool]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            b = self.bits()
            if b[bit] == value:
                return b
            time.sleep(0.002)
        raise AssertionError(f"discrete input {bit} never became {value}: {self.bits()}")

    def command(self, code: int, arg: int = 0) -> tuple[list[bool], int]:
        assert not self.c.write_registers(0, [code, arg]).isError()
        self.coil(EXECUTE_COMMAND, True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            b = self.bits()
            if b[COMMAND_COMPLETED] or b[COMMAND_FAILED]:
                break
            time.sleep(0.002)
        err = self.regs(6)[5]
        self.coil(EXECUTE_COMMAND, False)
        return b, err

    def close(self):
        self.c.close()


def f32(hi: int, lo: int) -> float:
    return struct.unpack(">f", struct.pack(">HH", hi, lo))[0]


def test_map_trigger_result_handshake_and_commands(make_station, tmp_path):
    st, ad = modbus_station(make_station, tmp_path, buffer=2)
    plc = Plc(ad.port)
    try:
        b = plc.wait(TRIGGER_READY)  # the adapter fills its map from the station's first events, just after start
        assert b[TRIGGER_READY] and b[ONLINE] and not b[BUSY] and not b[RESULTS_VALID] and not b[ERROR]
        r = plc.regs()
        assert r[0] == 0 and r[1] == 1  # job "four" (index 0), state Ready
        ic = b[INSPECTION_COMPLETED]

        plc.coil(TRIGGER, True)
        b = plc.bits()  # the trigger is taken before the write is answered
        assert b[TRIGGER_ACK] and not b[TRIGGER_READY]
        b = plc.wait(RESULTS_VALID)
        assert b[INSPECTION_COMPLETED] != ic and b[JOB_PASS]
        r = plc.regs(12)
        res = st.result(1)
        assert (r[2] << 16 | r[3]) == 1 and r[4] == 1  # result id 1, pass
        assert f32(r[8], r[9]) == res.measurements["holes.count"] == 4
        assert f32(r[10], r[11]) == pytest.approx(res.measurements["light.mean"], rel=1e-6)
        plc.coil(TRIGGER, False)
        assert not plc.bits()[TRIGGER_ACK]
        assert not res.acknowledged
        plc.coil(RESULTS_ACK, True)
        b = plc.bits()
        assert not b[RESULTS_VALID] and st.result(1).acknowledged
        plc.coil(RESULTS_ACK, False)
        assert plc.wait(TRIGGER_READY)[TRIGGER_READY]

        # commands: select job 1 (three), a bad job id, an unknown command
        b, err = plc.command(1, 1)
        assert b[COMMAND_COMPLETED] and not b[COMMAND_FAILED] and st.job == "three"
        assert plc.regs(1)[0] == 1
        b, err = plc.command(1, 7)
        assert b[COMMAND_FAILED] and err == 4 and st.job == "three"  # unknown_job
        b, err = plc.command(42)
        assert b[COMMAND_FAILED] and err == 8  # bad_command
        assert not plc.bits()[COMMAND_COMPLETED]  # cleared with ExecuteCommand

        # three holes is a pass for job "three": the next plate (plate-1) has four -> fail
        plc.coil(TRIGGER, True)
        b = plc.wait(RESULTS_VALID)
        r = plc.regs(12)
        assert (r[2] << 16 | r[3]) == 2 and r[4] == 2 and not b[JOB_PASS]  # fail
        plc.coil(TRIGGER, False)
        plc.coil(RESULTS_ACK, True)
        plc.coil(RESULTS_ACK, False)

        # continuous mode: Busy, TriggerReady low; stop -> Ready
        b, err = plc.command(2)
        assert b[COMMAND_COMPLETED] and st.state == "ContinuousExecution"
        assert plc.bits()[BUSY] and plc.regs(2)[1] == 3
        b, err = plc.command(3)
        assert b[COMMAND_COMPLETED]
        assert plc.command(6)[0][COMMAND_COMPLETED]  # reset counters

        # offline / trigger disabled: a trigger is refused (no TriggerAck) and the reason is in IR 5
        plc.coil(SET_OFFLINE, True)
        assert not plc.bits()[ONLINE]
        plc.coil(TRIGGER, True)
        assert not plc.bits()[TRIGGER_ACK] and plc.regs(6)[5] == 7  # offline
        plc.coil(TRIGGER, False)
        plc.coil(SET_OFFLINE, False)
        plc.coil(TRIGGER_ENABLE, False)
        plc.coil(TRIGGER, True)
        assert not plc.bits()[TRIGGER_ACK] and plc.regs(6)[5] == 9  # trigger_disabled
        plc.coil(TRIGGER, False)
        # unknown addresses are a Modbus exception, not a crash
        assert plc.c.read_input_registers(40, count=8).isError()
        assert plc.c.write_coil(30, True).isError()
    finally:
        plc.close()


def test_a_read_takes_the_result_before_its_event(make_station, tmp_path):
    # the adapter's event thread is held back: the PLC's poll still finds its result (catch_up), and the
    # late event does not queue it a second time
    import threading

    st, ad = modbus_station(make_station, tmp_path, buffer=4)
    plc = Plc(ad.port)
    gate = threading.Event()
    deliver = ad.on_event

    def held(ev):
        if ev.kind == "result_ready":
            gate.wait(20)
        deliver(ev)

    try:
        plc.wait(TRIGGER_READY)
        ad.on_event = held
        plc.coil(TRIGGER, True)
        b = plc.wait(RESULTS_VALID)
        r = plc.regs(12)
        assert (r[2] << 16 | r[3]) == 1 and r[4] == 1 and b[JOB_PASS]
        assert ad.tables.seen == 1 and not ad.tables.pending
        gate.set()  # the event comes now: already taken, skipped
        deadline = time.monotonic() + 10
        while st.status()["adapters"][ad.spec]["events_queued"] and time.monotonic() < deadline:
            time.sleep(0.01)
        plc.coil(TRIGGER, False)
        plc.coil(RESULTS_ACK, True)
        plc.coil(RESULTS_ACK, False)
        b = plc.bits()
        assert not b[RESULTS_VALID] and plc.regs(8)[7] == 0  # nothing else waiting: not shown twice
        assert st.result(1).acknowledged
    finally:
        gate.set()
        plc.close()


def test_plc_never_acknowledges_buffer_overrun(make_station, tmp_path):
    st, ad = modbus_station(make_station, tmp_path, buffer=2)
    plc = Plc(ad.port)
    try:
        for rid in (1, 2):
            plc.coil(TRIGGER, True)
            assert plc.bits()[TRIGGER_ACK]
            plc.coil(TRIGGER, False)
            deadline = time.monotonic() + 20
            while st.result(rid) is None and time.monotonic() < deadline:
                time.sleep(0.01)
        # no ResultsAck: the buffer (2) is full, the next trigger is refused and flagged
        plc.coil(TRIGGER, True)
        b = plc.bits()
        assert not b[TRIGGER_ACK] and b[BUFFER_OVERRUN]
        r = plc.regs(8)
        assert r[5] == 3 and r[6] == 1  # buffer_full, one missed trigger
        plc.coil(TRIGGER, False)
        for _ in range(5):  # a PLC that keeps trying: each one missed, nothing crashes
            plc.coil(TRIGGER, True)
            plc.coil(TRIGGER, False)
        s = st.status()
        assert s["missed"] == 6 and s["overrun"] and s["state"] == "Ready"
        assert (r[2] << 16 | r[3]) == 1 and r[7] == 2  # result 1 shown, 2 waiting
        # the PLC recovers: acknowledge -> the next result is presented (InspectionCompleted toggles)
        ic = plc.bits()[INSPECTION_COMPLETED]
        plc.coil(RESULTS_ACK, True)
        plc.coil(RESULTS_ACK, False)
        b = plc.bits()
        r = plc.regs(8)
        assert b[RESULTS_VALID] and b[INSPECTION_COMPLETED] != ic and (r[2] << 16 | r[3]) == 2
        plc.coil(RESULTS_ACK, True)
        plc.coil(RESULTS_ACK, False)
        assert not plc.bits()[RESULTS_VALID]
        b, _ = plc.command(6)  # reset counters clears the overrun
        assert b[COMMAND_COMPLETED] and not plc.bits()[BUFFER_OVERRUN]
        plc.coil(TRIGGER, True)
        assert plc.bits()[TRIGGER_ACK]
        plc.coil(TRIGGER, False)
        b = plc.wait(RESULTS_VALID)
        assert (plc.regs(4)[2] << 16 | plc.regs(4)[3]) == 3
    finally:
        plc.close()


def test_auto_acknowledge_slow_plc_loses_oldest_unseen_result_and_flags_it(make_station, tmp_path):
    path = write_station(tmp_path, buffer=2, acknowledge="auto", io="[modbus://127.0.0.1:0]")
    st = make_station(path)
    (_, ad), = st.adapters
    plc = Plc(ad.port)
    try:
        for rid in (1, 2, 3, 4):  # the station releases each result once stored; the PLC never acknowledges
            plc.coil(TRIGGER, True)
            assert plc.bits()[TRIGGER_ACK]
            plc.coil(TRIGGER, False)
            deadline = time.monotonic() + 20
            while st.status()["results_issued"] < rid or st.status()["buffer"]["used"]:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        deadline = time.monotonic() + 10
        while not plc.bits()[BUFFER_OVERRUN] and time.monotonic() < deadline:
            time.sleep(0.01)
        r = plc.regs(8)
        assert plc.bits()[BUFFER_OVERRUN] and (r[2] << 16 | r[3]) == 1 and r[7] == 3  # 1 shown, 3 and 4 waiting
        assert st.status()["missed"] == 0 and ad.stats()["dropped"] == 1
        plc.coil(RESULTS_ACK, True)
        plc.coil(RESULTS_ACK, False)
        r = plc.regs(8)
        assert (r[2] << 16 | r[3]) == 3  # result 2 was the one lost
        assert plc.command(4)[0][COMMAND_COMPLETED] and not plc.bits()[BUFFER_OVERRUN]  # reset clears it
    finally:
        plc.close()


def test_client_disconnects_and_reconnects_mid_run(make_station, tmp_path):
    st, ad = modbus_station(make_station, tmp_path, buffer=4)
    spec = "modbus://127.0.0.1:0"
    a = Plc(ad.port)
    a.coil(TRIGGER, True)
    assert a.bits()[TRIGGER_ACK]
    assert st.status()["adapters"][spec]["connected"] is True
    a.c.close()  # gone mid-inspection, Trigger still high, result not acknowledged
    deadline = time.monotonic() + 10
    while st.status()["adapters"][spec]["connected"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert st.status()["adapters"][spec]["connected"] is False
    b = Plc(ad.port)
    c = Plc(ad.port)  # two masters at once
    try:
        bits = b.wait(RESULTS_VALID)
        assert bits[TRIGGER_ACK]  # the coil is still high from the first client
        r = b.regs(4)
        assert (r[2] << 16 | r[3]) == 1 and c.regs(4) == r
        b.coil(TRIGGER, False)
        b.coil(RESULTS_ACK, True)
        b.coil(RESULTS_ACK, False)
        assert st.result(1).acknowledged
        c.coil(TRIGGER, True)
        c.wait(RESULTS_VALID)
        assert (c.regs(4)[2] << 16 | c.regs(4)[3]) == 2
        assert st.state == "Ready" and st.status()["adapters"][spec]["connected"] is True
    finally:
        b.close()
        c.close()


def mbpoll(port: int, *args: str) -> str:
    out = subprocess.run(["mbpoll", "-m", "tcp", "-p", str(port), "-0", "-1", "-o", "5", *args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def mbpoll_values(text: str) -> list[str]:
    return [m.group(2) for m in re.finditer(r"^\[(\d+)\]:\s+(\S+)", text, re.M)]


@pytest.mark.skipif(shutil.which("mbpoll") is None, reason="mbpoll is installed by scripts/install-data.sh")
def test_mbpoll_as_independent_master(make_station, tmp_path):
    st, ad = modbus_station(make_station, tmp_path, buffer=4)
    p = ad.port
    bits = mbpoll_values(mbpoll(p, "-t", "1", "-r", "0", "-c", "11", "127.0.0.1"))
    assert bits[TRIGGER_READY] == "1" and bits[ONLINE] == "1"
    mbpoll(p, "-t", "0", "-r", str(TRIGGER), "127.0.0.1", "1")  # write the Trigger coil
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        bits = mbpoll_values(mbpoll(p, "-t", "1", "-r", "0", "-c", "11", "127.0.0.1"))
        if bits[RESULTS_VALID] == "1":
            break
    assert bits[RESULTS_VALID] == "1" and bits[JOB_PASS] == "1" and bits[TRIGGER_ACK] == "1"
    rid = mbpoll_values(mbpoll(p, "-t", "3:int", "-B", "-r", "2", "-c", "1", "127.0.0.1"))
    code = mbpoll_values(mbpoll(p, "-t", "3", "-r", "4", "-c", "1", "127.0.0.1"))
    meas = mbpoll_values(mbpoll(p, "-t", "3:float", "-B", "-r", "8", "-c", "2", "127.0.0.1"))
    assert rid == ["1"] and code == ["1"]
    assert float(meas[0]) == 4.0
    assert float(meas[1]) == pytest.approx(st.result(1).measurements["light.mean"], rel=1e-5)
    mbpoll(p, "-t", "0", "-r", str(TRIGGER), "127.0.0.1", "0")
    mbpoll(p, "-t", "0", "-r", str(RESULTS_ACK), "127.0.0.1", "1")
    assert st.result(1).acknowledged
    # select job 1 through the holding registers and ExecuteCommand
    mbpoll(p, "-t", "4", "-r", "0", "127.0.0.1", "1", "1")
    mbpoll(p, "-t", "0", "-r", str(EXECUTE_COMMAND), "127.0.0.1", "1")
    deadline = time.monotonic() + 10
    while st.job != "three" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert st.job == "three"
    assert mbpoll_values(mbpoll(p, "-t", "1", "-r", str(COMMAND_COMPLETED), "-c", "1", "127.0.0.1")) == ["1"]
    assert mbpoll_values(mbpoll(p, "-t", "3", "-r", "0", "-c", "1", "127.0.0.1")) == ["1"]


def test_plc_command_over_modbus_against_loupe_serve(serve, tmp_path):
    path = write_station(tmp_path, buffer=8, io="[tcp://127.0.0.1:0, modbus://127.0.0.1:0]")
    srv = serve(path)
    text = "".join(srv.lines)
    deadline = time.monotonic() + 30
    port = None
    while port is None and time.monotonic() < deadline:
        m = re.search(r"io: modbus://[^:]+:(\d+)", text)
        if m:
            port = int(m.group(1))
            break
        text += srv.proc.stdout.readline()
    assert port, text
    out = subprocess.run(loupe_exe() + ["line", "plc", "--io", f"modbus://127.0.0.1:{port}", "--rate", "50",
                                        "--count", "24", "--job", "1", "--json"],
                         env={**os.environ, **SERVE_ENV}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    s = json.loads(out.stdout)
    assert s["handshake_ok"] and s["triggers"] == 24 and s["results"] == 24 and s["missed"] == 0
    assert s["first_result_id"] == 1 and s["last_result_id"] == 24 and s["state"] == "Ready"
    assert s["verdicts"] == {"pass": 8, "fail": 16}  # job three: 2 of every 6 plates have three holes
    rc, _, err = srv.stop()
    assert rc == 0, err
    with sqlite3.connect(tmp_path / "results.sqlite") as c:
        assert c.execute("SELECT COUNT(*), MIN(idx), MAX(idx) FROM frames").fetchone() == (24, 1, 24)
