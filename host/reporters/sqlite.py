"""The embedded results store: SQLite in WAL mode, committed in small batches.

Tables::

    runs(run_id, recipe_name, recipe_hash, recipe, source, started, ended,
         plugins, counts)
    frames(id, run_id, recipe_hash, key, idx, path, source, ts, verdict, error,
           total_ms, timings)                      UNIQUE(run_id, key)
    results(frame_id, step, tool, verdict, measurements, failures, error, ms)

A crash (even ``kill -9``) loses at most the uncommitted batch; ``loupe run
--resume`` adopts the newest run of the same recipe hash and source, skips the
keys it stored, and so finishes with no lost and no duplicated frame.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from ..core.contracts import Reporter
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

    def open(self) -> None:
        path = Path(self.target)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._done: set[str] = set()
        run = self.run
        if run.resume:
            row = self._db.execute(
                "SELECT run_id FROM runs WHERE recipe_hash=? AND source=? ORDER BY started DESC LIMIT 1",
                (run.recipe_hash, run.source)).fetchone()
            if row:
                run.run_id = row[0]  # continue the interrupted run: same id, no duplicate rows
                self._done = {k for (k,) in self._db.execute("SELECT key FROM frames WHERE run_id=?",
                                                              (run.run_id,))}
        self._db.execute(
            "INSERT OR IGNORE INTO runs(run_id, recipe_name, recipe_hash, recipe, source, started, plugins) "
            "VALUES (?,?,?,?,?,?,?)",
            (run.run_id, run.recipe.name, run.recipe_hash, json.dumps(run.recipe.to_dict()), run.source,
             run.started, json.dumps(run.plugins)))
        self._pending = 0
        self._last_commit = time.monotonic()
        self._db.execute("BEGIN")

    def done_keys(self) -> set[str]:
        return set(self._done)

    def write(self, result: FrameResult) -> None:
        row = (self.run.run_id, result.recipe_hash, result.key, result.index, result.path, result.source,
               result.timestamp, result.verdict, result.error, result.total_ms, json.dumps(result.timings))
        try:
            fid = self._db.execute(_INSERT_FRAME, row).lastrowid
        except sqlite3.IntegrityError:  # the same key twice in one run (a re-delivered file): keep the newest
            self._db.execute("DELETE FROM results WHERE frame_id IN (SELECT id FROM frames WHERE run_id=? AND key=?)",
                             (self.run.run_id, result.key))
            self._db.execute("DELETE FROM frames WHERE run_id=? AND key=?", (self.run.run_id, result.key))
            fid = self._db.execute(_INSERT_FRAME, row).lastrowid
        if result.results:
            self._db.executemany(
                "INSERT INTO results(frame_id, step, tool, verdict, measurements, failures, error, ms) "
                "VALUES (?,?,?,?,?,?,?,?)",
                [(fid, r.step, r.tool, r.verdict, json.dumps({k: jsonable(v) for k, v in r.measurements.items()}),
                  json.dumps(r.failures) if r.failures else None, r.error, r.ms) for r in result.results])
        self._pending += 1
        now = time.monotonic()
        if self._pending >= self.batch_frames or now - self._last_commit >= self.batch_seconds:
            self._commit()

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
            db.execute("COMMIT")
            counts = dict(db.execute("SELECT verdict, COUNT(*) FROM frames WHERE run_id=? GROUP BY verdict",
                                     (self.run.run_id,)).fetchall())
            db.execute("UPDATE runs SET ended=?, counts=? WHERE run_id=?",
                       (time.time(), json.dumps(counts), self.run.run_id))
        finally:
            db.close()
