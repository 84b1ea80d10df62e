"""An adapter in the station's process or in its own (``process: shared|own``), alternated in one run.

    OMP_NUM_THREADS=1 .venv/bin/python bench/line_process.py latency [--repeat 2] [--schemes modbus,opcua]
    OMP_NUM_THREADS=1 .venv/bin/python bench/line_process.py flood [--repeat 2]

``latency``: ``bench/line.py``'s ``protocol_latency`` (trigger -> results valid over Modbus and OPC UA,
500 triggers at 50 Hz, overhead = latency - the station's own pipeline time) with the adapter shared,
then own, ``--repeat`` times. ``flood``: a station with the TCP channel and a Modbus server; a second
Modbus client reads the status inputs and registers as fast as it can while the simulated PLC triggers
over TCP at 50 Hz; the TCP overhead and the station's own pipeline time, shared then own.
Figures: docs/line.md ("An adapter in a process of its own").
"""
from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import line as bl  # noqa: E402


def latency(work: Path, station: Path, repeat: int, schemes: tuple[str, ...]) -> None:
    for rep in range(repeat):
        for proc in ("shared", "own"):
            for key, v in bl.protocol_latency(work, station, 500, 50.0, schemes, process=proc).items():
                o = v["overhead_ms"]
                print(f"run {rep} {key:13s} overhead p50 {o['p50']:6.2f} p99 {o['p99']:6.2f} min {o['min']:5.2f} "
                      f"ms; missed {v['missed']}, handshake {'OK' if v['handshake_ok'] else 'FAILED'}", flush=True)


FLOOD = """
import sys, time
from pymodbus.client import ModbusTcpClient
c = ModbusTcpClient('127.0.0.1', port=int(sys.argv[1])); c.connect()
while True:
    c.read_discrete_inputs(0, count=11); c.read_input_registers(0, count=12)
"""


def flood(work: Path, station: Path, repeat: int) -> None:
    from loupe_line.plc import run_plc

    for rep in range(repeat):
        for proc in ("shared", "own"):
            st = work / f"station-flood-{proc}.yaml"
            st.write_text(station.read_text().replace(
                "io: [tcp://127.0.0.1:0]", f"io: [tcp://127.0.0.1:0, {{spec: 'modbus://127.0.0.1:0', process: {proc}}}]")
                .replace("results.sqlite", f"results-flood-{proc}.sqlite"))
            for f in work.glob(f"results-flood-{proc}.sqlite*"):
                f.unlink()
            srv = bl.Serve(st, ("tcp", "modbus"))
            client = subprocess.Popen([sys.executable, "-c", FLOOD, str(srv.ports["modbus"])])
            try:
                time.sleep(1.0)
                io = f"tcp://127.0.0.1:{srv.port}"
                run_plc(io, rate=50, count=30)  # warm-up
                s = run_plc(io, rate=50, count=400)
            finally:
                client.kill()
                srv.stop()
            lat = {o["result_id"]: (o["done"] - o["sent"]) * 1e3 for o in s["outcomes"] if o["result_id"] is not None}
            with sqlite3.connect(work / f"results-flood-{proc}.sqlite") as c:
                total = dict(c.execute("SELECT idx, total_ms FROM frames").fetchall())
            over = [lat[r] - total[r] for r in lat if r in total]
            pipe = [total[r] for r in lat if r in total]
            print(f"run {rep} {proc:6s} TCP overhead p50 {bl.pct(over, 50):.2f} p99 {bl.pct(over, 99):.2f} ms; "
                  f"latency p50 {bl.pct(list(lat.values()), 50):.2f} p99 {bl.pct(list(lat.values()), 99):.2f} ms; "
                  f"the station's pipeline p50 {bl.pct(pipe, 50):.2f} p99 {bl.pct(pipe, 99):.2f} ms", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("latency", "flood"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--schemes", default="modbus,opcua")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loupe-bench-line-process-"))
    station = bl.setup(work, None, None)
    if args.what == "latency":
        latency(work, station, args.repeat, tuple(args.schemes.split(",")))
    else:
        flood(work, station, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
