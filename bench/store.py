"""Results stores: what each reporter costs the runner, and `loupe results summary` on a million frames.

Starts its own throwaway PostgreSQL cluster and Mosquitto broker on loopback (as the tests do), then:

1. Runs the same in-memory frames (3 trivial inspect steps with limits) through ``run_recipe`` with no
   reporter, then with each of jsonl, csv, sqlite, postgresql and mqtt, alternating, ``--rounds`` times.
   Reports, per reporter, the median per-frame cost on the runner's path (first to last frame: not the
   opening, not the close) against the no-reporter run, as µs and as a share of a 5 ms frame, and the rows
   per second to a finished store (the whole run: open, frames, and the close that commits or waits for
   the broker's acknowledgements).
2. ``--million N``: fills a PostgreSQL and a SQLite store with N frames (with one step result and one
   measurement each) and times ``summary`` on both.

    .venv/bin/python bench/store.py [--frames 5000] [--rounds 3] [--million 1000000] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from host import Frame, InspectTool, NoParams, Recipe, Source, ToolOutput, hookimpl
from host.core.manager import create_plugin_manager
from host.core.runner import new_run_info, open_reporter, run_recipe

PW = "bench-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Corner(InspectTool):
    id = "bench.corner"
    Params = NoParams
    measurements = {"value": "the top-left pixel"}

    def inspect(self, image):
        return ToolOutput({"value": int(image[0, 0])})


class MemorySource(Source):
    scheme = "memory"
    frames_list: list[Frame] = []

    def frames(self, skip=None):
        yield from self.frames_list


class BenchPlugin:
    @hookimpl
    def loupe_inspect(self, register):
        register(Corner)

    @hookimpl
    def loupe_acquire(self, register):
        register(MemorySource)


def start_postgres(base: Path):
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))[-1]
    data, pwfile = base / "data", base / "pw"
    pwfile.write_text(PW + "\n")
    user = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                    "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--no-sync"], check=True, capture_output=True)
    port = free_port()
    # durable settings (fsync on): the figures are for a real store, not the tests' fast cluster
    subprocess.run([*user, str(bindir / "pg_ctl"), "-D", str(data), "-o",
                    f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "-l", str(base / "log"), "-w", "start"],
                   check=True, capture_output=True)
    stop = [*user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
    return port, stop


def start_mosquitto(base: Path):
    port = free_port()
    conf = base / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
                    + ("user root\n" if os.geteuid() == 0 else ""))
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return port, proc


def one_run(pm, recipe, frames, specs: list[str]) -> tuple[float, float]:
    """(seconds for the frames themselves, first to last, scaled to n frames; seconds for the whole run
    including opening and closing the reporters)."""
    MemorySource.frames_list = frames
    source = MemorySource(MemorySource.Params(target=""))
    run = new_run_info(recipe, "memory:", pm)
    reporters = [open_reporter(s, pm.catalogue, run) for s in specs]
    marks = {}

    def on_frame(result, n=len(frames)):
        if result.index == 0:
            marks["first"] = time.perf_counter()
        elif result.index == n - 1:
            marks["last"] = time.perf_counter()

    t0 = time.perf_counter()
    summary = run_recipe(recipe, source, reporters, pm, run, on_frame=on_frame)
    t1 = time.perf_counter()
    assert summary.frames == len(frames)
    return (marks["last"] - marks["first"]) / (len(frames) - 1) * len(frames), t1 - t0


def bench_reporters(pm, specs: dict[str, str], n: int, rounds: int) -> dict:
    recipe = Recipe.from_dict({"loupe_recipe": 1, "name": "store-bench", "inspect": [
        {"tool": "bench.corner", "name": f"s{i}", "limits": {"value": {"min": 0, "max": 255}}} for i in range(3)]},
        pm.catalogue)
    img = np.full((8, 8), 7, np.uint8)
    res: dict[str, dict[str, list[float]]] = {k: {"path": [], "total": []} for k in ["none", *specs]}
    for r in range(rounds):
        for name in ["none", *specs]:
            frames = [Frame(image=img, source="memory", index=i, path=f"r{r}/{name}/{i:06d}.png") for i in range(n)]
            path, total = one_run(pm, recipe, frames, [] if name == "none" else [specs[name]])
            res[name]["path"].append(path)
            res[name]["total"].append(total)
    base = statistics.median(res["none"]["path"]) / n * 1e6
    out = {"frames": n, "rounds": rounds, "none_us_per_frame": base, "reporters": {}}
    for name in specs:
        p = statistics.median(res[name]["path"]) / n * 1e6
        t = statistics.median(res[name]["total"])
        out["reporters"][name] = {"path_us_per_frame": p, "overhead_us_per_frame": p - base,
                                  "overhead_pct_of_5ms": 100 * (p - base) / 5000, "rows_per_s": n / t}
    return out


def bench_million(pg_port: int, n: int, folder: Path) -> dict:
    import psycopg

    from loupe_postgres.schema import migrate, parse_spec
    from loupe_results.stores import open_store

    spec = f"postgresql://postgres@127.0.0.1:{pg_port}/million"
    with psycopg.connect(f"host=127.0.0.1 port={pg_port} user=postgres password={PW}", autocommit=True) as c:
        c.execute("CREATE DATABASE million")
    out: dict = {"frames": n}
    with psycopg.connect(parse_spec(spec[len("postgresql:"):]).conninfo) as c:
        migrate(c)
        t0 = time.perf_counter()
        c.execute("INSERT INTO runs(run_id, station, recipe_name, recipe_hash, recipe, source, started) "
                  "SELECT 'run' || r, 'st' || (r % 4), 'job' || (r % 3), 'h', '{}', 'memory:', now() "
                  "FROM generate_series(0, 19) r")
        c.execute("INSERT INTO frames(run_id, station, recipe_hash, key, idx, ts, verdict, total_ms, timings) "
                  "SELECT 'run' || (i %% 20), 'st' || ((i %% 20) %% 4), 'h', 'k' || i, i, "
                  "now() - make_interval(secs => (%s - i) * 0.36), "
                  "CASE WHEN i %% 97 = 0 THEN 'fail' WHEN i %% 1013 = 0 THEN 'error' ELSE 'pass' END, 1.0, "
                  "'{\"s\": 1.0}' FROM generate_series(0, %s - 1) i", (n, n))
        c.execute("INSERT INTO results(frame_id, step, tool, verdict, measurements, failures) "
                  "SELECT id, 's', 'bench.corner', verdict, jsonb_build_object('value', idx % 255), "
                  "CASE WHEN verdict = 'fail' THEN '[\"value=1 fail\"]'::jsonb END FROM frames")
        c.execute("INSERT INTO measurements(frame_id, run_id, station, ts, step, name, value, lo, hi, verdict) "
                  "SELECT id, run_id, station, ts, 's', 'value', idx % 255, 0, 255, "
                  "CASE WHEN verdict = 'fail' THEN 'fail' ELSE 'pass' END FROM frames")
        c.commit()
        c.autocommit = True
        c.execute("VACUUM ANALYZE")
        out["postgresql_fill_s"] = time.perf_counter() - t0
    with open_store(spec) as st:
        t0 = time.perf_counter()
        s = st.summary()
        out["postgresql_summary_s"] = time.perf_counter() - t0
        assert s["total"]["frames"] == n
    # SQLite, in the host's schema (host/reporters/sqlite.py creates it)
    from host.reporters.sqlite import SCHEMA

    db = folder / "million.sqlite"
    con = sqlite3.connect(db)
    con.executescript(SCHEMA)
    t0 = time.perf_counter()
    now = time.time()
    con.executemany("INSERT INTO runs(run_id, recipe_name, recipe_hash, recipe, source, started) "
                    "VALUES (?,?,?,?,?,?)", [(f"run{r}", f"job{r % 3}", "h", "{}", "memory:", now) for r in range(20)])
    con.executemany(
        "INSERT INTO frames(id, run_id, recipe_hash, key, idx, ts, verdict, total_ms, timings) VALUES (?,?,?,?,?,?,?,?,?)",
        ((i + 1, f"run{i % 20}", "h", f"k{i}", i, now - (n - i) * 0.36,
          "fail" if i % 97 == 0 else "error" if i % 1013 == 0 else "pass", 1.0, '{"s": 1.0}') for i in range(n)))
    con.executemany(
        "INSERT INTO results(frame_id, step, tool, verdict, measurements, failures) VALUES (?,?,?,?,?,?)",
        ((i + 1, "s", "bench.corner", "fail" if i % 97 == 0 else "error" if i % 1013 == 0 else "pass",
          json.dumps({"value": i % 255}), '["value=1 fail"]' if i % 97 == 0 else None) for i in range(n)))
    con.commit()
    con.execute("ANALYZE")
    con.close()
    out["sqlite_fill_s"] = time.perf_counter() - t0
    with open_store(f"sqlite:{db}") as st:
        t0 = time.perf_counter()
        s = st.summary()
        out["sqlite_summary_s"] = time.perf_counter() - t0
        assert s["total"]["frames"] == n
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--million", type=int, default=0, help="also time `summary` on this many stored frames")
    ap.add_argument("--no-reporters", action="store_true", help="skip part 1 (only --million)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="loupe-bench-store-"))
    base.chmod(0o755)  # the postgres user must reach base/pg
    (base / "pg").mkdir()
    pg_port, pg_stop = start_postgres(base / "pg")
    mq_port, mq = start_mosquitto(base)
    os.environ["PGPASSWORD"] = PW
    try:
        pm = create_plugin_manager()
        pm.register_plugin(BenchPlugin(), name="bench", distribution="(bench)")
        specs = {"jsonl": f"jsonl:{base / 'r.jsonl'}", "csv": f"csv:{base / 'r.csv'}",
                 "sqlite": f"sqlite:{base / 'r.sqlite'}",
                 "postgresql": f"postgresql://postgres@127.0.0.1:{pg_port}/postgres",
                 "mqtt": f"mqtt://127.0.0.1:{mq_port}/bench/line?spool={base / 'spool.sqlite'}"}
        out = {} if args.no_reporters else {"reporters": bench_reporters(pm, specs, args.frames, args.rounds)}
        if args.million:
            out["million"] = bench_million(pg_port, args.million, base)
    finally:
        subprocess.run(pg_stop, capture_output=True)
        mq.kill()
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    r = out.get("reporters")
    if r:
        print(f"{r['frames']} frames, 3 trivial steps, median of {r['rounds']} rounds; no reporter: "
              f"{r['none_us_per_frame']:.1f} µs/frame")
        print(f"  {'reporter':<11} {'µs/frame':>9} {'overhead':>9} {'% of 5 ms':>9} {'rows/s':>9}")
        for name, v in r["reporters"].items():
            print(f"  {name:<11} {v['path_us_per_frame']:9.1f} {v['overhead_us_per_frame']:9.1f} "
                  f"{v['overhead_pct_of_5ms']:9.2f} {v['rows_per_s']:9.0f}")
    if "million" in out:
        m = out["million"]
        print(f"summary on {m['frames']} frames: postgresql {m['postgresql_summary_s']:.2f} s "
              f"(fill {m['postgresql_fill_s']:.0f} s), sqlite {m['sqlite_summary_s']:.2f} s "
              f"(fill {m['sqlite_fill_s']:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
