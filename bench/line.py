"""Line benchmark: what a station adds to the bare pipeline, over TCP on loopback.

    OMP_NUM_THREADS=1 .venv/bin/python bench/line.py [--recipe R.yaml --images DIR] [--out bench-line.json]

All figures come from one run, on this machine:

- **bare pipeline**: ``Pipeline.process`` on the same images in this process (p50, p99);
- **latency**: the simulated PLC (``loupe_line.plc``) sends ``TRG`` to ``loupe serve`` at a rate with
  no queueing and times trigger -> reply; the **overhead** of each trigger is its latency minus the
  pipeline time the station itself measured for that result (``frames.total_ms`` in its store):
  everything the station, the store and the protocol add (target: p99 <= 2 ms);
- **throughput**: the highest trigger rate, of those tried, sustained with no missed trigger
  (pipelined triggers, buffer 64, each rate for ``--seconds``);
- **changeover**: ``JOB a`` / ``JOB b`` round trips, minus a ``STATE?`` round trip.

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


def pct(values, q):
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def setup(work: Path, recipe: Path | None, images: Path | None) -> Path:
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
        source = f"folder:{images.resolve()}"
    st = work / "station.yaml"
    st.write_text(f"""loupe_station: 1
name: bench
jobs:
{jobs}source: {source}
trigger: software
io: [tcp://127.0.0.1:0]
store: [sqlite:results.sqlite]
buffer: 64
""")
    for f in work.glob("results.sqlite*"):
        f.unlink()
    for f in work.glob("station.state.json*"):
        f.unlink()
    return st


def bare_pipeline(station: Path, n: int) -> list[float]:
    from host import create_plugin_manager
    from host.core.runner import Pipeline, open_source
    from host.core.station import load_station

    pm = create_plugin_manager()
    cfg = load_station(station, pm.catalogue)
    pipe = Pipeline(cfg.recipes["a"])
    frames = [f for f in open_source(cfg.source, pm.catalogue, base_dir=cfg.source_base).frames()]
    times = []
    for i in range(n + 20):
        t0 = time.perf_counter()
        pipe.process(frames[i % len(frames)])
        if i >= 20:
            times.append((time.perf_counter() - t0) * 1e3)
    pipe.close()
    return times


class Serve:
    def __init__(self, station: Path):
        exe = Path(sys.executable).with_name("loupe")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([str(exe), "serve", str(station), "-q"], cwd=station.parent, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.port = None
        for line in self.proc.stdout:
            m = re.search(r"io: tcp://[^:]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            raise RuntimeError("loupe serve did not start")

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", type=Path, help="a recipe to bench (default: the example's classical recipe)")
    ap.add_argument("--images", type=Path, help="its images (a folder)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--count", type=int, default=1000, help="triggers for the latency run")
    ap.add_argument("--rate", type=float, default=100.0, help="trigger rate of the latency run (Hz)")
    ap.add_argument("--rates", default="100,200,400,800,1200,1600,2400,3200",
                    help="rates tried for throughput (Hz)")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per throughput rate")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="loupe-bench-line-"))
    station = setup(work, args.recipe, args.images)
    from loupe_line.plc import run_plc

    bare = bare_pipeline(station, args.count)
    srv = Serve(station)
    try:
        io = f"tcp://127.0.0.1:{srv.port}"
        run_plc(io, rate=args.rate, count=50)  # warm-up
        s = run_plc(io, rate=args.rate, count=args.count)
        assert s["handshake_ok"] and s["missed"] == 0, s["problems"]
        outs = [o for o in s["outcomes"] if o["result_id"] is not None]
        lat = {o["result_id"]: (o["done"] - o["sent"]) * 1e3 for o in outs}
        co = changeover(srv.port, 100)
        tput = []
        for rate in [float(r) for r in args.rates.split(",")]:
            n = max(200, int(rate * args.seconds))
            t = run_plc(io, rate=rate, count=n)
            tput.append({"rate_hz": rate, "triggers": n, "missed": t["missed"], "achieved_hz": t["rate_hz"],
                         "p99_ms": t["latency_ms"]["p99"], "handshake_ok": t["handshake_ok"]})
            print(f"  throughput {rate:g} Hz: {t['missed']} missed, p99 {t['latency_ms']['p99']:.2f} ms",
                  file=sys.stderr)
            if t["missed"]:
                break
    finally:
        summary = srv.stop()
    with sqlite3.connect(work / "results.sqlite") as c:
        total = dict(c.execute("SELECT idx, total_ms FROM frames").fetchall())
        stored = c.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
    over = [lat[r] - total[r] for r in lat if r in total]
    ok = [t["rate_hz"] for t in tput if t["missed"] == 0 and t["handshake_ok"]]
    res = {
        "recipe": str(args.recipe or "examples/station/four-holes.yaml"),
        "bare_pipeline_ms": {"p50": pct(bare, 50), "p99": pct(bare, 99)},
        "latency_ms": {"p50": pct(list(lat.values()), 50), "p99": pct(list(lat.values()), 99),
                       "rate_hz": args.rate, "n": len(lat)},
        "overhead_ms": {"p50": pct(over, 50), "p99": pct(over, 99), "n": len(over)},
        "latency_minus_bare_ms": {"p50": pct(list(lat.values()), 50) - pct(bare, 50),
                                  "p99": pct(list(lat.values()), 99) - pct(bare, 99)},
        "changeover": co,
        "throughput": tput,
        "max_rate_no_miss_hz": max(ok) if ok else None,
        "bare_pipeline_limit_hz": 1e3 / statistics.median(bare),
        "stored_results": stored,
        "serve_summary": summary.strip().splitlines()[-1] if summary.strip() else "",
    }
    print(json.dumps(res, indent=2))
    print(f"""
| figure | value |
|---|---|
| bare pipeline p50 / p99 | {res['bare_pipeline_ms']['p50']:.3f} / {res['bare_pipeline_ms']['p99']:.3f} ms |
| TCP trigger -> result p50 / p99 ({args.rate:g} Hz) | {res['latency_ms']['p50']:.3f} / {res['latency_ms']['p99']:.3f} ms |
| station overhead p50 / p99 (latency - own pipeline time) | {res['overhead_ms']['p50']:.3f} / {res['overhead_ms']['p99']:.3f} ms |
| changeover p50 / p99 (JOB round trip - STATE? round trip) | {co['changeover_ms_p50']:.3f} / {co['changeover_ms_p99']:.3f} ms |
| highest rate with no missed trigger (tried {args.rates}) | {res['max_rate_no_miss_hz']} Hz (bare pipeline limit {res['bare_pipeline_limit_hz']:.0f} Hz) |""")
    if args.out:
        args.out.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
