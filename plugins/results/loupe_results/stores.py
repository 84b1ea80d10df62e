"""Read-only views of a results store: ``sqlite:PATH`` (the host's schema, read as it is) or
``postgresql://USER@HOST:PORT/DB`` (loupe-postgres's schema).

Both give the same answers: a summary (yield per run, station, job and hour, the top failing steps and
measurements), frames for export (one row per frame, measurements flattened to ``step.name`` columns),
and a measurement series for SPC. The aggregates run in the database (one indexed pass each), so a
summary of a million frames takes seconds.
"""
from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from host import UsageError

VERDICTS = ("pass", "review", "fail", "error")


def open_store(spec: str) -> "Store":
    if ":" not in spec:
        raise UsageError(f"store {spec!r}: expected sqlite:PATH or postgresql://USER@HOST:PORT/DB")
    scheme, target = spec.split(":", 1)
    scheme = scheme.strip().lower()
    if scheme == "sqlite":
        return SqliteStore(target)
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(target)
    raise UsageError(f"store {spec!r}: unknown kind {scheme!r} (sqlite:PATH or postgresql://USER@HOST:PORT/DB)")


def _failure_name(text: str) -> tuple[str, str]:
    """A stored failure reason -> (measurement, verdict): ``'area 12.5 > max 10 (review)'`` -> ('area', 'review'),
    ``'count 11 ≠ 12'`` -> ('count', 'fail'), ``'area: not measured'`` -> ('area', 'fail'); the older
    ``'area=12.5 fail'`` form too."""
    name = re.split(r"[\s:=]", text.strip(), maxsplit=1)[0]
    review = text.rstrip().endswith("(review)") or text.rstrip().endswith("=review") or text.rstrip().endswith(" review")
    return name, "review" if review else "fail"


def _yield_rows(rows, keys) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        d = dict(zip(keys, row))
        n = int(d["frames"] or 0)
        for v in VERDICTS:
            d[v] = int(d[v] or 0)
        d["yield"] = round(d["pass"] / n, 6) if n else None
        out.append(d)
    return out


def _rollup(groups, runs: dict[str, tuple]) -> dict[str, Any]:
    """Totals and yields per run, station, job and hour from ``(run_id, station, hour, verdict, n)`` groups.

    One grouped scan of ``frames`` gives every breakdown (runs x stations x hours x verdicts is small).
    ``runs`` maps run_id -> (job, station, started).
    """
    def blank():
        return {"frames": 0, **{v: 0 for v in VERDICTS}}

    total, by_run, by_station, by_job, by_hour = blank(), {}, {}, {}, {}
    for run_id, station, hour, verdict, n in groups:
        n = int(n)
        job, run_station, started = runs.get(run_id, (None, None, None))
        station = station if station is not None else (run_station or "-")
        for table, key in ((None, None), (by_run, run_id), (by_station, station), (by_job, job),
                           (by_hour, hour)):
            d = total if table is None else table.setdefault(key, blank())
            d["frames"] += n
            if verdict in d:
                d[verdict] += n

    def rows(table, name, extra=None):
        out = []
        for key in sorted(table, key=lambda k: (extra(k) if extra else k) or ""):
            d = {name: key}
            if name == "run_id":
                job, st, started = runs.get(key, (None, None, None))
                d.update({"job": job, "station": st, "started": _iso(started)})
            d.update(table[key])
            d["yield"] = round(d["pass"] / d["frames"], 6) if d["frames"] else None
            out.append(d)
        return out

    total["yield"] = round(total["pass"] / total["frames"], 6) if total["frames"] else None
    return {"total": total,
            "by_run": rows(by_run, "run_id", lambda k: str(runs.get(k, (None, None, ""))[2] or "")),
            "by_station": rows(by_station, "station"), "by_job": rows(by_job, "job"), "by_hour": rows(by_hour, "hour")}


