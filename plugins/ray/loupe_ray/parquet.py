"""``parquet:DIR``: results of archive-sized runs as a folder of Parquet files.

One file per flush (``part-<run id>-<n>.parquet``, about ``ROWS_PER_FILE`` frames each), so
memory stays bounded and an interrupted run keeps what was flushed. One row per frame:

``run_id, recipe_hash, source, key, index, path, timestamp, verdict, error, total_ms``,
``timings`` (JSON) and ``results`` (JSON: each step's verdict, measurements, failures; no overlays).

The folder reads as one table with ``pyarrow.dataset`` / pandas / DuckDB / Spark / Ray Data.
``--resume`` skips the keys already stored for the same recipe hash and source.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from host import FrameResult, Reporter

ROWS_PER_FILE = 50_000


def _schema():
    import pyarrow as pa

    return pa.schema([
        ("run_id", pa.string()), ("recipe_hash", pa.string()), ("source", pa.string()), ("key", pa.string()),
        ("index", pa.int64()), ("path", pa.string()), ("timestamp", pa.float64()), ("verdict", pa.string()),
        ("error", pa.string()), ("total_ms", pa.float64()), ("timings", pa.string()), ("results", pa.string())])


def _plain(v):
    """numpy scalars and arrays as JSON values; NaN and inf as null (as the host's JSON reporters write them)."""
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _step(r) -> dict:
    """A step's result without its overlays (an archive keeps the numbers; drawings cost ~10x the bytes)."""
    return {"step": r.step, "tool": r.tool, "verdict": r.verdict,
            "measurements": {k: _plain(v) for k, v in r.measurements.items()}, "failures": r.failures,
            "ms": round(r.ms, 4), "error": r.error}


class ParquetReporter(Reporter):
    """Frames as rows of Parquet files in a folder (archive-sized runs; resumable)."""

    scheme = "parquet"
    description = "one row per frame in Parquet files under a folder (archive-sized runs; --resume)"

    def open(self) -> None:
        self._dir = Path(self.target)
        if self._dir.exists() and not self._dir.is_dir():
            from host import UsageError

            raise UsageError(f"report parquet:{self.target}: not a folder")
        self._dir.mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, list] = {n: [] for n in _schema().names}
        self._part = 0

    def write(self, result: FrameResult) -> None:
        rows = self._rows
        rows["run_id"].append(self.run.run_id)
        rows["recipe_hash"].append(result.recipe_hash)
        rows["source"].append(self.run.source)
        rows["key"].append(result.key)
        rows["index"].append(result.index)
        rows["path"].append(result.path)
        rows["timestamp"].append(result.timestamp)
        rows["verdict"].append(result.verdict)
        rows["error"].append(result.error)
        rows["total_ms"].append(result.total_ms)
        rows["timings"].append(json.dumps({k: round(v, 4) for k, v in result.timings.items()}))
        rows["results"].append(json.dumps([_step(r) for r in result.results], default=str))
        if len(rows["key"]) >= ROWS_PER_FILE:
            self._flush()

    def _flush(self) -> None:
        if not self._rows["key"]:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pydict(self._rows, schema=_schema())
        while True:
            name = self._dir / f"part-{self.run.run_id}-{self._part:05d}.parquet"
            self._part += 1
            if not name.exists():
                break
        tmp = name.with_suffix(".parquet.tmp")
        pq.write_table(table, str(tmp), compression="zstd")
        os.replace(tmp, name)  # a reader never sees half a file
        self._rows = {n: [] for n in _schema().names}

    def close(self) -> None:
        if hasattr(self, "_rows"):
            self._flush()

    def done_keys(self) -> set[str]:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        done: set[str] = set()
        for f in sorted(self._dir.glob("part-*.parquet")):
            t = pq.read_table(str(f), columns=["key", "recipe_hash", "source"])
            mask = pc.and_(pc.equal(t["recipe_hash"], self.run.recipe_hash), pc.equal(t["source"], self.run.source))
            done.update(t.filter(mask)["key"].to_pylist())
        return done
