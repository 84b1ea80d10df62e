"""``loupe results summary|export|spc|migrate STORE``: the analysis side of a results store.

STORE is ``sqlite:PATH`` or ``postgresql://USER@HOST:PORT/DB`` (the password from PGPASSWORD/.pgpass).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

from host import Command, UsageError

STORE_HELP = "sqlite:PATH or postgresql://USER@HOST:PORT/DB"


class ResultsCommand(Command):
    name = "results"
    help = "summarise, export and chart a results store (yield, CSV/Parquet, SPC with Cp/Cpk)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="results_command", metavar="{summary,export,spc,migrate}")
        s = sub.add_parser("summary", help="yield per run, station, job and hour; top failing steps and measurements")
        s.add_argument("store", metavar="STORE", help=STORE_HELP)
        s.add_argument("--json", action="store_true", help="print one JSON object")
        s.add_argument("--top", type=int, default=10, help="how many failing steps/measurements (default 10)")

        s = sub.add_parser("export", help="one row per frame (with a key column) to CSV or Parquet")
        s.add_argument("store", metavar="STORE", help=STORE_HELP)
        s.add_argument("--out", required=True, metavar="FILE.csv|FILE.parquet")

        s = sub.add_parser("spc", help="control charts (individuals/MR or X-bar/R), Western Electric rules, "
                                       "Cp/Cpk against the recipe's limits")
        s.add_argument("store", metavar="STORE", help=STORE_HELP)
        s.add_argument("measurement", metavar="MEASUREMENT")
        s.add_argument("--step", help="the step that measures it (needed when several do)")
        s.add_argument("--subgroup", type=int, default=1,
                       help="subgroup size: 1 = individuals/moving range (default), 2..10 = X-bar/R")
        s.add_argument("--run", help="only this run id ('last': the newest run)")
        s.add_argument("--station", help="only this station")
        s.add_argument("--last", type=int, help="only the last N values")
        s.add_argument("--lsl", type=float, help="lower specification limit (default: the recipe's min)")
        s.add_argument("--usl", type=float, help="upper specification limit (default: the recipe's max)")
        s.add_argument("--json", action="store_true", help="print one JSON object")
        s.add_argument("--out", metavar="DIR", help="write DIR/spc_<step>_<name>.png and .json")

        s = sub.add_parser("migrate", help="apply the schema's forward migrations (postgresql stores)")
        s.add_argument("store", metavar="STORE", help=STORE_HELP)
        s.add_argument("--to", type=int, help="stop at this schema version (default: the newest)")
        self._parser = parser

    def run(self, args: argparse.Namespace) -> int:
        from .stores import open_store

        sub = getattr(args, "results_command", None)
        if sub is None:
            self._parser.print_help()
            return 2
        with open_store(args.store) as store:
            return {"summary": _summary, "export": _export, "spc": _spc, "migrate": _migrate}[sub](store, args)


# ----------------------------------------------------------------------------- summary


def _pct(y) -> str:
    return "-" if y is None else f"{100 * y:.1f}%"


def _summary(store, args) -> int:
    s = store.summary(top=args.top)
    if args.json:
        print(json.dumps(s, indent=2, default=str))
        return 0
    t = s["total"]
    print(f"{s['store']}: {t['frames']} frames, yield {_pct(t['yield'])} "
          f"(pass {t['pass']}, review {t['review']}, fail {t['fail']}, error {t['error']})")
    for title, rows, key in (("runs", s["by_run"], "run_id"), ("stations", s["by_station"], "station"),
                             ("jobs", s["by_job"], "job"), ("hours (UTC)", s["by_hour"], "hour")):
        print(f"\n{title}:")
        for r in rows:
            extra = f"  {r['job']}  {r['station']}  {r['started']}" if key == "run_id" else ""
            print(f"  {str(r[key]):<24} {r['frames']:>8} frames  yield {_pct(r['yield']):>6}  "
                  f"fail {r['fail']}  review {r['review']}  error {r['error']}{extra}")
    print("\ntop failing steps:")
    for r in s["top_failing_steps"] or [{"step": "(none)", "fail": 0, "error": 0}]:
        print(f"  {r['step']:<24} fail {r['fail']}  error {r['error']}")
    print("\ntop failing measurements:")
    for r in s["top_failing_measurements"] or [{"step": "(none)", "name": "", "fail": 0, "review": 0}]:
        print(f"  {r['step'] + '.' + r['name']:<32} fail {r['fail']}  review {r['review']}")
    return 0


# ----------------------------------------------------------------------------- export

BASE = ["key", "run_id", "job", "station", "index", "path", "source", "ts", "verdict", "error", "total_ms"]


def _export(store, args) -> int:
    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise UsageError(f"--out {out}: the file must end in .csv or .parquet")
    cols = store.measurement_columns()
    names = [f"{s}.{k}" for s, k, _ in cols]
    clash = set(names) & set(BASE)
    if clash:
        raise UsageError(f"measurement columns clash with frame columns: {sorted(clash)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    n = _write_csv(store, out, names) if suffix == ".csv" else _write_parquet(store, out, cols, names)
    print(f"wrote {n} frames x {len(BASE) + len(names)} columns to {out}")
    return 0


def _cell(v):
    if v is None:
        return ""
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return v


def _write_csv(store, out: Path, names: list[str]) -> int:
    n = 0
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(BASE + names)
        for row in store.frames():
            m = row["measurements"]
            w.writerow([_cell(row[c]) for c in BASE] + [_cell(m.get(c)) for c in names])
            n += 1
    return n


def _write_parquet(store, out: Path, cols, names: list[str]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [pa.field("key", pa.string()), pa.field("run_id", pa.string()), pa.field("job", pa.string()),
              pa.field("station", pa.string()), pa.field("index", pa.int64()), pa.field("path", pa.string()),
              pa.field("source", pa.string()), pa.field("ts", pa.timestamp("us", tz="UTC")),
              pa.field("verdict", pa.string()), pa.field("error", pa.string()), pa.field("total_ms", pa.float64())]
    numeric = {f"{s}.{k}": num for s, k, num in cols}
    fields += [pa.field(c, pa.float64() if numeric[c] else pa.string()) for c in names]
    schema = pa.schema(fields)

    def conv(c, v):
        if v is None:
            return None
        if numeric.get(c):
            return float(v)
        return v if isinstance(v, str) else json.dumps(v)

    n = 0
    with pq.ParquetWriter(str(out), schema) as writer:
        chunk: list[dict[str, Any]] = []
        for row in store.frames():
            m = row["measurements"]
            d = {c: row[c] for c in BASE}
            d.update({c: conv(c, m.get(c)) for c in names})
            chunk.append(d)
            if len(chunk) >= 10000:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                n += len(chunk)
                chunk = []
        if chunk or n == 0:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            n += len(chunk)
    return n


# ----------------------------------------------------------------------------- spc


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items() if not k.startswith("_")}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def _spc(store, args) -> int:
    import numpy as np

    from host import spc

    analyse = spc.analyse

    run = args.run
    if run == "last":
        rows = store._q("SELECT run_id FROM runs ORDER BY started DESC LIMIT 1")
        run = rows[0][0] if rows else None
    ser = store.series(args.measurement, args.step, run, args.station)
    values, keys, ts = ser["values"], ser["keys"], ser["ts"]
    if args.last:
        values, keys, ts = values[-args.last:], keys[-args.last:], ts[-args.last:]
    lsl = args.lsl if args.lsl is not None else ser["lsl"]
    usl = args.usl if args.usl is not None else ser["usl"]
    try:
        res = analyse(np.asarray(values), lsl, usl, args.subgroup)
    except ValueError as exc:
        raise UsageError(f"spc {ser['step']}.{ser['name']}: {exc}") from None
    charts = res.pop("_charts")
    sub = res["subgroup"]
    for c in res["charts"]:
        for v in c["violations"]:
            first = v["index"] * sub
            v["key"] = keys[first + sub - 1] if sub > 1 else keys[first]
            v["value"] = charts[0].points[v["index"]] if c is res["charts"][0] else charts[1].points[
                v["index"] - (1 if sub == 1 else 0)]
    out = {"store": store.spec, "measurement": ser["name"], "step": ser["step"], "run": run,
           "station": args.station, "limits_from_run": ser["limits_from_run"],
           "first": _cell(ts[0]), "last": _cell(ts[-1]), **res}
    out = _clean(out)
    if args.out:
        from .charts import draw

        d = Path(args.out)
        d.mkdir(parents=True, exist_ok=True)
        stem = f"spc_{_safe(ser['step'])}_{_safe(ser['name'])}"
        png = d / f"{stem}.png"
        draw(charts, res, f"{ser['step']}.{ser['name']}", png)
        out["png"] = str(png)
        (d / f"{stem}.json").write_text(json.dumps(out, indent=2))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    _print_spc(out)
    return 0


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)


def _f(v, nd=4) -> str:
    return "-" if v is None else f"{v:.{nd}g}"


def _print_spc(o: dict[str, Any]) -> None:
    print(f"{o['step']}.{o['measurement']}: {o['n']} values, {o['chart']} chart"
          + (f" (subgroups of {o['subgroup']})" if o["subgroup"] > 1 else ""))
    print(f"  mean {_f(o['mean'], 6)}  sigma within {_f(o['sigma_within'])}  overall {_f(o['sigma_overall'])}")
    for c in o["charts"]:
        print(f"  {c['name']:<13} centre {_f(c['center'], 6)}  UCL {_f(c['ucl'], 6)}  LCL {_f(c['lcl'], 6)}  "
              f"{len(c['violations'])} rule violations")
    print(f"  spec limits LSL {_f(o['lsl'])}  USL {_f(o['usl'])}:  Cp {_f(o['cp'], 3)}  Cpk {_f(o['cpk'], 3)}  "
          f"Pp {_f(o['pp'], 3)}  Ppk {_f(o['ppk'], 3)}")
    for c in o["charts"]:
        for v in c["violations"][:20]:
            print(f"  ! {c['name']} rule {v['rule']} at #{v['index']} ({v['key']}): {v['description']}")
    if o.get("png"):
        print(f"  chart: {o['png']}")


# ----------------------------------------------------------------------------- migrate


def _migrate(store, args) -> int:
    if store.kind == "sqlite":
        if args.to is not None:
            raise UsageError(f"{store.spec}: SQLite stores have no schema versions (--to is for postgresql)")
        print(f"{store.spec}: SQLite stores are kept at the host's schema when they are opened; nothing to migrate")
        return 0
    before = store.version
    applied = store.migrate(args.to)
    if applied:
        print(f"{store.spec}: schema {before} -> {store.version} (applied {', '.join(map(str, applied))})")
    else:
        print(f"{store.spec}: schema is at version {store.version}; nothing to do")
    return 0


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - `python -m loupe_results`
    p = argparse.ArgumentParser(prog="loupe results")
    cmd = ResultsCommand()
    cmd.add_arguments(p)
    return cmd.run(p.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