class Store:
    kind = ""
    spec = ""

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------- subclass API
    def _q(self, sql: str, params: tuple = ()) -> list[tuple]:
        raise NotImplementedError

    def summary(self, top: int = 10) -> dict[str, Any]:
        raise NotImplementedError

    def measurement_columns(self) -> list[tuple[str, str, bool]]:
        raise NotImplementedError

    def frames(self) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def series(self, name: str, step: str | None, run: str | None, station: str | None) -> dict[str, Any]:
        raise NotImplementedError

    # ---------------------------------------------------------- shared
    def _limits(self, run_id: str, step: str, name: str) -> tuple[float | None, float | None]:
        rows = self._q(self._sql_recipe, (run_id,))
        if not rows or rows[0][0] is None:
            return None, None
        recipe = rows[0][0] if isinstance(rows[0][0], dict) else json.loads(rows[0][0])
        for s in recipe.get("inspect", []):
            if s.get("name") == step:
                lim = (s.get("limits") or {}).get(name) or {}
                return lim.get("min"), lim.get("max")
        return None, None

    def _pick_step(self, name: str, step: str | None, steps: list[str]) -> str:
        if step is not None:
            if step not in steps:
                raise UsageError(f"{self.spec}: no measurement {name!r} in step {step!r}"
                                 + (f" (it is in: {', '.join(steps)})" if steps else ""))
            return step
        if not steps:
            raise UsageError(f"{self.spec}: no stored measurement is called {name!r}")
        if len(steps) > 1:
            raise UsageError(f"{self.spec}: measurement {name!r} is in several steps ({', '.join(steps)}): "
                             f"choose one with --step")
        return steps[0]


class SqliteStore(Store):
    """The host's SQLite store (host/reporters/sqlite.py), read with SQL and its JSON functions."""

    kind = "sqlite"
    _sql_recipe = "SELECT recipe FROM runs WHERE run_id=?"

    def __init__(self, target: str):
        path = Path(target).expanduser()
        self.spec = f"sqlite:{target}"
        if not path.is_file():
            raise UsageError(f"{self.spec}: no such file")
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"{self.spec}: not a SQLite database ({exc})") from None
        if not {"runs", "frames", "results"} <= tables:
            raise UsageError(f"{self.spec}: not a Loupe results store (no runs/frames/results tables)")
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(frames)")}
        rcols = {r[1] for r in self._db.execute("PRAGMA table_info(runs)")}
        # a station column, if a later host schema adds one; else every frame is from station '-'
        self._station = "f.station" if "station" in cols else ("ru.station" if "station" in rcols else "'-'")

    def _q(self, sql, params=()):
        return self._db.execute(sql, params).fetchall()

    def summary(self, top: int = 10) -> dict[str, Any]:
        st = "f.station" if self._station == "f.station" else "NULL"  # per frame, if the schema has it
        run_st = "ru.station" if self._station == "ru.station" else "NULL"  # else per run, else '-'
        runs = {r: (job, rst, started) for r, job, rst, started in self._q(
            f"SELECT ru.run_id, ru.recipe_name, {run_st}, ru.started FROM runs ru")}
        groups = self._q(f"SELECT f.run_id, {st}, strftime('%Y-%m-%dT%H:00Z', f.ts, 'unixepoch'), f.verdict, COUNT(*) "
                         f"FROM frames f GROUP BY 1, 2, 3, 4")
        out = {"store": self.spec, **_rollup(groups, runs)}
        steps: Counter = Counter()
        errors: Counter = Counter()
        meas: Counter = Counter()
        review: Counter = Counter()
        # one pass over the step results that did not pass
        for step, verdict, failures in self._q("SELECT step, verdict, failures FROM results WHERE verdict <> 'pass'"):
            if verdict == "fail":
                steps[step] += 1
            elif verdict == "error":
                errors[step] += 1
            for text in json.loads(failures) if failures else ():
                name, v = _failure_name(str(text))
                (review if v == "review" else meas)[(step, name)] += 1
        out["top_failing_steps"] = [{"step": s_, "fail": steps[s_], "error": errors[s_]} for s_ in sorted(
            set(steps) | set(errors), key=lambda k: (-(steps[k] + errors[k]), k))[:top]]
        out["top_failing_measurements"] = [
            {"step": s_, "name": n, "fail": meas[(s_, n)], "review": review[(s_, n)]}
            for (s_, n) in sorted(set(meas) | set(review), key=lambda k: (-meas[k], -review[k], k))[:top]]
        return out

    def measurement_columns(self):
        cols: dict[tuple[str, str], set[str]] = {}
        for step, key, typ in self._q("SELECT DISTINCT r.step, j.key, j.type FROM results r, "
                                      "json_each(r.measurements) j"):
            cols.setdefault((step, key), set()).add(typ)
        numeric = {"integer", "real", "true", "false", "null"}
        return [(s, k, t <= numeric) for (s, k), t in sorted(cols.items())]

    def frames(self):
        st = self._station
        cur = self._db.execute(
            f"SELECT f.id, f.run_id, ru.recipe_name, {st}, f.key, f.idx, f.path, f.source, f.ts, f.verdict, "
            f"f.error, f.total_ms, r.step, r.measurements FROM frames f JOIN runs ru ON ru.run_id=f.run_id "
            f"LEFT JOIN results r ON r.frame_id=f.id ORDER BY f.id")
        yield from _group_frames(cur, lambda ts: _utc(ts), lambda m: json.loads(m) if m else {})

    def series(self, name, step, run, station):
        path = "$." + json.dumps(name)
        steps = [s for (s,) in self._q("SELECT DISTINCT step FROM results WHERE json_extract(measurements, ?) "
                                       "IS NOT NULL ORDER BY step", (path,))]
        step = self._pick_step(name, step, steps)
        where, params = ["r.step=?", "json_type(r.measurements, ?) IN ('integer','real')"], [step, path]
        if run:
            where.append("f.run_id=?")
            params.append(run)
        if station:
            where.append(f"{self._station}=?")
            params.append(station)
        rows = self._q(f"SELECT f.ts, f.key, f.run_id, json_extract(r.measurements, ?) FROM results r "
                       f"JOIN frames f ON f.id=r.frame_id JOIN runs ru ON ru.run_id=f.run_id "
                       f"WHERE {' AND '.join(where)} ORDER BY f.ts, f.id", (path, *params))
        return _series(self, name, step, rows)


