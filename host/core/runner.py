"""The runner: source -> preprocess -> inspect -> verdict -> reporters.

A recipe is compiled once into a ``Pipeline`` of live step objects (models load
there). The per-frame work is the calls into those objects, the limit checks,
and a few small dataclasses: nothing is looked up or validated per frame.

Robustness (what ``run_recipe`` guarantees, see README "Production runs"):

* **One guarded call into plugin code.** Every preprocess and inspect call is
  guarded against any exception, ``SystemExit`` and ``KeyboardInterrupt``
  included (the operator's Ctrl-C never reaches a tool: the steps run on a
  worker thread, signals are handled on the calling thread). What an inspect
  tool returns is checked once, here (``check_output``), before anything else
  reads it; a bad return is an ``error`` result for that step.
* **Per-step deadlines.** The frames run on one worker thread; the calling
  thread watches the running step's start time. A step that overruns its
  deadline gives its frame an ``error`` verdict and the line goes on on a fresh
  worker thread; the hung call is abandoned (it cannot be killed: a thread is
  not a process) and the step answers ``error`` at once until it returns, so a
  tool is never called twice at the same time. Cost per frame: one tuple store
  per step, no hand-off between threads.
* **Reporters.** A reporter whose ``write`` raises is recorded and the run goes
  on (the other reporters still receive the frame); the failures are returned in
  ``RunSummary.reporter_errors``. A reporter that cannot store anything (disk
  full, read-only folder, locked database) stops the run with ``StoreError``.
* **Text.** Frame keys, paths and error messages are made storable once
  (``safe_text``): a file name that is not UTF-8 reaches every reporter.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import math
import os
import signal
import sqlite3
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .catalogue import Catalogue
from .contracts import PreprocessTool, Reporter, RunInfo, Source, StepContext
from .errors import LoupeError, UsageError
from .recipe import Recipe, SourceDoc
from .types import (ERROR, FAIL, PASS, REVIEW, Frame, FrameResult, LazyShapes, Shape, ToolOutput, ToolResult,
                    safe_text, worst)

log = logging.getLogger("loupe.runner")

#: The line's default deadline for one step call (ms) when neither the step nor the
#: recipe sets ``deadline_ms``. Generous for CPU inference, short enough that a hung
#: camera driver or model does not stall a line for long. 0 turns deadlines off.
DEFAULT_DEADLINE_MS = 10_000.0

#: How often the watching thread looks at the running step when none is near its deadline (s).
_POLL_S = 0.25


class StoreError(LoupeError):
    """A reporter cannot store results (disk full, read-only folder, locked database)."""


def _now_ms() -> float:
    return time.perf_counter() * 1e3


class _Abandoned(BaseException):
    """Raised in (and only in) a worker thread whose hung step was given up."""


# ------------------------------------------------------------------ what tools return

_SCALARS = frozenset({int, float, bool, str, type(None)})
_NUMBERS = frozenset({int, float, bool, type(None)})  # the fast path: nothing to check further
_MAX_LIST_DEPTH = 3
_MAX_LIST_ITEMS = 100_000


class BadOutput(ValueError):
    """What a tool returned cannot be used; the message says what and where."""


def _check_text(s: str) -> str:
    return s if s.isascii() else safe_text(s)


def _check_list(v, depth: int, budget: list[int]):
    if depth > _MAX_LIST_DEPTH:
        raise BadOutput(f"a list nested deeper than {_MAX_LIST_DEPTH} levels")
    out = []
    for x in v:
        budget[0] -= 1
        if budget[0] < 0:
            raise BadOutput(f"a list of more than {_MAX_LIST_ITEMS} values")
        t = type(x)
        if t in _SCALARS:
            out.append(_check_text(x) if t is str else x)
        elif t is list or t is tuple:
            out.append(_check_list(x, depth + 1, budget))
        elif isinstance(x, np.generic):
            out.append(_check_value(x))
        else:
            raise BadOutput(f"a {t.__name__} inside a list cannot be stored")
    return out


def _check_value(v):
    """A measurement value that is not a plain scalar: numpy scalars, arrays and lists of numbers."""
    if isinstance(v, np.generic):
        if v.dtype.kind in "biuf":
            return v
        if v.dtype.kind == "U":
            return _check_text(str(v))
        raise BadOutput(f"a numpy {v.dtype} value cannot be stored")
    if isinstance(v, np.ndarray):
        if v.dtype.kind not in "biuf":
            raise BadOutput(f"an array of {v.dtype} cannot be stored")
        if v.ndim > _MAX_LIST_DEPTH or v.size > _MAX_LIST_ITEMS:
            raise BadOutput(f"an array of shape {v.shape} is too large for a measurement")
        return v
    if isinstance(v, (list, tuple)):
        return _check_list(v, 1, [_MAX_LIST_ITEMS])
    if isinstance(v, str):  # a str subclass
        return _check_text(str(v))
    if isinstance(v, (int, float)):
        return v
    raise BadOutput(f"a {type(v).__name__} cannot be stored (numbers, text, booleans or lists of them)")


def _shape_ok(s) -> bool:
    if not isinstance(s, Shape) or type(s.kind) is not str or not isinstance(s.label, str) \
            or not isinstance(s.status, str):
        return False
    try:
        pts = s.points
        if len(pts) > 1_000_000:
            return False
        for x, y in pts:
            if not (math.isfinite(float(x)) and math.isfinite(float(y))):
                return False
        float(s.radius), float(s.angle)
        a, b = s.axes
        float(a), float(b)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _safe_shapes(lazy: Iterable[Shape], where: str) -> list[Shape]:
    """Build lazily made overlays, dropping (and logging) what is not a valid ``Shape``."""
    try:
        shapes = list(lazy)
    except Exception as exc:  # read by a reporter, after the frame's verdict: never raise there
        log.warning("%s: building the overlays failed: %s: %s", where, type(exc).__name__, exc)
        return []
    good = [s for s in shapes if _shape_ok(s)]
    if len(good) != len(shapes):
        log.warning("%s: %d overlay(s) are not valid shapes and were dropped", where, len(shapes) - len(good))
    return good


def check_output(out: Any, step: str) -> tuple[dict[str, Any], Any, Any]:
    """What an inspect tool returned, checked once: ``(measurements, overlays, heatmap)``.

    Raises ``BadOutput`` naming what is wrong. Plain scalars pass with one type look-up;
    lists and arrays are bounded in depth and size; listed overlays must be ``Shape``s
    (lazy ones are checked when built, invalid shapes dropped); a heatmap is a 2-D
    numeric array.
    """
    if not isinstance(out, ToolOutput):
        raise BadOutput(f"returned a {type(out).__name__}, expected a ToolOutput")
    m = out.measurements
    if type(m) is not dict:
        if not isinstance(m, dict):
            raise BadOutput(f"measurements are a {type(m).__name__}, expected a dict")
        m = dict(m)
    fixed: dict[str, Any] | None = None
    rekey = False
    for k, v in m.items():
        if type(k) is not str:
            raise BadOutput(f"measurement name {_short(k)} is a {type(k).__name__}, expected text")
        if not k.isascii():
            rekey = True
        t = type(v)
        if t in _SCALARS:
            if t is not str or v.isascii():
                continue
            v2 = safe_text(v)
        else:
            try:
                v2 = _check_value(v)
            except BadOutput as exc:
                raise BadOutput(f"measurement {_check_text(k)!r}: {exc}") from None
        if v2 is not v:
            if fixed is None:
                fixed = {}
            fixed[k] = v2
    if fixed or rekey:
        m = {_check_text(k): (fixed[k] if fixed and k in fixed else v) for k, v in m.items()}
    ov = out.overlays
    t = type(ov)
    if t is list or t is tuple:
        for s in ov:
            if not _shape_ok(s):
                raise BadOutput(f"overlay {type(s).__name__} {_short(s)} is not a valid Shape")
    elif isinstance(ov, LazyShapes):
        ov = LazyShapes(lambda src=ov: _safe_shapes(src, step))
    else:
        raise BadOutput(f"overlays are a {t.__name__}, expected a list of Shape")
    hm = out.heatmap
    if hm is not None and not (isinstance(hm, np.ndarray) and hm.dtype.kind in "biuf"
                               and (hm.ndim == 2 or (hm.ndim == 3 and hm.shape[2] == 1)) and hm.size):
        raise BadOutput(f"heatmap is a {type(hm).__name__}"
                        + (f" of shape {hm.shape} and type {hm.dtype}" if isinstance(hm, np.ndarray) else "")
                        + ", expected a 2-D numeric array")
    return m, ov, hm


def _short(x: Any) -> str:
    try:
        r = repr(x)
    except Exception:
        return "?"
    return r if len(r) <= 60 else r[:57] + "..."


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = "?"
    if len(text) > 2000:
        text = text[:2000] + "..."
    return safe_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


# ------------------------------------------------------------------ failure reasons


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return None


def _sig_decimals(v: float) -> int:
    """Decimals that show ``v`` with 3 significant digits, 0 to 6."""
    if v == 0 or not math.isfinite(v):
        return 0
    return max(0, min(6, 2 - math.floor(math.log10(abs(v)))))


def _exact_decimals(v: float) -> int:
    """The fewest decimals (at most 6) that write ``v`` exactly: 1.0 -> 0, 10.5 -> 1."""
    for d in range(7):
        if round(v, d) == v:
            return d
    return 6


def _pair(value: float, limit: float) -> tuple[str, str]:
    """Value and limit written with the same decimals: ``2.39``/``1.00``, ``11``/``12``."""
    if value.is_integer() and limit.is_integer():
        return f"{value:.0f}", f"{limit:.0f}"
    d = max(0 if value.is_integer() else min(_sig_decimals(value), _exact_decimals(value)), _exact_decimals(limit))
    return f"{value:.{d}f}", f"{limit:.{d}f}"


def _text(v: Any) -> str:
    if isinstance(v, str):
        return repr(safe_text(v))
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    f = _num(v)
    if f is not None:
        return "NaN" if f != f else (f"{f:.0f}" if f.is_integer() else f"{f:.3g}")
    return _short(v)


def failure_reason(key: str, value: Any, limit: Any, verdict: str) -> str:
    """Why ``value`` of measurement ``key`` got ``verdict`` against ``limit``, stating the limit.

    ``score 2.39 > max 1.00``, ``count 11 ≠ 12``, ``class 'bad' not in [good]``;
    a ``review`` adds `` (review)``.
    """
    tail = " (review)" if verdict == REVIEW else ""
    if limit.equals is not None and value != limit.equals:
        return f"{key} {_text(value)} ≠ {_text(limit.equals)}"
    if limit.one_of is not None and value not in limit.one_of:
        return f"{key} {_text(value)} not in [{', '.join(str(x) for x in limit.one_of)}]"
    v = _num(value)
    if v is None:
        return f"{key} {_text(value)} is not a number"
    if v != v:
        return f"{key} NaN (not measured)"
    if limit.min is not None and limit.min == limit.max and v != limit.min and verdict == FAIL:
        a, b = _pair(v, limit.min)
        return f"{key} {a} ≠ {b}"
    if limit.min is not None and v < limit.min:
        a, b = _pair(v, limit.min)
        return f"{key} {a} < min {b}{tail}"
    if limit.max is not None and v > limit.max:
        a, b = _pair(v, limit.max)
        return f"{key} {a} > max {b}{tail}"
    return f"{key} {_text(value)} {verdict}"


# ------------------------------------------------------------------ geometry of preprocess steps


def _as3(m) -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)
    if a.shape == (2, 3):
        a = np.vstack([a, [0.0, 0.0, 1.0]])
    if a.shape != (3, 3):
        raise ValueError(f"a transform must be a 2x3 or 3x3 matrix, got shape {a.shape}")
    return a


def _map_shapes(shapes: Iterable[Shape], m: np.ndarray) -> list[Shape]:
    """Shapes through the affine ``m`` (3x3): points mapped; sizes scaled; rects that rotate become polygons."""
    a, b, c, d = m[0, 0], m[0, 1], m[1, 0], m[1, 1]
    axis_aligned = abs(b) < 1e-12 and abs(c) < 1e-12
    scale = math.sqrt(abs(a * d - b * c))
    turn = math.degrees(math.atan2(c, a))

    def pt(x, y):
        return (a * x + b * y + m[0, 2], c * x + d * y + m[1, 2])

    out = []
    for s in shapes:
        if s.kind == "rect" and len(s.points) == 2 and not axis_aligned:
            (x0, y0), (x1, y1) = s.points
            out.append(Shape("polygon", [pt(x0, y0), pt(x1, y0), pt(x1, y1), pt(x0, y1)], s.label,
                             s.radius, s.axes, s.angle, s.status, s.color))
            continue
        pts = [pt(x, y) for x, y in s.points]
        if s.kind == "rect" and len(pts) == 2:
            (x0, y0), (x1, y1) = pts
            pts = [(min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1))]
        out.append(Shape(s.kind, pts, s.label, s.radius * scale, (s.axes[0] * scale, s.axes[1] * scale),
                         s.angle - turn if s.kind == "ellipse" else s.angle, s.status, s.color))
    return out


def _back_to_frame(shapes, roi, geos, where: str) -> list[Shape]:
    """Overlays in a step's (ROI and preprocessed) coordinates -> the source frame's pixels."""
    shapes = list(shapes)
    if roi is not None and (roi[0] or roi[1]):
        shapes = [s.shifted(roi[0], roi[1]) for s in shapes]
    if geos:
        try:
            total = np.eye(3)
            for transform, shape in geos:
                total = _as3(transform(shape)) @ total
            shapes = _map_shapes(shapes, np.linalg.inv(total))
        except Exception as exc:
            log.warning("%s: cannot map overlays back through the preprocess steps: %s", where, exc)
    return shapes


def _transform_of(tool) -> Callable | None:
    fn = getattr(type(tool), "transform", None)
    if fn is None or fn is getattr(PreprocessTool, "transform", None):
        return None
    return tool.transform


# ------------------------------------------------------------------ the pipeline


_FLOAT_MAX = sys.float_info.max


def _pass_range(limit) -> tuple[float, float]:
    """``(lo, hi)`` such that an ``int`` or ``float`` value with ``lo <= value <= hi`` passes ``limit``.

    The runner's fast path: such a value is accepted without calling ``limit.check``; any
    other value (outside, NaN, another type) goes through ``limit.check``, so verdicts are
    the same. Exact int/float comparison accepts only what ``float(value)`` would accept.
    Limits on text (``equals``, ``one_of``) get an empty range: always checked.
    """
    if limit.equals is not None or limit.one_of is not None:
        return math.inf, -math.inf
    # open ends at the largest float, not infinity: an int beyond any float (or inf itself) is checked
    lo = -_FLOAT_MAX if limit.min is None else float(limit.min)
    hi = _FLOAT_MAX if limit.max is None else float(limit.max)
    return lo, hi


def step_deadlines(recipe: Recipe, default_ms: float | None = DEFAULT_DEADLINE_MS) -> dict[str, float | None]:
    """Each step's deadline in ms (None: none): the step's ``deadline_ms``, else the recipe's, else ``default_ms``."""
    doc = recipe.doc
    base = getattr(doc, "deadline_ms", None)
    if base is None:
        base = default_ms
    out: dict[str, float | None] = {}
    for step in recipe.steps:
        docs = doc.preprocess if step.section == "preprocess" else doc.inspect
        own = getattr(docs[step.index], "deadline_ms", None) if step.index < len(docs) else None
        ms = own if own is not None else base
        out[step.name] = ms if ms else None
    return out


