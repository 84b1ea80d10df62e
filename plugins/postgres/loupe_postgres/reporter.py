"""``postgresql://USER@HOST:PORT/DB``: the plant results store.

The per-frame path only copies a frame's small fields into a tuple and puts it on a bounded queue
(it holds no image). A writer thread commits batches (``batch`` frames or one second, whichever comes
first), each in one transaction that first deletes the batch's keys for this run, so a batch sent twice
(after a lost connection whose commit may or may not have landed) is stored once. When the server goes
away the writer reconnects with back-off for up to ``retry_s`` seconds (default 60) and re-sends the open
batch; meanwhile frames wait in the queue (``queue`` frames, default 20000; when it is full the runner
waits — nothing is dropped). If the server stays away longer, the run stops with a clear error.

Guarantees as for SQLite: ``kill -9`` loses at most the frames not yet committed, and ``loupe run
--resume`` adopts the newest run of the same recipe hash, source and station, skips its stored keys,
and so finishes with no frame lost and none duplicated.
"""
from __future__ import annotations

import json
import logging
import math
import os
import queue
import socket
import threading
import time
from datetime import datetime, timezone

from host import FrameResult, LoupeError, Reporter, UsageError

from .schema import connect, ensure_schema, parse_spec

log = logging.getLogger("loupe.postgres")

_STOP = object()


def station_name(options: dict[str, str], run) -> str:
    """``?station=`` in the spec, else ``LOUPE_STATION``, else the run's station, else the host name."""
    return (options.get("station") or os.environ.get("LOUPE_STATION") or getattr(run, "station", None)
            or socket.gethostname())


