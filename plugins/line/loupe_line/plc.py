"""``loupe line plc``: a simulated PLC that drives a station through one of its adapters.

    loupe line plc --io tcp://127.0.0.1:2000 --rate 50 --count 500 [--ack] [--job JOB] [--json]

It sends ``--count`` triggers at ``--rate`` Hz, checks the handshake (every
trigger answered, in order, result ids increasing and never reused, every
acknowledgement accepted) and prints the trigger -> result latency (p50, p99)
and the missed triggers (refused because the station's result buffer was full,
or because it was not ready). Exit 0 when the handshake held, 1 when it did not.

Drivers, by scheme: a driver has ``open()``, ``close()``, ``state()``,
``select_job(job)`` and ``run(times, ack) -> outcomes`` (see ``TcpDriver``).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from host import Command

#: scheme -> "module:Class" (imported when used)
DRIVERS = {
    "tcp": "loupe_line.tcp:TcpDriver",
    "modbus": "loupe_line.plc_drivers:ModbusDriver",
    "opcua": "loupe_line.plc_drivers:OpcUaDriver",
}


def driver_for(spec: str, timeout: float = 30.0):
    scheme, sep, target = spec.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in DRIVERS:
        raise ValueError(f"--io {spec!r}: the simulated PLC drives {', '.join(f'{s}://' for s in DRIVERS)}")
    mod, _, cls = DRIVERS[scheme].partition(":")
    return getattr(importlib.import_module(mod), cls)(target, timeout=timeout)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


MISSED = frozenset({"buffer_full", "busy", "not_ready"})  # refusals a PLC counts as missed triggers


def summarise(outcomes: list[dict], elapsed: float) -> dict:
    """Latency, missed triggers and handshake problems of one PLC run."""
    lat = [(o["done"] - o["sent"]) * 1e3 for o in outcomes if o["result_id"] is not None]
    ids = [o["result_id"] for o in outcomes if o["result_id"] is not None]
    missed = [o for o in outcomes if o["error"] in MISSED]
    problems: list[str] = []
    unanswered = sum(1 for o in outcomes if o["sent"] is not None and o["done"] is None)
    if unanswered:
        problems.append(f"{unanswered} triggers got no reply")
    if any(b <= a for a, b in zip(ids, ids[1:])):
        problems.append("result ids did not increase")
    if len(set(ids)) != len(ids):
        problems.append("a result id was reused")
    other = [o["error"] for o in outcomes if o["error"] and o["error"] not in MISSED]
    if other:
        problems.append(f"{len(other)} errors: {', '.join(sorted(set(other)))[:200]}")
    verdicts: dict[str, int] = {}
    for o in outcomes:
        if o["verdict"]:
            verdicts[o["verdict"]] = verdicts.get(o["verdict"], 0) + 1
    return {
        "triggers": sum(1 for o in outcomes if o["sent"] is not None), "results": len(ids),
        "missed": len(missed), "verdicts": verdicts,
        "first_result_id": ids[0] if ids else None, "last_result_id": ids[-1] if ids else None,
        "latency_ms": {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "max": max(lat) if lat else None},
        "rate_hz": len(outcomes) / elapsed if elapsed > 0 else None,
        "handshake_ok": not problems, "problems": problems,
    }


def run_plc(spec: str, rate: float, count: int, ack: bool = False, job: str | None = None,
            timeout: float = 30.0) -> dict:
    driver = driver_for(spec, timeout=timeout)
    driver.open()
    try:
        if job is not None:
            reply = driver.select_job(job)
            if not str(reply).startswith("OK"):   # a job the station does not have: the user's mistake
                raise ValueError(f"--job {job}: the station refused it ({reply})")
        t0 = time.perf_counter() + 0.05
        times = [t0 + i / rate for i in range(count)]
        outcomes = driver.run(times, ack)
        summary = summarise(outcomes, time.perf_counter() - t0)
        summary["state"] = driver.state()
    finally:
        driver.close()
    summary["io"] = spec
    summary["requested_rate_hz"] = rate
    summary["outcomes"] = outcomes
    return summary


class LineCommand(Command):
    name = "line"
    help = "line tools: 'loupe line plc' simulates a PLC that drives a station"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="line_command", metavar="COMMAND")
        sub.required = True
        p = sub.add_parser("plc", help="drive a station through an adapter at a given rate; check the handshake")
        p.add_argument("--io", required=True, metavar="SPEC", help=f"the station's adapter, e.g. tcp://127.0.0.1:2000 "
                                                                   f"(drivers: {', '.join(DRIVERS)})")
        p.add_argument("--rate", type=float, default=10.0, metavar="HZ", help="triggers per second (default 10)")
        p.add_argument("--count", type=int, default=100, metavar="N", help="how many triggers (default 100)")
        p.add_argument("--ack", action="store_true", help="acknowledge every result explicitly (ACK / ResultsAck)")
        p.add_argument("--job", help="select this job first")
        p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a reply (default 30)")
        p.add_argument("--json", action="store_true", help="print one JSON object")

    def run(self, args: argparse.Namespace) -> int:
        from host import UsageError

        if args.rate <= 0 or args.count < 1:
            raise UsageError("--rate must be positive and --count at least 1")
        try:
            s = run_plc(args.io, args.rate, args.count, ack=args.ack, job=args.job, timeout=args.timeout)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"--io {args.io}: {exc}") from None
        s.pop("outcomes")
        if args.json:
            print(json.dumps(s))
        else:
            lat = s["latency_ms"]
            fmt = (lambda v: f"{v:.2f}" if v is not None else "-")
            print(f"{s['triggers']} triggers at {s['requested_rate_hz']:g} Hz over {s['io']}: {s['results']} results "
                  f"({', '.join(f'{v} {k}' for k, v in sorted(s['verdicts'].items())) or 'none'}), "
                  f"{s['missed']} missed; result ids {s['first_result_id']}..{s['last_result_id']}")
            print(f"latency trigger -> result: p50 {fmt(lat['p50'])} ms, p99 {fmt(lat['p99'])} ms, "
                  f"max {fmt(lat['max'])} ms; station state {s['state']}")
            print("handshake OK" if s["handshake_ok"] else "handshake FAILED: " + "; ".join(s["problems"]))
        sys.stdout.flush()
        return 0 if s["handshake_ok"] else 1