class Pipeline:
    """A recipe's steps, built once. ``process(frame)`` is the per-frame path.

    ``mark`` is the entry of the step call running now (None between frames), ``mark_t0`` its
    start; ``run_recipe``'s watching thread reads them to enforce deadlines.
    """

    def __init__(self, recipe: Recipe, on_step_error: Callable[[str, str, BaseException], None] | None = None,
                 deadlines: dict[str, float | None] | None = None):
        self.recipe = recipe
        self.recipe_hash = recipe.hash
        self._on_step_error = on_step_error
        self._tools: list[Any] = []
        self._tool_names: list[str] = []
        self.mark: tuple | None = None  # the running step's entry: (name, ..., deadline_ms, ...)
        self.mark_t0 = 0.0  # its start (time.perf_counter())
        self._gen = object()  # replaced when a hung step is given up: the old worker then stops
        self._busy: dict[str, tuple[threading.Thread, str]] = {}  # step -> (thread of the abandoned call, message)
        dl = deadlines or {}
        try:
            named_inputs = {s.input for s in recipe.inspect if s.input is not None}
            self._pre: list[tuple] = []
            geo_index: dict[str, int] = {}
            n_geo = 0
            for step in recipe.preprocess:
                tool = step.tool_cls(step.params, recipe.context(step))
                self._tools.append(tool)
                self._tool_names.append(step.name)
                tr = _transform_of(tool)
                self._pre.append((step.name, dl.get(step.name), tool.process, step.name in named_inputs, tr))
                if tr is not None:
                    n_geo += 1
                geo_index[step.name] = n_geo
            self._geo = n_geo > 0
            self._keep_raw = "raw" in named_inputs
            self._insp: list[tuple] = []
            for step in recipe.inspect:
                tool = step.tool_cls(step.params, recipe.context(step))
                self._tools.append(tool)
                self._tool_names.append(step.name)
                # how many geometric preprocess steps lie between the frame and this step's input
                n = 0 if step.input == "raw" else (geo_index[step.input] if step.input else n_geo)
                self._insp.append((step.name, dl.get(step.name), step.tool_id, tool.inspect,
                                   tuple((k, lim, *_pass_range(lim)) for k, lim in step.limits.items()),
                                   step.roi, step.input, step.required, n))
        except BaseException:
            self.close()
            raise
        self._any = recipe.doc.decision == "any"

    def close(self, keep: set[str] = frozenset()) -> None:
        """Close every tool, except those of the steps in ``keep`` (a call of theirs is still running)."""
        for name, tool in zip(self._tool_names, self._tools):
            if name in keep:
                continue
            try:
                tool.close()
            except Exception:  # closing must not hide the run's own outcome
                log.exception("closing a tool failed")
        self._tools, self._tool_names = [], []

    def _frame_error(self, frame: Frame, key: str, error: str, timings, results=()) -> FrameResult:
        return FrameResult(key, frame.index, frame.source, _path(frame), frame.timestamp, ERROR, list(results),
                           timings, self.recipe_hash, error, frame.image)

    def _abandoned(self, gen) -> None:
        """The calling thread's step call came back after it was given up: stop (its steps are
        free again when this thread has ended, see ``busy``)."""
        raise _Abandoned

    def busy(self, step: str) -> str | None:
        """Why ``step`` cannot be called now (a call of it was abandoned and its thread still runs), or None."""
        entry = self._busy.get(step)
        if entry is None:
            return None
        if entry[0].is_alive():
            return entry[1]
        self._busy.pop(step, None)
        return None

    def busy_steps(self) -> set[str]:
        """The steps whose abandoned call may still be running (not to be closed under it)."""
        return {step for step in list(self._busy) if self.busy(step) is not None}

    def process(self, frame: Frame) -> FrameResult:
        gen = self._gen
        clock = time.perf_counter
        timings: dict[str, float] = {}
        key = frame.key
        if not key.isascii():
            key = safe_text(key)
        image = frame.image
        if image is None:
            return self._frame_error(frame, key, safe_text(frame.error or "no image"), timings)
        busy = self._busy
        images: dict[str, Any] | None = None
        if self._keep_raw:
            images = {"raw": image}
        geos: list | None = [] if self._geo else None
        for entry in self._pre:
            step, _, fn, keep, tr = entry
            if busy and step in busy and (why := self.busy(step)) is not None:
                return self._frame_error(frame, key, why, timings)
            self.mark_t0 = t0 = clock()
            self.mark = entry
            try:
                if tr is not None:
                    geos.append((tr, image.shape))  # type: ignore[union-attr]
                image = fn(image)
                if self._gen is not gen:
                    self._abandoned(gen)
                if not isinstance(image, np.ndarray):
                    raise BadOutput(f"returned a {type(image).__name__}, expected an image array")
            except _Abandoned:
                raise
            except BaseException as exc:
                if self._gen is not gen:
                    self._abandoned(gen)
                self.mark = None
                timings[step] = (clock() - t0) * 1e3
                self._step_error(step, key, exc)
                return self._frame_error(frame, key, f"{step}: {_describe(exc)}", timings)
            timings[step] = (clock() - t0) * 1e3
            if keep:
                if images is None:
                    images = {}
                images[step] = image
        results: list[ToolResult] = []
        verdicts: list[str] = []
        for entry in self._insp:
            name, _, tool_id, fn, limits, roi, inp, required, n_geo = entry
            if busy and name in busy and (why := self.busy(name)) is not None:
                results.append(ToolResult(name, tool_id, ERROR, {}, [], None, [], 0.0, why, roi))
                verdicts.append(ERROR)
                continue
            src = image if inp is None else images[inp]  # type: ignore[index]
            self.mark_t0 = t0 = clock()
            self.mark = entry
            try:
                if roi is not None:
                    src = _crop(src, roi)
                out = fn(src)
                if self._gen is not gen:
                    self._abandoned(gen)
                # the boundary check; plain numbers, no overlays, no heatmap: one short loop here
                if type(out) is ToolOutput and out.heatmap is None and type(overlays := out.overlays) is list \
                        and not overlays and type(m := out.measurements) is dict:
                    heatmap = None
                    for k, v in m.items():
                        if type(v) not in _NUMBERS or type(k) is not str:
                            m, overlays, heatmap = check_output(out, name)
                            break
                else:
                    m, overlays, heatmap = check_output(out, name)
            except _Abandoned:
                raise
            except BaseException as exc:
                if self._gen is not gen:
                    self._abandoned(gen)
                ms = (clock() - t0) * 1e3
                timings[name] = ms
                self._step_error(name, key, exc)
                results.append(ToolResult(name, tool_id, ERROR, {}, [], None, [], ms, _describe(exc), roi))
                verdicts.append(ERROR)
                continue
            ms = (clock() - t0) * 1e3
            timings[name] = ms
            verdict = PASS
            failures: list[str] = []
            for mkey, limit, lo, hi in limits:
                if mkey in m:
                    val = m[mkey]
                    if (type(val) is int or type(val) is float) and lo <= val <= hi:
                        continue  # inside the accept range: what limit.check says, without the call
                    v = limit.check(val)
                    if v is PASS:
                        continue
                    failures.append(failure_reason(mkey, val, limit, v))
                else:
                    v = FAIL
                    failures.append(f"{mkey}: not measured")
                if v is FAIL or (v is REVIEW and verdict is PASS):
                    verdict = v
            if (n_geo or (roi is not None and (roi[0] or roi[1]))) and (type(overlays) is LazyShapes or overlays):
                # back to the frame's pixels when (and if) a reporter or the GUI reads them
                overlays = LazyShapes(lambda o=overlays, r=roi, g=geos[:n_geo] if n_geo else None, w=name:
                                      _back_to_frame(o, r, g, w))
            results.append(ToolResult(name, tool_id, verdict, m, overlays, heatmap, failures, ms, None, roi))
            if required:
                verdicts.append(verdict)
        self.mark = None
        if verdicts.count(PASS) == len(verdicts):  # every required step passed (or none): no ranking needed
            final = PASS
        elif self._any and ERROR not in verdicts and PASS in verdicts:
            final = PASS
        else:
            final = worst(verdicts)
        path = frame.path
        if path is not None and not path.isascii():
            path = safe_text(path)
        return FrameResult(key, frame.index, frame.source, path, frame.timestamp, final, results,
                           timings, self.recipe_hash, None, frame.image)

    def _step_error(self, step: str, key: str, exc: BaseException) -> None:
        log.debug("step %s failed on %s:\n%s", step, key, traceback.format_exc())
        if self._on_step_error is not None:
            try:
                self._on_step_error(step, key, exc)
            except Exception:
                log.exception("a loupe_on_step_error hook failed")


