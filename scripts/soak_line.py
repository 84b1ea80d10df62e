"""Soak a station: ``loupe serve`` driven by the simulated PLC at a steady rate for a while.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/soak_line.py --minutes 30 --rate 200 [--out soak.json]

Reports the server's RSS curve (sampled from /proc every ``--sample`` seconds), the missed
triggers, and checks that the stored results equal the issued result ids (every id the
PLC received is in the store exactly once, and the store holds nothing else). The station
is the example's (classical recipes, a folder of six images, TCP on loopback).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from line import Serve, setup  # noqa: E402  (bench/line.py)


def rss_mb(pid: int) -> float | None:
    try:
        for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    ap.add_argument("--buffer", type=int, default=32, help="the station's result buffer (default 32)")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from loupe_line.plc import run_plc

    work = args.work or Path(tempfile.mkdtemp(prefix="loupe-soak-"))
    station = setup(work, None, None, buffer=args.buffer)
    srv = Serve(station)
    curve: list[tuple[float, float]] = []
    done = threading.Event()
    t0 = time.monotonic()

    def sample():
        while True:
            v = rss_mb(srv.proc.pid)
            if v is not None:
                curve.append((round(time.monotonic() - t0, 1), round(v, 2)))
                print(f"rss {curve[-1][0]:g} s {v:.1f} MB", flush=True)  # as it goes: a killed soak keeps its curve
            if done.wait(args.sample):
                return

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    count = int(args.rate * args.minutes * 60)
    try:
        s = run_plc(f"tcp://127.0.0.1:{srv.port}", rate=args.rate, count=count, timeout=60)
    finally:
        done.set()
        th.join()
        summary = srv.stop()
    issued = [o["result_id"] for o in s["outcomes"] if o["result_id"] is not None]
    with sqlite3.connect(work / "results.sqlite") as c:
        stored = [r[0] for r in c.execute("SELECT idx FROM frames ORDER BY idx")]
    q = max(1, len(curve) // 4)
    first = statistics.median(v for _, v in curve[:q])
    last = statistics.median(v for _, v in curve[-q:])
    res = {
        "minutes": args.minutes, "rate_hz": args.rate, "buffer": args.buffer, "triggers": s["triggers"], "results": s["results"],
        "missed": s["missed"], "handshake_ok": s["handshake_ok"], "latency_ms": s["latency_ms"],
        "stored": len(stored), "stored_equals_issued": sorted(issued) == stored,
        "rss_mb_first_quarter_median": first, "rss_mb_last_quarter_median": last,
        "rss_growth_mb": round(last - first, 2), "rss_curve": curve,
        "serve_summary": summary.strip().splitlines()[-1] if summary.strip() else "",
    }
    print(json.dumps({k: v for k, v in res.items() if k != "rss_curve"}, indent=2))
    print("rss curve (s, MB): " + " ".join(f"{t:g}:{v:.1f}" for t, v in curve))
    if args.out:
        args.out.write_text(json.dumps(res, indent=2))
    return 0 if res["stored_equals_issued"] and s["handshake_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