def _num(v):
    """A JSON-safe value: numpy scalars and arrays as Python values, NaN and inf as null."""
    if v is None or isinstance(v, (bool, str, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if hasattr(v, "tolist"):  # numpy scalars and arrays
        return _num(v.tolist())
    if isinstance(v, (list, tuple)):
        return [_num(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _num(x) for k, x in v.items()}
    return str(v)


def _ts(t: float | None):
    return datetime.fromtimestamp(t, timezone.utc) if t is not None else None


class PostgresReporter(Reporter):
    """Frames, step results and one row per measurement into PostgreSQL; many stations at once."""

    scheme = "postgresql"
    description = ("PostgreSQL plant store (postgresql://USER@HOST:PORT/DB; password from PGPASSWORD/.pgpass; "
                   "?station=NAME; batched, resumable, reconnects)")
    batch_frames = 200
    batch_seconds = 1.0
    queue_frames = 20000
    retry_s = 60.0

    def open(self) -> None:
        try:
            import psycopg  # noqa: F401  (fail here, not in the writer thread, when it is missing)
        except ImportError:
            raise UsageError("postgresql reports need psycopg: pip install loupe-postgres") from None

        self._spec = spec = parse_spec(self.target, self.scheme)
        opts = spec.options
        try:
            self.batch_frames = int(opts.get("batch", self.batch_frames))
            self.queue_frames = int(opts.get("queue", self.queue_frames))
            self.retry_s = float(opts.get("retry_s", self.retry_s))
        except ValueError as exc:
            raise UsageError(f"report {spec.shown}: bad option: {exc}") from None
        self.station = station_name(opts, self.run)
        self._limits = {s.name: dict(s.limits) for s in self.run.recipe.inspect}
        conn = connect(spec)
        try:
            ensure_schema(conn, spec)
            run = self.run
            self._done: set[str] = set()
            with conn.transaction(), conn.cursor() as cur:
                if run.resume:
                    cur.execute("SELECT run_id FROM runs WHERE recipe_hash=%s AND source=%s AND station=%s "
                                "ORDER BY started DESC LIMIT 1", (run.recipe_hash, run.source, self.station))
                    row = cur.fetchone()
                    if row:
                        run.run_id = row[0]  # continue the interrupted run: same id, no duplicate rows
                        cur.execute("SELECT key FROM frames WHERE run_id=%s", (run.run_id,))
                        self._done = {k for (k,) in cur}
                from psycopg.types.json import Jsonb

                cur.execute(
                    "INSERT INTO runs(run_id, station, recipe_name, recipe_hash, recipe, source, started, plugins) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (run_id) DO NOTHING",
                    (run.run_id, self.station, run.recipe.name, run.recipe_hash, Jsonb(run.recipe.to_dict()),
                     run.source, _ts(run.started), Jsonb(run.plugins)))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._q: queue.Queue = queue.Queue(maxsize=self.queue_frames)
        self._error: BaseException | None = None
        self.stored = 0
        self.reconnects = 0
        self.waited = 0  # frames that found the queue full (the runner waited for the writer)
        self._thread = threading.Thread(target=self._writer, name="loupe-postgres-writer", daemon=True)
        self._thread.start()

    def done_keys(self) -> set[str]:
        return set(self._done)

    # ----------------------------------------------------------------- per frame

    def write(self, result: FrameResult) -> None:
        if self._error is not None:
            raise self._error
        item = (result.key, result.index, result.path, result.source, result.timestamp, result.verdict,
                result.error, result.timings,
                [(r.step, r.tool, r.verdict, r.measurements, r.failures, r.error, r.ms) for r in result.results])
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self.waited += 1
            while True:
                try:
                    self._q.put(item, timeout=0.5)
                    return
                except queue.Full:
                    if self._error is not None:
                        raise self._error from None

    # ----------------------------------------------------------------- writer thread

    def _writer(self) -> None:
        batch: list[tuple] = []
        first = 0.0
        try:
            while True:
                timeout = self.batch_seconds - (time.monotonic() - first) if batch else None
                try:
                    item = self._q.get(timeout=max(timeout, 0.001) if timeout is not None else None)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    if batch:
                        self._flush(batch)
                    self._finish()
                    return
                if item is not None:
                    if not batch:
                        first = time.monotonic()
                    batch.append(item)
                if batch and (len(batch) >= self.batch_frames or time.monotonic() - first >= self.batch_seconds):
                    self._flush(batch)
                    batch = []
        except BaseException as exc:  # surfaced to the runner by write() / close()
            if not isinstance(exc, LoupeError):
                log.exception("the PostgreSQL writer failed")
                exc = LoupeError(f"{self._spec.shown}: writing results failed: {type(exc).__name__}: {exc}")
            self._error = exc
            # unblock a runner waiting on a full queue; those frames are reported as not stored at close
            self.lost = self._q.qsize() + len(batch)

    def _rows(self, batch):
        """The batch as column arrays for ``frames`` and row lists for ``results`` and ``measurements``.

        A key that occurs twice in one batch (a file delivered again) keeps its newest result.
        """
        dumps = json.dumps
        newest = {item[0]: item for item in batch}
        cols: list[list] = [[] for _ in range(10)]
        res_rows: list[tuple] = []  # (key, step, tool, verdict, measurements, failures, error, ms)
        m_rows: list[tuple] = []  # (key, ts, step, name, value, lo, hi, verdict)
        for key, idx, path, source, ts, verdict, error, timings, steps in newest.values():
            tstamp = _ts(ts)
            full_steps = []
            for step, tool, sv, ms_dict, failures, serr, ms in steps:
                clean = {k: _num(v) for k, v in ms_dict.items()}
                full_steps.append({"step": step, "tool": tool, "verdict": sv, "measurements": clean,
                                   "failures": failures, "error": serr, "ms": ms})
                res_rows.append((key, step, tool, sv, dumps(clean), dumps(failures) if failures else None, serr, ms))
                limits = self._limits.get(step, {})
                for name, v in clean.items():
                    if isinstance(v, bool) or not isinstance(v, (int, float)):
                        continue
                    lim = limits.get(name)
                    if lim is None:
                        m_rows.append((key, tstamp, step, name, float(v), None, None, None))
                    else:
                        m_rows.append((key, tstamp, step, name, float(v), lim.min, lim.max, lim.check(ms_dict[name])))
            full = {"key": key, "index": idx, "source": source, "path": path, "timestamp": ts, "verdict": verdict,
                    "error": error, "timings": timings, "results": full_steps}
            for col, v in zip(cols, (key, idx, path, source, tstamp, verdict, error, sum(timings.values()),
                                     dumps(timings), dumps(full))):
                col.append(v)
        return cols, res_rows, m_rows

    def _flush(self, batch: list[tuple]) -> None:
        import psycopg

        rows = self._rows(batch)
        n = len(rows[0][0])
        deadline = time.monotonic() + self.retry_s
        delay = 0.2
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self._spec, timeout=5)
                    self.reconnects += 1
                self._send(*rows)
                self.stored += n
                return
            except (psycopg.OperationalError, UsageError) as exc:
                # connection lost (server restart, network): reconnect and re-send the whole batch
                if self._conn is not None:
                    try:
                        self._conn.close()
                    except Exception:
                        pass
                    self._conn = None
                if time.monotonic() > deadline:
                    raise LoupeError(f"{self._spec.shown}: the server was unreachable for {self.retry_s:.0f} s; "
                                     f"{n} frames of the open batch were not stored ({exc})") from None
                log.warning("PostgreSQL connection lost (%s); retrying", " ".join(str(exc).split()))
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _send(self, cols, res_rows, m_rows) -> None:
        conn = self._conn
        run_id, station = self.run.run_id, self.station
        with conn.transaction(), conn.cursor() as cur:
            # a batch re-sent after a lost commit, or a key stored before in this run: keep the newest
            cur.execute("DELETE FROM frames WHERE run_id=%s AND key = ANY(%b)", (run_id, cols[0]))
            cur.execute(
                "INSERT INTO frames(run_id, station, recipe_hash, key, idx, path, source, ts, verdict, error, "
                "total_ms, timings, result) SELECT %s, %s, %s, k, i, p, s, t, v, e, ms, tj::jsonb, rj::jsonb "
                "FROM unnest(%b::text[], %b::int[], %b::text[], %b::text[], %b::timestamptz[], %b::text[], "
                "%b::text[], %b::float8[], %b::text[], %b::text[]) AS u(k, i, p, s, t, v, e, ms, tj, rj) "
                "RETURNING key, id", (run_id, station, self.run.recipe_hash, *cols))  # %b: binary arrays, no escaping
            ids = dict(cur.fetchall())
            with cur.copy("COPY results(frame_id, step, tool, verdict, measurements, failures, error, ms) "
                          "FROM STDIN") as cp:
                for key, *rest in res_rows:
                    cp.write_row((ids[key], *rest))
            with cur.copy("COPY measurements(frame_id, run_id, station, ts, step, name, value, lo, hi, verdict) "
                          "FROM STDIN") as cp:
                for key, ts, *rest in m_rows:
                    cp.write_row((ids[key], run_id, station, ts, *rest))

    def _finish(self) -> None:
        from psycopg.types.json import Jsonb

        def send():
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.execute("SELECT verdict, COUNT(*) FROM frames WHERE run_id=%s GROUP BY verdict",
                            (self.run.run_id,))
                counts = {v: n for v, n in cur.fetchall()}
                cur.execute("UPDATE runs SET ended=now(), counts=%s WHERE run_id=%s",
                            (Jsonb(counts), self.run.run_id))

        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self._spec)
            send()
        except (psycopg.OperationalError, UsageError) as exc:
            log.warning("could not record the run's end: %s", exc)

    # ----------------------------------------------------------------- close

    def close(self) -> None:
        thread = getattr(self, "_thread", None)
        if thread is None:
            return
        self._thread = None
        while self._error is None:
            try:
                self._q.put(_STOP, timeout=0.5)
                break
            except queue.Full:
                pass
        thread.join()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._error is not None:
            raise self._error
