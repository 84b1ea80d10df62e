"""The embedded results store: SQLite in WAL mode, committed in small batches.

Tables::

    runs(run_id, recipe_name, recipe_hash, recipe, source, started, ended,
         plugins, counts)
    frames(id, run_id, recipe_hash, key, idx, path, source, ts, verdict, error,
           total_ms, timings)                      UNIQUE(run_id, key)
    results(frame_id, step, tool, verdict, measurements, failures, error, ms)

A crash (even ``kill -9``) loses at most the uncommitted batch; ``loupe run
--resume`` adopts the newest run of the same recipe hash and source, skips the
keys it stored, and so finishes with no lost and no duplicated frame. A frame's
row and its results are written together (one savepoint inside the batch's
transaction), so no frame is ever stored without its results.

Options, after the path: ``sqlite:results.db?sync=full&timeout=30``.

* ``sync``: ``normal`` (default) is WAL with ``synchronous=NORMAL``: a crash of
  the program loses nothing committed, but a power loss or OS crash can lose the
  last committed batches (at most ``batch_seconds`` of frames). ``full``
  (``synchronous=FULL``) syncs every commit to disk: nothing committed is lost even
  on power loss, at the cost of one fsync per batch.
* ``timeout``: seconds to wait for another process that holds the database's write
  lock (default 10); past it the run stops with exit 2 and writes nothing.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from urllib.parse import parse_qsl

from ..core.contracts import Reporter
from ..core.errors import UsageError
from ..core.types import FrameResult, jsonable

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs(
    run_id TEXT PRIMARY KEY, recipe_name TEXT, recipe_hash TEXT NOT NULL, recipe TEXT, source TEXT,
    started REAL, ended REAL, plugins TEXT, counts TEXT);
CREATE TABLE IF NOT EXISTS frames(
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(run_id), recipe_hash TEXT NOT NULL,
    key TEXT NOT NULL, idx INTEGER, path TEXT, source TEXT, ts REAL, verdict TEXT NOT NULL, error TEXT,
    total_ms REAL, timings TEXT, UNIQUE(run_id, key));
CREATE TABLE IF NOT EXISTS results(
    frame_id INTEGER NOT NULL REFERENCES frames(id), step TEXT NOT NULL, tool TEXT NOT NULL,
    verdict TEXT NOT NULL, measurements TEXT, failures TEXT, error TEXT, ms REAL);
CREATE INDEX IF NOT EXISTS results_frame ON results(frame_id);
CREATE INDEX IF NOT EXISTS frames_verdict ON frames(run_id, verdict);
"""

_INSERT_FRAME = ("INSERT INTO frames(run_id, recipe_hash, key, idx, path, source, ts, verdict, error, total_ms, "
                 "timings) VALUES (?,?,?,?,?,?,?,?,?,?,?)")


