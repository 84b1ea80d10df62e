"""Line benchmark: what a station adds to the bare pipeline, over TCP on loopback.

    OMP_NUM_THREADS=1 .venv/bin/python bench/line.py [--recipe R.yaml --images DIR] [--out bench-line.json]

All figures come from one run, on this machine:

- **bare pipeline**: ``Pipeline.process`` on the same images in this process (p50, p99);
- **latency**: the simulated PLC (``loupe_line.plc``) sends ``TRG`` to ``loupe serve`` at a rate with
  no queueing and times trigger -> reply; the **overhead** of each trigger is its latency minus the
  pipeline time the station itself measured for that result (``frames.total_ms`` in its store):
  everything the station, the store and the protocol add (target: p99 <= 2 ms). The folder is a stored
  source: the station reads and decodes its next frame while it waits for the trigger, so that read
  (``acquire_ms``, timed on its own in this process) is no longer on the trigger's path;
- **throughput**: the highest trigger rate, of those tried, sustained with no missed trigger
  (pipelined triggers, buffer 8, each rate for ``--seconds``; sustained = nothing missed and the replies
  kept up with the triggers, at least 97 % of the rate);
- **changeover**: ``JOB a`` / ``JOB b`` round trips, minus a ``STATE?`` round trip;
- **Modbus and OPC UA latency** (``protocol_latency``): one more ``loupe serve`` per protocol, with
  that one adapter (a line runs one PLC protocol; a second adapter adds its per-result work); the simulated PLC's Modbus driver (Trigger coil -> ResultsValid, then ResultsAck) and OPC UA driver
  (StartSingleJob -> ResultReady event, then ResultAcknowledge), overhead as above (targets: p99
  <= 2 ms Modbus, <= 5 ms OPC UA).

Without ``--recipe`` it uses the example station's classical recipes (``examples/station``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "station"
BUFFER = 8  # small, as a PLC would configure it: an overload shows as missed triggers within seconds


def pct(values, q):
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def setup(work: Path, recipe: Path | None, images: Path | None, buffer: int = BUFFER) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    if recipe is None:
        for f in ("four-holes.yaml", "three-holes.yaml"):
            shutil.copy(EXAMPLE / f, work / f)
        sys.path.insert(0, str(EXAMPLE))
        from make_images import plate
        import cv2

        (work / "images").mkdir(exist_ok=True)
        for i, n in enumerate([4, 4, 4, 3, 4, 3]):
            cv2.imwrite(str(work / "images" / f"plate-{i}.png"), plate(n, i % 3))
        jobs = "  a: four-holes.yaml\n  b: three-holes.yaml\n"
        source = f"folder:{work / 'images'}"
    else:
        jobs = f"  a: {recipe.resolve()}\n  b: {recipe.resolve()}\n"
        source = f'{{spec: "folder:{images.resolve()}", recursive: true}}'
    st = work / "station.yaml"
    st.write_text(f"""loupe_station: 1