def _series(store: Store, name: str, step: str, rows) -> dict[str, Any]:
    if not rows:
        raise UsageError(f"{store.spec}: no numeric values of {step}.{name} match")
    last_run = rows[-1][2]
    lsl, usl = store._limits(last_run, step, name)
    return {"name": name, "step": step, "ts": [_utc(r[0]) if not isinstance(r[0], datetime) else r[0] for r in rows],
            "keys": [r[1] for r in rows], "runs": [r[2] for r in rows], "values": [float(r[3]) for r in rows],
            "lsl": lsl, "usl": usl, "limits_from_run": last_run}


def _utc(ts) -> datetime | None:
    if ts is None:
        return None
    if isinstance(ts, datetime):
        return ts
    return datetime.fromtimestamp(float(ts), timezone.utc)


def _iso(ts) -> str | None:
    d = _utc(ts)
    return d.isoformat() if d is not None else None


def _group_frames(cur, conv_ts, conv_meas) -> Iterator[dict[str, Any]]:
    cur_id, row = None, None
    for fid, run_id, job, station, key, idx, path, source, ts, verdict, error, total_ms, step, meas in cur:
        if fid != cur_id:
            if row is not None:
                yield row
            cur_id = fid
            row = {"run_id": run_id, "job": job, "station": station, "key": key, "index": idx, "path": path,
                   "source": source, "ts": conv_ts(ts), "verdict": verdict, "error": error, "total_ms": total_ms,
                   "measurements": {}}
        if step is not None:
            for k, v in conv_meas(meas).items():
                row["measurements"][f"{step}.{k}"] = v
    if row is not None:
        yield row