class SqliteReporter(Reporter):
    """The default results store: a row per frame and per tool result."""

    scheme = "sqlite"
    description = "SQLite results store (WAL, batched commits, resumable)"
    batch_frames = 50
    batch_seconds = 1.0

    def __init__(self, target: str, run) -> None:
        path, _, query = target.partition("?")
        super().__init__(path, run)
        opts = dict(parse_qsl(query, keep_blank_values=True))
        unknown = set(opts) - {"sync", "timeout"}
        if unknown:
            raise UsageError(f"report sqlite:{target}: unknown option(s) {', '.join(sorted(unknown))}; "
                             f"known: sync=normal|full, timeout=SECONDS")
        self.sync = opts.get("sync", "normal").lower()
        if self.sync not in ("normal", "full"):
            raise UsageError(f"report sqlite:{target}: sync={self.sync!r}: expected normal or full")
        try:
            self.timeout = float(opts.get("timeout", 10))
        except ValueError:
            raise UsageError(f"report sqlite:{target}: timeout={opts['timeout']!r}: expected seconds") from None

    def open(self) -> None:
        path = Path(self.target)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._broken = False
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=self.timeout)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.sync.upper()}")
            # the schema, the resume look-up and the run row in one transaction: a second run that
            # cannot get the write lock within the timeout leaves nothing behind
            db.execute("BEGIN IMMEDIATE")
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            self._done: set[str] = set()
            run = self.run
            if run.resume:
                row = db.execute(
                    "SELECT run_id FROM runs WHERE recipe_hash=? AND source=? ORDER BY started DESC LIMIT 1",
                    (run.recipe_hash, run.source)).fetchone()
                if row:
                    run.run_id = row[0]  # continue the interrupted run: same id, no duplicate rows
                    self._done = {k for (k,) in db.execute("SELECT key FROM frames WHERE run_id=?",
                                                           (run.run_id,))}
            db.execute(
                "INSERT OR IGNORE INTO runs(run_id, recipe_name, recipe_hash, recipe, source, started, plugins) "
                "VALUES (?,?,?,?,?,?,?)",
                (run.run_id, run.recipe.name, run.recipe_hash, json.dumps(run.recipe.to_dict()), run.source,
                 run.started, json.dumps(run.plugins)))
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            db.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise sqlite3.OperationalError(
                    f"{path} is locked by another process (waited {self.timeout:g} s; "
                    f"raise it with sqlite:{path}?timeout=SECONDS)") from None
            raise
        except BaseException:
            db.close()
            raise
        self._db = db
        self._pending = 0
        self._last_commit = time.monotonic()
        self._db.execute("BEGIN")

    def done_keys(self) -> set[str]:
        return set(self._done)

    def write(self, result: FrameResult) -> None:
        db = self._db
        row = (self.run.run_id, result.recipe_hash, result.key, result.index, result.path, result.source,
               result.timestamp, result.verdict, result.error, result.total_ms, json.dumps(result.timings))
        # serialised before anything is written: a value that cannot be stored leaves no half frame
        rows = [(r.step, r.tool, r.verdict, json.dumps({k: jsonable(v) for k, v in r.measurements.items()},
                                                       default=str),
                 json.dumps(r.failures) if r.failures else None, r.error, r.ms) for r in result.results]
        try:
            db.execute("SAVEPOINT frame")
            try:
                try:
                    fid = db.execute(_INSERT_FRAME, row).lastrowid
                except sqlite3.IntegrityError:  # the same key twice in one run (re-delivered file): keep the newest
                    db.execute("DELETE FROM results WHERE frame_id IN (SELECT id FROM frames WHERE run_id=? AND "
                               "key=?)", (self.run.run_id, result.key))
                    db.execute("DELETE FROM frames WHERE run_id=? AND key=?", (self.run.run_id, result.key))
                    fid = db.execute(_INSERT_FRAME, row).lastrowid
                if rows:
                    db.executemany(
                        "INSERT INTO results(frame_id, step, tool, verdict, measurements, failures, error, ms) "
                        "VALUES (?,?,?,?,?,?,?,?)", [(fid, *r) for r in rows])
            except BaseException:
                try:  # (a full disk may already have rolled the whole transaction back)
                    db.execute("ROLLBACK TO frame")
                    db.execute("RELEASE frame")
                except sqlite3.Error:
                    pass
                raise
            db.execute("RELEASE frame")
            self._pending += 1
            now = time.monotonic()
            if self._pending >= self.batch_frames or now - self._last_commit >= self.batch_seconds:
                self._commit()
        except sqlite3.OperationalError:
            self._broken = True
            raise

    def flush(self) -> None:
        if getattr(self, "_db", None) is not None and self._pending:
            self._commit()

    def _commit(self) -> None:
        self._db.execute("COMMIT")
        self._pending = 0
        self._last_commit = time.monotonic()
        self._db.execute("BEGIN")

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is None:
            return
        self._db = None
        try:
            if self._broken:  # the store refused a write: keep what was committed, nothing half-done
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                return
            db.execute("COMMIT")
            counts = dict(db.execute("SELECT verdict, COUNT(*) FROM frames WHERE run_id=? GROUP BY verdict",
                                     (self.run.run_id,)).fetchall())
            db.execute("UPDATE runs SET ended=?, counts=? WHERE run_id=?",
                       (time.time(), json.dumps(counts), self.run.run_id))
        finally:
            db.close()
