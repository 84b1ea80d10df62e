"""Line-oriented reporters: JSON Lines and CSV."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ..core.contracts import Reporter
from ..core.types import FrameResult, jsonable


class JsonlReporter(Reporter):
    """One JSON object per frame (verdict, every tool result, timings), flushed per frame."""

    scheme = "jsonl"
    description = "JSON Lines: one object per frame with every tool result"

    def open(self) -> None:
        Path(self.target).parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.target, "a", encoding="utf-8")

    def write(self, result: FrameResult) -> None:
        d = result.to_dict()
        d["run_id"] = self.run.run_id
        self._f.write(json.dumps(d, default=jsonable) + "\n")
        self._f.flush()

    def close(self) -> None:
        if getattr(self, "_f", None):
            self._f.close()


class CsvReporter(Reporter):
    """One row per frame; a column per step verdict and per declared measurement (``step.name``).

    Columns come from the recipe (so the header is fixed before the first frame);
    measurements a tool did not declare go, as JSON, into the ``extra`` column.
    """

    scheme = "csv"
    description = "CSV: one row per frame, a column per measurement"

    def open(self) -> None:
        path = Path(self.target)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._columns = ["run_id", "key", "index", "verdict", "total_ms", "error"]
        for step in self.run.recipe.inspect:
            self._columns.append(f"{step.name}.verdict")
            self._columns += [f"{step.name}.{m}" for m in getattr(step.tool_cls, "measurements", {})]
        self._columns.append("extra")
        new = not path.exists() or path.stat().st_size == 0
        self._f = open(path, "a", encoding="utf-8", newline="")
        self._w = csv.writer(self._f)
        if new:
            self._w.writerow(self._columns)
        self._known = set(self._columns)

    def write(self, result: FrameResult) -> None:
        row: dict[str, object] = {"run_id": self.run.run_id, "key": result.key, "index": result.index,
                                  "verdict": result.verdict, "total_ms": round(result.total_ms, 3),
                                  "error": result.error or "; ".join(
                                      f"{r.step}: {r.error}" for r in result.results if r.error)}
        extra: dict[str, object] = {}
        for r in result.results:
            row[f"{r.step}.verdict"] = r.verdict
            for k, v in r.measurements.items():
                col, v = f"{r.step}.{k}", jsonable(v)
                if col in self._known and not isinstance(v, (list, dict)):
                    row[col] = v
                else:
                    extra[col] = v
        row["extra"] = json.dumps(extra) if extra else ""
        self._w.writerow([row.get(c, "") for c in self._columns])
        self._f.flush()

    def close(self) -> None:
        if getattr(self, "_f", None):
            self._f.close()