def _path(frame: Frame) -> str | None:
    p = frame.path
    return p if p is None or p.isascii() else safe_text(p)


def _crop(image, roi):
    x, y, w, h = roi
    ih, iw = image.shape[:2]
    if x >= iw or y >= ih:
        raise ValueError(f"roi {list(roi)} lies outside the {iw}x{ih} image")
    return image[y:y + h, x:x + w]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ------------------------------------------------------------------ opening


def split_spec(spec: str, kind: str) -> tuple[str, str]:
    if ":" not in spec:
        raise UsageError(f"{kind} spec {spec!r}: expected SCHEME:TARGET (e.g. folder:images, sqlite:results.db)")
    scheme, target = spec.split(":", 1)
    return scheme.strip().lower(), target


def open_source(spec: str | SourceDoc, catalogue: Catalogue, base_dir: Path | None = None,
                options: dict[str, Any] | None = None) -> Source:
    """Build a source from ``folder:PATH`` (plus options from a recipe mapping)."""
    opts: dict[str, Any] = dict(options or {})
    if isinstance(spec, SourceDoc):
        opts = {**(spec.model_extra or {}), **opts}
        spec = spec.spec
    scheme, target = split_spec(spec, "source")
    entry = catalogue.sources.get(scheme)
    if entry is None:
        raise UsageError(f"source {spec!r}: unknown source kind {scheme!r}; installed: "
                         f"{', '.join(sorted(catalogue.sources)) or 'none (install loupe-classical)'}")
    from pydantic import ValidationError

    try:
        params = entry.cls.Params.model_validate({"target": target, **opts})
    except ValidationError as exc:
        raise UsageError("; ".join(f"source {spec!r}: {'.'.join(map(str, e['loc']))}: {e['msg']}"
                                   for e in exc.errors())) from None
    return entry.cls(params, StepContext(step="source", base_dir=base_dir or Path.cwd()))


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def open_reporter(spec: str, catalogue: Catalogue, run: RunInfo, base_dir: Path | None = None,
                  allow_outside: bool = False) -> Reporter:
    """Build a reporter from ``SCHEME:PATH``.

    A target from a recipe (``base_dir`` given) must lie inside the recipe's folder or the
    working directory, after ``~`` and symbolic links are resolved, unless ``allow_outside``
    (``loupe run --allow-report-outside``): a recipe from elsewhere cannot append to
    ``~/.bashrc``. Targets given by the operator on the command line (``base_dir`` None) may
    point anywhere.
    """
    scheme, target = split_spec(spec, "report")
    entry = catalogue.reporters.get(scheme)
    if entry is None:
        raise UsageError(f"report {spec!r}: unknown reporter {scheme!r}; installed: "
                         f"{', '.join(sorted(catalogue.reporters))}")
    if not target:
        raise UsageError(f"report {spec!r}: missing a path after '{scheme}:'")
    path_part, _, _query = target.partition("?")
    p = Path(path_part).expanduser()
    if base_dir is not None and not p.is_absolute():
        p = base_dir / p
    if base_dir is not None and not allow_outside:
        real = Path(os.path.realpath(p))
        homes = [Path(os.path.realpath(base_dir)), Path(os.path.realpath(Path.cwd()))]
        if not any(_inside(real, h) for h in homes):
            raise UsageError(f"report {spec!r}: {real} lies outside the recipe's folder ({homes[0]}) and the "
                             f"working directory ({homes[1]}); give --allow-report-outside to write there")
    return entry.cls(str(p) + (f"?{_query}" if _ else ""), run)


