"""Line-oriented reporters: JSON Lines and CSV.

Both append. On ``loupe run --resume`` they read back the keys they already hold for
the resumed run and do not write those frames again, so a resumed run has one line per
frame. A CSV file keeps one header: a run whose recipe has other columns (another recipe,
or another job of a station writing to the same target) writes beside it, to
``<stem>.<recipe name><suffix>``, never rows under the wrong header. CSV cells that a
spreadsheet would read as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or CR)
are written with a leading ``'``.
"""
from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

from ..core.contracts import Reporter
from ..core.errors import UsageError
from ..core.types import FrameResult, jsonable

log = logging.getLogger("loupe.report")


class JsonlReporter(Reporter):
    """One JSON object per frame (verdict, every tool result, timings), flushed per frame."""

    scheme = "jsonl"
    description = "JSON Lines: one object per frame with every tool result"

    def open(self) -> None:
        Path(self.target).parent.mkdir(parents=True, exist_ok=True)
        self._have: set[str] = set()
        self._f = open(self.target, "a", encoding="utf-8")

    def done_keys(self) -> None:
        """Resume: remember the keys this file holds for the (adopted) run; they are not written again.

        Returns None: the results store decides which frames are skipped.
        """
        run_id = self.run.run_id
        with open(self.target, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    d = json.loads(line)
                except ValueError:  # a line cut short by a crash
                    continue
                if isinstance(d, dict) and d.get("run_id") == run_id:
                    self._have.add(d.get("key"))
        return None

    def write(self, result: FrameResult) -> None:
        if self._have and result.key in self._have:
            return
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
        header = _header(path)
        if header is not None and header != self._columns:
            name = re.sub(r"[^0-9A-Za-z_-]+", "-", self.run.recipe.name or "recipe").strip("-") or "recipe"
            other = path.with_name(f"{path.stem}.{name}{path.suffix}")
            log.warning("%s holds other columns than recipe %r: its rows go to %s", path, self.run.recipe.name, other)
            path, header = other, _header(other)
            if header is not None and header != self._columns:
                raise UsageError(f"{path}: its header is not recipe {self.run.recipe.name!r}'s columns; "
                                 f"give the CSV report another file")
        self.path = path
        self._f = open(path, "a", encoding="utf-8", newline="")
        self._w = csv.writer(self._f)
        if header is None:
            self._w.writerow(self._columns)
        self._known = set(self._columns)
        self._have: set[str] = set()

    def done_keys(self) -> None:
        """Resume: remember the keys this file holds for the (adopted) run; they are not written again."""
        run_id = self.run.run_id
        with open(self.path, encoding="utf-8", errors="replace", newline="") as f:
            for rec in csv.reader(f):
                if len(rec) > 1 and rec[0] == run_id:
                    key = rec[1]
                    self._have.add(key[1:] if key[:1] == "'" and key[1:2] in _FORMULA else key)
        return None

    def write(self, result: FrameResult) -> None:
        if self._have and result.key in self._have:
            return
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
        self._w.writerow([_cell(row.get(c, "")) for c in self._columns])
        self._f.flush()

    def close(self) -> None:
        if getattr(self, "_f", None):
            self._f.close()


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _header(path: Path) -> list[str] | None:
    """The first row of a CSV file, or None when there is no file or it is empty."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return next(csv.reader(f), None)


def _cell(v: object) -> object:
    """A text cell that a spreadsheet would run as a formula gets a leading ``'`` (numbers stay numbers)."""
    if type(v) is str and v[:1] in _FORMULA and v:
        return "'" + v
    return v