class PostgresStore(Store):
    """loupe-postgres's schema; needs the loupe-postgres distribution (psycopg)."""

    kind = "postgresql"
    _sql_recipe = "SELECT recipe FROM runs WHERE run_id=%s"

    def __init__(self, target: str):
        try:
            from loupe_postgres.schema import LATEST, connect, current_version, parse_spec
        except ImportError:
            raise UsageError("postgresql stores need the loupe-postgres plugin (pip install loupe-postgres)") \
                from None
        self._pgspec = parse_spec(target)
        self.spec = self._pgspec.shown
        self._db = connect(self._pgspec, autocommit=True)
        self.version = current_version(self._db)
        self.latest = LATEST

    def _check(self) -> None:
        if self.version == 0:
            raise UsageError(f"{self.spec}: not a Loupe results store (no loupe_schema table)")
        if self.version < self.latest:
            raise UsageError(f"{self.spec}: the schema is version {self.version}; run 'loupe results migrate "
                             f"{self.spec}' first (the newest is {self.latest})")

    def _q(self, sql, params=()):
        with self._db.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def migrate(self, to: int | None = None) -> list[int]:
        from loupe_postgres.schema import current_version, migrate

        self._db.autocommit = False
        try:
            applied = migrate(self._db, to)
        finally:
            self._db.autocommit = True
        self.version = current_version(self._db)
        return applied

    def summary(self, top: int = 10) -> dict[str, Any]:
        self._check()
        runs = {r: (job, st, started) for r, job, st, started in self._q(
            "SELECT run_id, recipe_name, station, started FROM runs")}
        groups = self._q("SELECT f.run_id, f.station, to_char(date_trunc('hour', f.ts AT TIME ZONE 'UTC'), "
                         "'YYYY-MM-DD\"T\"HH24:00\"Z\"'), f.verdict, COUNT(*) FROM frames f GROUP BY 1, 2, 3, 4")
        out = {"store": self.spec, **_rollup(groups, runs)}
        out["top_failing_steps"] = [{"step": s, "fail": int(nf), "error": int(ne)} for s, nf, ne in self._q(
            "SELECT step, COUNT(*) FILTER (WHERE verdict='fail'), COUNT(*) FILTER (WHERE verdict='error') "
            "FROM results WHERE verdict IN ('fail','error') GROUP BY step ORDER BY COUNT(*) DESC, step LIMIT %s",
            (top,))]
        out["top_failing_measurements"] = [
            {"step": s, "name": n, "fail": int(nf), "review": int(nr)} for s, n, nf, nr in self._q(
                "SELECT step, name, COUNT(*) FILTER (WHERE verdict='fail'), COUNT(*) FILTER (WHERE verdict='review') "
                "FROM measurements WHERE verdict IN ('fail','review') GROUP BY step, name "
                "ORDER BY 3 DESC, 4 DESC, 1, 2 LIMIT %s", (top,))]
        return out

    def measurement_columns(self):
        self._check()
        cols: dict[tuple[str, str], set[str]] = {}
        for step, key, typ in self._q("SELECT DISTINCT r.step, m.key, jsonb_typeof(m.value) FROM results r, "
                                      "jsonb_each(r.measurements) m"):
            cols.setdefault((step, key), set()).add(typ)
        return [(s, k, t <= {"number", "boolean", "null"}) for (s, k), t in sorted(cols.items())]

    def frames(self):
        self._check()
        self._db.autocommit = False
        try:
            with self._db.cursor(name="loupe_export") as cur:  # server-side: streams, bounded memory
                cur.itersize = 5000
                cur.execute("SELECT f.id, f.run_id, ru.recipe_name, f.station, f.key, f.idx, f.path, f.source, "
                            "f.ts, f.verdict, f.error, f.total_ms, r.step, r.measurements FROM frames f "
                            "JOIN runs ru ON ru.run_id=f.run_id LEFT JOIN results r ON r.frame_id=f.id ORDER BY f.id")
                yield from _group_frames(cur, lambda ts: ts, lambda m: m or {})
            self._db.commit()
        finally:
            self._db.autocommit = True

    def series(self, name, step, run, station):
        self._check()
        steps = [s for (s,) in self._q("SELECT DISTINCT step FROM measurements WHERE name=%s ORDER BY step", (name,))]
        step = self._pick_step(name, step, steps)
        where, params = ["m.name=%s", "m.step=%s", "m.value IS NOT NULL"], [name, step]
        if run:
            where.append("m.run_id=%s")
            params.append(run)
        if station:
            where.append("m.station=%s")
            params.append(station)
        rows = self._q(f"SELECT m.ts, f.key, m.run_id, m.value FROM measurements m JOIN frames f ON f.id=m.frame_id "
                       f"WHERE {' AND '.join(where)} ORDER BY m.ts, m.frame_id", tuple(params))
        return _series(self, name, step, rows)