# ------------------------------------------------------------------ running


@dataclass
class RunSummary:
    run_id: str
    recipe_hash: str
    counts: dict[str, int] = field(default_factory=lambda: {PASS: 0, REVIEW: 0, FAIL: 0, ERROR: 0})
    skipped: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    #: reporter (or frame listener) -> [frames it failed on, the first error]
    reporter_errors: dict[str, list] = field(default_factory=dict)
    #: frames given an error verdict because a step overran its deadline
    deadline_overruns: int = 0

    @property
    def frames(self) -> int:
        return sum(self.counts.values())


class _StopFlag:
    """Ctrl-C / SIGTERM: finish the current frame, then stop. A second Ctrl-C aborts.

    The source is told too (``Source.stop()``), so one that waits for input ends its wait.
    The handlers run on the calling thread; the steps run on a worker thread, so a
    ``KeyboardInterrupt`` a tool raises is the tool's, never the operator's.
    """

    def __init__(self, source: Source) -> None:
        self.stop = False
        self._source = source
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop = True
        try:
            self._source.stop()
        except Exception:
            log.exception("source.stop() failed")

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EDQUOT}


def _storage_failure(exc: BaseException) -> bool:
    """An error that means the store cannot take any more results (not one bad frame)."""
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return True  # disk full, read-only, locked past the busy timeout, I/O error
    if isinstance(exc, StoreError):
        return True
    return False


