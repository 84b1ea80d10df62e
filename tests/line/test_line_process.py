"""Line adapters in a process of their own (``process: own``): the real adapters, in a real child
process, driven by real clients over loopback; the station's side is the real station."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from line_support import Client, Served, write_station

pytestmark = pytest.mark.timeout(180)


def port_of(adapter) -> int:
    return int(adapter.endpoint.rsplit(":", 1)[1])


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def wait_for(cond, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or cond}")


def test_tcp_channel_in_its_own_process(make_station, tmp_path):
    from host.core.line_process import ProcessAdapter

    st = make_station(write_station(tmp_path, buffer=2, io='[{spec: "tcp://127.0.0.1:0", process: own}]'))
    (spec, ad), = st.adapters
    assert isinstance(ad, ProcessAdapter) and ad._proc.pid != os.getpid()
    c = Client(port_of(ad))
    try:
        # the child's copy of the state follows the station's events: Ready comes just after start()
        wait_for(lambda: c.cmd("STATE?") == "OK,Ready", what="Ready")
        f = c.cmd("TRG").split(",")
        assert f[:3] == ["OK", "1", "pass"] and st.result(1).acknowledged  # waited for, replied, acknowledged
        assert c.cmd("JOB three") == "OK,three" and st.job == "three"    # a relayed action
        assert c.cmd("JOB nope") == "ER,JOB,unknown_job"                   # its refusal comes back as such
        assert c.cmd("START") == "OK,ContinuousExecution"
        assert c.cmd("TRG") == "ER,TRG,busy"
        assert c.cmd("STOP") == "OK,Ready"                                 # the child's copy follows the state
        assert c.cmd("JOB?") == "OK,three"
        while c.cmd("ACK").startswith("OK"):  # continuous mode's results wait in the buffer (2): release them
            pass
        n = st.status()["results_issued"]
        assert c.cmd("TRG").split(",")[1] == str(n + 1)
        assert st.status()["adapters"][spec]["connected"] is True          # told from the child
        assert st.status()["missed"] == 1
    finally:
        c.close()
    st.close()
    assert ad._proc.wait(10) == 0  # asked to stop, it closed its adapter and exited


def test_modbus_map_in_its_own_process(make_station, tmp_path):
    from pymodbus.client import ModbusTcpClient

    st = make_station(write_station(
        tmp_path, buffer=2, io='[{spec: "modbus://127.0.0.1:0", measurements: [holes.count], process: own}]'))
    (spec, ad), = st.adapters
    c = ModbusTcpClient("127.0.0.1", port=port_of(ad), timeout=5)
    assert c.connect()
    try:
        def bits():
            return c.read_discrete_inputs(0, count=11).bits[:11]

        wait_for(lambda: bits()[0], what="TriggerReady")
        for rid in (1, 2, 3):
            assert not c.write_coil(1, True).isError()  # Trigger
            assert bits()[1]                            # TriggerAck before the write was answered
            wait_for(lambda: bits()[4], what="ResultsValid")
            r = c.read_input_registers(0, count=10).registers
            assert (r[2] << 16 | r[3]) == rid and r[4] == (1 if st.result(rid).passed else 2)
            assert c.write_coil(1, False) is not None
            assert not c.write_coil(2, True).isError()  # ResultsAck
            assert st.result(rid).acknowledged and not bits()[4]
            c.write_coil(2, False)
        # a command (select job 1) runs on the station and completes
        c.write_registers(0, [1, 1])
        c.write_coil(3, True)
        wait_for(lambda: bits()[8] or bits()[9], what="CommandCompleted")
        assert bits()[8] and st.job == "three"
        c.write_coil(3, False)
    finally:
        c.close()


def test_an_adapter_process_that_dies_is_alarmed_and_restarted(make_station, tmp_path):
    st = make_station(write_station(tmp_path, buffer=4, io='[{spec: "tcp://127.0.0.1:0", process: own}]'))
    (spec, ad), = st.adapters
    c = Client(port_of(ad))
    assert c.cmd("TRG").split(",")[:2] == ["OK", "1"]
    c.close()
    first = ad._proc.pid
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: "exited (code -9)" in st.status()["alarms"].get("adapter " + spec, ""), what="the alarm")
    wait_for(lambda: ad.restarts == 1 and ad._started.is_set() and ad._proc.pid != first, what="the restart")
    c = Client(port_of(ad))  # a new process, listening again (port 0: a new port)
    try:
        assert c.cmd("TRG").split(",")[:2] == ["OK", "2"]  # result ids go on
        wait_for(lambda: "adapter " + spec not in st.status()["alarms"], what="the alarm cleared")
    finally:
        c.close()


def test_the_adapter_process_ends_with_a_killed_station(tmp_path):
    station = write_station(tmp_path, io='[{spec: "tcp://127.0.0.1:0", process: own}]')
    s = Served(station)
    kids = children(s.proc.pid)
    assert len(kids) == 1 and alive(kids[0])
    assert f"(own process, pid {kids[0]})" in s.lines[-1]
    c = Client(s.port)
    assert c.cmd("TRG").startswith("OK,1,")
    c.close()
    s.proc.kill()  # kill -9: no stop message; the socket's end closes
    s.proc.wait()
    wait_for(lambda: not alive(kids[0]), timeout=10, what="the adapter's process to exit")


def test_process_option_is_validated(line_pm, tmp_path):
    from host import RecipeError
    from host.core.station import describe_station, load_station

    bad = write_station(tmp_path, io='[{spec: "tcp://127.0.0.1:0", process: elsewhere}]')
    with pytest.raises(RecipeError) as e:
        load_station(bad, line_pm.catalogue)
    assert "io[0].process: 'elsewhere' is not one of own, shared" in str(e.value)
    ok = write_station(tmp_path, name="ok.yaml", io='[{spec: "tcp://127.0.0.1:0", process: own}, '
                                                    '{spec: "modbus://127.0.0.1:0", process: shared}]')
    cfg = load_station(ok, line_pm.catalogue)
    assert [io.process for io in cfg.io] == ["own", "shared"]
    assert "io: tcp://127.0.0.1:0 (own process), modbus://127.0.0.1:0;" in describe_station(cfg)
