"""Typed data that flows between the stages of a run.

``Frame`` (from a source) -> preprocess steps -> inspect steps, each giving a
``ToolResult`` -> one ``FrameResult`` per frame -> every reporter.

These are plain dataclasses with ``slots``: the per-frame path creates a few of
them per frame, so they must stay cheap.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The verdicts a frame or a step can have. ``review`` is the band between
#: accept and reject (two thresholds on a measurement, see ``Limit``).
PASS, REVIEW, FAIL, ERROR = "pass", "review", "fail", "error"
VERDICTS = (PASS, REVIEW, FAIL, ERROR)
_SEVERITY = {PASS: 0, REVIEW: 1, FAIL: 2, ERROR: 3}


def worst(verdicts) -> str:
    """The most severe of ``verdicts`` (pass < review < fail < error); pass when empty."""
    out = PASS
    for v in verdicts:
        if _SEVERITY[v] > _SEVERITY[out]:
            out = v
    return out


@dataclass(slots=True)
class Frame:
    """One image handed over by a source.

    ``image`` is ``None`` when the source could not decode the file; ``error``
    then says why, and the runner records an ``error`` verdict for the frame.
    ``key`` identifies the frame across runs (the file path for files, the
    source and index otherwise); ``loupe run --resume`` skips stored keys.
    """

    image: np.ndarray | None
    source: str
    index: int
    path: str | None = None
    timestamp: float = field(default_factory=time.time)
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.path if self.path is not None else f"{self.source}#{self.index}"


@dataclass(slots=True)
class Shape:
    """An overlay primitive in image pixel coordinates.

    kind: ``rect`` (points = [(x, y), (x + w, y + h)]), ``polygon`` / ``polyline``
    (points), ``line`` (two points), ``circle`` (points = [centre], radius),
    ``ellipse`` (points = [centre], axes = (a, b), angle in degrees), ``point``,
    or ``text`` (points = [anchor], label).
    ``status`` colours the shape: pass (green), fail (red), review (amber) or
    info (cyan); or, when only the step's limits can judge it, ``verdict`` (the
    colour of the step's verdict) or ``alert`` (the same, but not drawn when the
    step passes). Drawing code resolves these with ``host.resolved_overlays``.
    ``color`` (``#rrggbb``), when set, overrides the colour (e.g. one colour per
    defect class).
    """

    kind: str
    points: list[tuple[float, float]]
    label: str = ""
    radius: float = 0.0
    axes: tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0
    status: str = "info"
    color: str = ""

    def shifted(self, dx: float, dy: float) -> "Shape":
        return Shape(self.kind, [(x + dx, y + dy) for x, y in self.points], self.label,
                     self.radius, self.axes, self.angle, self.status, self.color)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "points": [[float(x), float(y)] for x, y in self.points]}
        if self.label:
            d["label"] = self.label
        if self.kind == "circle":
            d["radius"] = float(self.radius)
        if self.kind == "ellipse":
            d["axes"] = [float(a) for a in self.axes]
            d["angle"] = float(self.angle)
        d["status"] = self.status
        if self.color:
            d["color"] = self.color
        return d


class LazyShapes(Sequence):
    """Overlays built on first use.

    A tool whose overlays cost real time per frame (one outline per blob) returns
    ``LazyShapes(make)`` instead of a list; ``make()`` runs the first time anything
    reads the shapes (the HTML report, the GUI, a JSON reporter), so a production run
    whose reporters never draw (SQLite, CSV) never pays for them. Reads like a list.
    """

    __slots__ = ("_make", "_items")

    def __init__(self, make: Callable[[], Sequence[Shape]]):
        self._make: Callable[[], Sequence[Shape]] | None = make
        self._items: list[Shape] | None = None

    def _shapes(self) -> list[Shape]:
        if self._items is None:
            self._items = list(self._make())
            self._make = None
        return self._items

    def __getitem__(self, i):
        return self._shapes()[i]

    def __len__(self) -> int:
        return len(self._shapes())

    def __iter__(self) -> Iterator[Shape]:
        return iter(self._shapes())

    def __repr__(self) -> str:
        return f"LazyShapes({self._items!r})" if self._items is not None else "LazyShapes(<not built>)"


@dataclass(slots=True)
class ToolOutput:
    """What an inspect tool returns for one image.

    ``measurements`` are named numbers (or strings/bools) that recipes put
    limits on; ``overlays`` are drawn by the GUI and the HTML report (a list,
    or a :class:`LazyShapes` when they are costly to build);
    ``heatmap`` is an optional float map in [0, 1] (any size: it is stretched
    over the tool's input image) for anomaly or attention maps.
    """

    measurements: dict[str, Any]
    overlays: Sequence[Shape] = field(default_factory=list)
    heatmap: np.ndarray | None = None


@dataclass(slots=True)
class ToolResult:
    """One inspect step's result for one frame, with its verdict against the limits."""

    step: str
    tool: str
    verdict: str
    measurements: dict[str, Any]
    overlays: Sequence[Shape]
    heatmap: np.ndarray | None
    failures: list[str]
    ms: float
    error: str | None = None
    roi: tuple[int, int, int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "tool": self.tool,
            "verdict": self.verdict,
            "measurements": {k: jsonable(v) for k, v in self.measurements.items()},
            "failures": self.failures,
            "overlays": [s.to_dict() for s in self.overlays],
            "ms": round(self.ms, 4),
            "error": self.error,
        }


@dataclass(slots=True)
class FrameResult:
    """Everything known about one frame after a run: verdict, tool results, timings."""

    key: str
    index: int
    source: str
    path: str | None
    timestamp: float
    verdict: str
    results: list[ToolResult]
    timings: dict[str, float]
    recipe_hash: str
    error: str | None = None
    image: np.ndarray | None = None  # the frame's source image (overlays are drawn on it); not serialised

    @property
    def total_ms(self) -> float:
        return sum(self.timings.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "index": self.index,
            "source": self.source,
            "path": self.path,
            "timestamp": self.timestamp,
            "verdict": self.verdict,
            "recipe_hash": self.recipe_hash,
            "error": self.error,
            "timings_ms": {k: round(v, 4) for k, v in self.timings.items()},
            "results": [r.to_dict() for r in self.results],
        }


def safe_text(s: str) -> str:
    """``s`` as text every reporter can store: a file name with bytes that are not UTF-8
    (held by Python as lone surrogates, e.g. ``caf\udce9.png``) becomes ``caf\\xe9.png``.

    Unique and printable; applied once, by the runner, to each frame's key, path and errors.
    """
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") \
            if _only_escapes(s) else s.encode("utf-8", "backslashreplace").decode("utf-8")


def _only_escapes(s: str) -> bool:
    try:
        s.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


def jsonable(v: Any) -> Any:
    """Turn numpy scalars and small arrays into JSON-ready Python values (NaN and inf become None)."""
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.ndarray):
        return jsonable(v.tolist()) if v.dtype.kind == "f" else v.tolist()
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v