def _async_raise(thread: threading.Thread) -> None:
    """Ask an abandoned worker to stop at its next Python instruction (a pure-Python loop ends;
    a call blocked in C ends when it returns)."""
    try:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(_Abandoned))
    except Exception:  # not CPython: the thread ends when its call returns
        pass


def run_recipe(recipe: Recipe, source: Source, reporters: list[Reporter], pm, run: RunInfo,
               limit: int | None = None, resume: bool = False,
               on_frame: Callable[[FrameResult], None] | None = None,
               stop: Callable[[], bool] | None = None,
               deadline_ms: float | None = DEFAULT_DEADLINE_MS) -> RunSummary:
    """Run ``recipe`` over ``source`` into ``reporters``.

    Every frame reaches every reporter, including frames that failed to decode
    or whose steps raised, returned something unusable or overran their deadline
    (verdict ``error``). Ctrl-C / SIGTERM (or ``stop()`` returning true, for GUIs)
    finishes the current frame (at the latest at the running step's deadline),
    then closes the reporters; a GUI also calls ``source.stop()``, so that a source
    waiting for input returns.

    ``deadline_ms`` is the line's default deadline per step call, used where neither
    the step nor the recipe sets one (``None`` or 0: none). A station passes its own.
    """
    summary = RunSummary(run.run_id, recipe.hash)
    hook = pm.hook
    pipeline = Pipeline(recipe, on_step_error=lambda step, key, exc: hook.loupe_on_step_error(
        run=run, step=step, key=key, error=exc), deadlines=step_deadlines(recipe, deadline_ms))
    opened: list[Reporter] = []
    names: dict[int, str] = {}
    t_start = time.perf_counter()
    done = threading.Event()
    # "claim": the frame in the works, as a one-item list. Whoever pops it delivers that frame: the
    # worker when the frame is done, or the watcher when one of its steps overran (or at an abort).
    # list.pop is atomic, so exactly one of them does, with no lock per frame.
    state: dict[str, Any] = {"error": None, "claim": []}
    worker: threading.Thread | None = None
    try:
        for r in reporters:
            names[id(r)] = f"{r.scheme}:{r.target}" if getattr(r, "scheme", None) else type(r).__name__
            try:
                r.open()
            except LoupeError:
                raise
            except Exception as exc:
                if _storage_failure(exc) or isinstance(exc, OSError):
                    raise StoreError(f"report {names[id(r)]}: cannot open: {_describe(exc)}") from None
                raise
            opened.append(r)
        summary.run_id = run.run_id  # a results store may have adopted an interrupted run's id (--resume)
        skip: Callable[[str], bool] | None = None
        if resume:
            done_keys: set[str] | None = None
            for r in reporters:
                keys = r.done_keys()
                if keys is not None:
                    done_keys = keys if done_keys is None else done_keys & keys
            if done_keys is None:
                raise UsageError("--resume needs a reporter that stores results (sqlite:PATH)")

            def skip_stored(key: str, _done: set[str] = done_keys) -> bool:
                if (key if key.isascii() else safe_text(key)) in _done:
                    summary.skipped += 1
                    return True
                return False

            skip = skip_stored

        hook.loupe_before_run(run=run)
        after_frame = hook.loupe_after_frame if hook.loupe_after_frame.get_hookimpls() else None
        counts = summary.counts
        errors = summary.reporter_errors

        def failed(name: str, exc: BaseException) -> None:
            log.warning("%s failed: %s", name, _describe(exc))
            e = errors.get(name)
            if e is None:
                errors[name] = [1, _describe(exc)]
            else:
                e[0] += 1

        def deliver(result: FrameResult) -> bool:
            """Hand one frame to every reporter and listener (by whoever claimed it); true when the run is to stop."""
            full = None
            for r in opened:
                try:
                    r.write(result)
                except BaseException as exc:
                    if _storage_failure(exc):
                        full = full or StoreError(
                            f"report {names[id(r)]}: cannot store results: {_describe(exc)}; the run stopped "
                            f"after {summary.frames} frames, the results stored so far are intact")
                    else:
                        failed(f"report {names[id(r)]}", exc)
            if full is not None:  # the other reporters have this frame; nothing more can be stored
                raise full
            counts[result.verdict] += 1
            if after_frame is not None:
                try:
                    after_frame(run=run, result=result)
                except Exception as exc:
                    failed("hook loupe_after_frame", exc)
            if on_frame is not None:
                try:
                    on_frame(result)
                except Exception as exc:
                    failed("on_frame", exc)
            return limit is not None and summary.frames >= limit

        frames: Iterator[Frame] = iter(source.frames(skip=skip))

        def work(gen) -> None:
            lost = False  # the watcher took this worker's frame: it is no longer the line's worker
            try:
                for frame in frames:
                    state["claim"] = claim = [frame]
                    result = pipeline.process(frame)
                    try:
                        claim.pop()
                    except IndexError:  # the watcher has given this frame its error: this worker is done
                        lost = True
                        return
                    if deliver(result):
                        return
                    if flag.stop or (stop is not None and stop()):
                        summary.interrupted = True
                        return
            except _Abandoned:
                return
            except BaseException as exc:
                if pipeline._gen is gen:
                    state["error"] = exc
            finally:
                if not lost and pipeline._gen is gen:
                    done.set()

        def start() -> threading.Thread:
            done.clear()
            t = threading.Thread(target=work, args=(pipeline._gen,), name="loupe-line", daemon=True)
            t.start()
            return t

        with _StopFlag(source) as flag:
            worker = start()
            timeout = _POLL_S
            while not done.wait(timeout):
                mark, t0 = pipeline.mark, pipeline.mark_t0
                if mark is None or mark[1] is None:
                    timeout = _POLL_S
                    continue
                left = t0 + mark[1] / 1e3 - time.perf_counter()
                if left > 0:
                    timeout = min(left + 0.002, 3600.0)
                    continue
                claim = state["claim"]  # read before the mark is checked again: it is this step's frame's
                if pipeline.mark is not mark or pipeline.mark_t0 != t0 or done.is_set():
                    timeout = 0.001
                    continue
                try:
                    frame = claim.pop()
                except IndexError:  # the step returned and the worker took its frame just now
                    timeout = 0.001
                    continue
                name, dl = mark[0], mark[1]
                key = safe_text(frame.key)
                msg = f"{name}: deadline {dl:g} ms exceeded"
                pipeline._busy[name] = (worker, f"{name}: busy: the call on {key} overran its deadline "
                                                f"({dl:g} ms) and has not returned")
                pipeline._gen = object()
                pipeline.mark = None
                _async_raise(worker)
                worker = None  # abandoned: never waited for
                summary.deadline_overruns += 1
                log.warning("%s on %s; the call is abandoned and the line goes on", msg, key)
                pipeline._step_error(name, key, TimeoutError(msg))
                result = FrameResult(key, frame.index, frame.source, _path(frame), frame.timestamp, ERROR, [],
                                     {name: float(dl)}, pipeline.recipe_hash, msg, frame.image)
                try:
                    at_limit = deliver(result)
                except StoreError as exc:
                    state["error"] = exc
                    break
                if at_limit or flag.stop or (stop is not None and stop()):
                    summary.interrupted = summary.interrupted or not at_limit
                    break
                worker = start()
                timeout = _POLL_S
            if state["error"] is not None:
                raise state["error"]
            summary.interrupted = summary.interrupted or flag.stop  # stopped while the source waited
    finally:
        summary.seconds = time.perf_counter() - t_start
        if worker is not None and not done.is_set():
            pipeline._gen = object()  # aborted (second Ctrl-C, error): the worker delivers nothing more
            try:
                state["claim"].pop()  # its frame in the works is not delivered
            except IndexError:
                pass  # it is delivering that frame now: waited for below
        if worker is not None:
            worker.join(timeout=2.0)
        # a tool whose call is still running (abandoned at its deadline, or an abort) is not closed
        # under it; it is released when that call returns
        pipeline.close(keep=pipeline.busy_steps() | ({pipeline.mark[0]} if worker is not None and worker.is_alive()
                                                    and pipeline.mark is not None else set()))
        try:
            source.close()
        finally:
            close_errors = []
            for r in opened:
                try:
                    r.close()
                except Exception as exc:
                    close_errors.append((r, exc))
            if close_errors:
                r, exc = close_errors[0]
                if _storage_failure(exc):
                    raise StoreError(f"report {names[id(r)]}: cannot store results: {_describe(exc)}") from exc
                raise exc
    hook.loupe_after_run(run=run, counts=dict(summary.counts), interrupted=summary.interrupted)
    return summary


def new_run_info(recipe: Recipe, source_spec: str, pm) -> RunInfo:
    return RunInfo(run_id=uuid.uuid4().hex[:12], recipe=recipe, recipe_hash=recipe.hash, source=source_spec,
                   started=time.time(),
                   plugins={p.distribution: p.version for p in pm.load_report.plugins if not p.error})