name: bench
jobs:
{jobs}source: {source}
trigger: software
io: [tcp://127.0.0.1:0]
store: [sqlite:results.sqlite]
buffer: {buffer}
""")
    for f in work.glob("results.sqlite*"):
        f.unlink()
    for f in work.glob("station.state.json*"):
        f.unlink()
    return st


def bare_pipeline(station: Path, n: int) -> tuple[list[float], list[float]]:
    from host import create_plugin_manager
    from host.core.runner import Pipeline, open_source
    from host.core.station import load_station

    pm = create_plugin_manager()
    cfg = load_station(station, pm.catalogue)
    pipe = Pipeline(cfg.recipes["a"])
    source = open_source(cfg.source, pm.catalogue, base_dir=cfg.source_base)
    frames = [f for f in source.frames()]
    times, acquire = [], []
    it = iter(source.frames())
    for i in range(n + 20):
        t0 = time.perf_counter()
        pipe.process(frames[i % len(frames)])
        t1 = time.perf_counter()
        try:  # what a software trigger costs before the pipeline: the source's next frame
            next(it)
        except StopIteration:
            it = iter(source.frames())
            next(it)
        t2 = time.perf_counter()
        if i >= 20:
            times.append((t1 - t0) * 1e3)
            acquire.append((t2 - t1) * 1e3)
    pipe.close()
    return times, acquire


class Serve:
    """``loupe serve STATION`` in a subprocess; ``ports`` maps each adapter's scheme (``tcp``, ``modbus``,
    ``opcua``) to the port it printed, ``port`` is the first of ``schemes``."""

    def __init__(self, station: Path, schemes: tuple[str, ...] = ("tcp",)):
        exe = Path(sys.executable).with_name("loupe")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([str(exe), "serve", str(station), "-q"], cwd=station.parent, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.ports: dict[str, int] = {}
        for line in self.proc.stdout:
            m = re.search(r"io: (tcp|modbus|opc\.tcp)://[^:]+:(\d+)", line)
            if m:
                self.ports["opcua" if m.group(1) == "opc.tcp" else m.group(1)] = int(m.group(2))
            if all(s in self.ports for s in schemes):
                break
        missing = [s for s in schemes if s not in self.ports]
        if missing:
            self.proc.kill()
            raise RuntimeError(f"loupe serve did not print its {', '.join(missing)} endpoint")
        self.port = self.ports[schemes[0]]

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        return out


def line(sock, buf, text):
    sock.sendall(text.encode() + b"\r\n")
    while b"\r\n" not in buf[0]:
        buf[0] += sock.recv(65536)
    out, _, buf[0] = buf[0].partition(b"\r\n")
    return out.decode()


ECHO_SERVER = """
import socketserver, sys
class H(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
class S(socketserver.ThreadingTCPServer):
    daemon_threads = True
s = S(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def echo_round_trip(n: int, rate: float) -> list[float]:
    """The floor under any TCP figure on this machine, now: a bare line echo server (its own process,
    one thread per connection, like the station's) timed like the PLC times TRG."""
    proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = [b""]
        out = []
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t = time.perf_counter()
            line(s, buf, "TRG")
            out.append((time.perf_counter() - t) * 1e3)
        s.close()
        return out
    finally:
        proc.kill()
        proc.wait()


def changeover(port: int, n: int) -> dict:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = [b""]
    rt, co = [], []
    for i in range(n):
        t0 = time.perf_counter()
        assert line(s, buf, "STATE?") == "OK,Ready"
        rt.append((time.perf_counter() - t0) * 1e3)
        job = "b" if i % 2 == 0 else "a"
        t0 = time.perf_counter()
        r = line(s, buf, f"JOB {job}")
        co.append((time.perf_counter() - t0) * 1e3)
        assert r == f"OK,{job}", r
    if n % 2:
        line(s, buf, "JOB a")
    s.close()
    base = statistics.median(rt)
    return {"job_round_trip_ms_p50": statistics.median(co), "job_round_trip_ms_p99": pct(co, 99),
            "state_round_trip_ms_p50": base, "changeover_ms_p50": statistics.median(co) - base,
            "changeover_ms_p99": pct(co, 99) - base, "n": n}


# ---------------------------------------------------------------- Modbus and OPC UA (h12b)


def protocol_latency(work: Path, station: Path, count: int, rate: float,
                     schemes: tuple[str, ...] = ("modbus", "opcua"), process: str | None = None) -> dict:
    """Trigger -> results-valid over Modbus TCP (Trigger coil -> ResultsValid, polled as fast as the
    master can) and OPC UA (StartSingleJob -> ResultReady event, publishing interval 1 ms), each through
    a ``loupe serve`` of its own with that one adapter, as a line runs one PLC protocol (a second
    adapter in the same process would add its own per-result work, e.g. OPC UA's address-space
    writes, to the first's latency); overhead = latency - the station's own pipeline time.
    ``process`` (``own`` or ``shared``) sets the adapter's ``process:`` option (default: the adapter's own);
    the figures are then keyed ``SCHEME/PROCESS``."""
    from loupe_line.plc import run_plc

    out = {}
    for scheme in schemes:
        proto = work / f"station-{scheme}.yaml"
        entry = f"{{spec: '{scheme}://127.0.0.1:0', process: {process}}}" if process else f"{scheme}://127.0.0.1:0"
        text = station.read_text().replace("io: [tcp://127.0.0.1:0]", f"io: [{entry}]")
        proto.write_text(text.replace("results.sqlite", f"results-{scheme}.sqlite"))
        for f in work.glob(f"results-{scheme}.sqlite*"):
            f.unlink()
        srv = Serve(proto, (scheme,))
        try:
            io = f"{scheme}://127.0.0.1:{srv.port}"
            run_plc(io, rate=rate, count=30, ack=True)  # warm-up
            s = run_plc(io, rate=rate, count=count, ack=True)
            errors = sorted({str(o["error"]) for o in s["outcomes"] if o["error"]})
            if not s["handshake_ok"] or s["missed"]:
                print(f"  {io}: {s['problems']}, {s['missed']} missed ({', '.join(errors)})", file=sys.stderr)
            lat = {o["result_id"]: (o["done"] - o["sent"]) * 1e3 for o in s["outcomes"] if o["result_id"] is not None}
        finally:
            srv.stop()
        with sqlite3.connect(work / f"results-{scheme}.sqlite") as c:
            total = dict(c.execute("SELECT idx, total_ms FROM frames").fetchall())
        over = [lat[r] - total[r] for r in lat if r in total]
        key = f"{scheme}/{process}" if process else scheme
        out[key] = {"latency_ms": {"min": min(lat.values()), "p10": pct(list(lat.values()), 10),
                                   "p50": pct(list(lat.values()), 50), "p99": pct(list(lat.values()), 99),
                                   "rate_hz": rate, "n": len(lat)},
                    "overhead_ms": {"min": min(over), "p10": pct(over, 10), "p50": pct(over, 50),
                                    "p99": pct(over, 99), "n": len(over)},
                    "handshake_ok": s["handshake_ok"], "missed": s["missed"], "errors": errors}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", type=Path, help="a recipe to bench (default: the example's classical recipe)")
    ap.add_argument("--images", type=Path, help="its images (a folder)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--count", type=int, default=1000, help="triggers for the latency run")
    ap.add_argument("--rate", type=float, default=50.0, help="trigger rate of the latency run (Hz)")
    ap.add_argument("--rates", default="100,200,400,800,1200,1600,2400,3200",
                    help="rates tried for throughput (Hz)")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per throughput rate")
    ap.add_argument("--min-triggers", type=int, default=200, help="at least this many triggers per rate")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--protocol-count", type=int, default=500, help="triggers per protocol (Modbus, OPC UA)")
    ap.add_argument("--protocol-rate", type=float, default=50.0, help="their trigger rate (Hz)")
    ap.add_argument("--no-protocols", action="store_true", help="TCP only (skip Modbus and OPC UA)")
    ap.add_argument("--process", choices=("own", "shared", "both"),
                    help="run the Modbus and OPC UA adapters in a process of their own, in the station's, or "
                         "each both ways (default: each adapter's default)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="loupe-bench-line-"))
    station = setup(work, args.recipe, args.images)
    from loupe_line.plc import run_plc

    bare, acquire = bare_pipeline(station, args.count)
    echo = echo_round_trip(min(args.count, 500), min(args.rate, 100.0))
    srv = Serve(station)
    try:
        io = f"tcp://127.0.0.1:{srv.port}"
        # latency: well below the station's capacity, so no trigger waits for another
        rate = min(args.rate, 300.0 / statistics.median(bare))
        run_plc(io, rate=rate, count=min(50, args.count))  # warm-up
        s = run_plc(io, rate=rate, count=args.count)
        assert s["handshake_ok"], s["problems"]
        outs = [o for o in s["outcomes"] if o["result_id"] is not None]
        lat = {o["result_id"]: (o["done"] - o["sent"]) * 1e3 for o in outs}
        co = changeover(srv.port, 100)
        tput = []
        for r_hz in [float(r) for r in args.rates.split(",")]:
            n = max(args.min_triggers, int(r_hz * args.seconds))
            t = run_plc(io, rate=r_hz, count=n)
            # sustained: nothing missed and the replies kept up (no backlog growing behind the buffer)
            kept_up = t["rate_hz"] >= 0.97 * r_hz
            tput.append({"rate_hz": r_hz, "triggers": n, "missed": t["missed"], "achieved_hz": t["rate_hz"],
                         "p99_ms": t["latency_ms"]["p99"], "handshake_ok": t["handshake_ok"],
                         "sustained": t["missed"] == 0 and kept_up and t["handshake_ok"]})
            print(f"  throughput {r_hz:g} Hz: {t['missed']} missed, achieved {t['rate_hz']:.1f} Hz, "
                  f"p99 {t['latency_ms']['p99']:.2f} ms", file=sys.stderr)
            if not tput[-1]["sustained"]:
                break
    finally:
        summary = srv.stop()
    protocols = {}
    if not args.no_protocols:
        for process in (("shared", "own") if args.process == "both" else (args.process,)):
            protocols.update(protocol_latency(work, station, args.protocol_count, args.protocol_rate,
                                              process=process))
    with sqlite3.connect(work / "results.sqlite") as c:
        total = dict(c.execute("SELECT idx, total_ms FROM frames").fetchall())
        stored = c.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
    over = [lat[r] - total[r] for r in lat if r in total]
    ok = [t["rate_hz"] for t in tput if t["sustained"]]
    res = {
        "recipe": str(args.recipe or "examples/station/four-holes.yaml"),
        "bare_pipeline_ms": {"p50": pct(bare, 50), "p99": pct(bare, 99)},
        "acquire_ms": {"p50": pct(acquire, 50), "p99": pct(acquire, 99)},
        "tcp_echo_round_trip_ms": {"p50": pct(echo, 50), "p99": pct(echo, 99)},
        "latency_ms": {"p50": pct(list(lat.values()), 50), "p99": pct(list(lat.values()), 99),
                       "rate_hz": rate, "n": len(lat), "missed": s["missed"]},
        "overhead_ms": {"p50": pct(over, 50), "p99": pct(over, 99), "n": len(over)},
        "latency_minus_bare_ms": {"p50": pct(list(lat.values()), 50) - pct(bare, 50),
                                  "p99": pct(list(lat.values()), 99) - pct(bare, 99)},
        "changeover": co,
        "throughput": tput,
        "max_rate_no_miss_hz": max(ok) if ok else None,
        "bare_pipeline_limit_hz": 1e3 / statistics.median(bare),
        "stored_results": stored,
        "serve_summary": summary.strip().splitlines()[-1] if summary.strip() else "",
        "protocols": protocols,
    }
    for scheme, p in protocols.items():
        p["latency_minus_bare_ms"] = {q: p["latency_ms"][q] - res["bare_pipeline_ms"][q] for q in ("p50", "p99")}
    print(json.dumps(res, indent=2))
    print(f"""
| figure | value |
|---|---|
| bare pipeline p50 / p99 | {res['bare_pipeline_ms']['p50']:.3f} / {res['bare_pipeline_ms']['p99']:.3f} ms |
| bare TCP line echo round trip p50 / p99 (the floor here) | {res['tcp_echo_round_trip_ms']['p50']:.3f} / {res['tcp_echo_round_trip_ms']['p99']:.3f} ms |
| source next frame (read + decode) p50 / p99, in process | {res['acquire_ms']['p50']:.3f} / {res['acquire_ms']['p99']:.3f} ms |
| TCP trigger -> result p50 / p99 ({rate:.3g} Hz) | {res['latency_ms']['p50']:.3f} / {res['latency_ms']['p99']:.3f} ms |
| station overhead p50 / p99 (latency - own pipeline time) | {res['overhead_ms']['p50']:.3f} / {res['overhead_ms']['p99']:.3f} ms |
| changeover p50 / p99 (JOB round trip - STATE? round trip) | {co['changeover_ms_p50']:.3f} / {co['changeover_ms_p99']:.3f} ms |
| highest sustained rate, no missed trigger (buffer {BUFFER}; tried {args.rates}) | {res['max_rate_no_miss_hz']} Hz (bare pipeline limit {res['bare_pipeline_limit_hz']:.0f} Hz) |""")
    for scheme, p in protocols.items():
        print(f"| {scheme} trigger -> results valid p50 / p99 ({args.protocol_rate:g} Hz) | "
              f"{p['latency_ms']['p50']:.3f} / {p['latency_ms']['p99']:.3f} ms |")
        print(f"| {scheme} overhead p50 / p99 (latency - own pipeline time) | "
              f"{p['overhead_ms']['p50']:.3f} / {p['overhead_ms']['p99']:.3f} ms |")
        print(f"| {scheme} overhead min / p10 (the path without scheduling delays) | "
              f"{p['overhead_ms']['min']:.3f} / {p['overhead_ms']['p10']:.3f} ms |")
    if args.out:
        args.out.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
