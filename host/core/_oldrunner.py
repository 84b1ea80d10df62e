"""The runner: source -> preprocess -> inspect -> verdict -> reporters.

A recipe is compiled once into a ``Pipeline`` of live step objects (models load
there). The per-frame work is the calls into those objects, the limit checks,
and a few small dataclasses: nothing is looked up or validated per frame.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .catalogue import Catalogue
from .contracts import Reporter, RunInfo, Source, StepContext
from .errors import UsageError
from .recipe import Recipe, SourceDoc
from .types import ERROR, FAIL, PASS, REVIEW, Frame, FrameResult, LazyShapes, ToolResult, worst

log = logging.getLogger("loupe.runner")


def _now_ms() -> float:
    return time.perf_counter() * 1e3


class Pipeline:
    """A recipe's steps, built once. ``process(frame)`` is the per-frame path."""

    def __init__(self, recipe: Recipe, on_step_error: Callable[[str, str, BaseException], None] | None = None):
        self.recipe = recipe
        self.recipe_hash = recipe.hash
        self._on_step_error = on_step_error
        self._tools: list[Any] = []
        try:
            named_inputs = {s.input for s in recipe.inspect if s.input is not None}
            self._pre: list[tuple[str, Callable, bool]] = []
            for step in recipe.preprocess:
                tool = step.tool_cls(step.params, recipe.context(step))
                self._tools.append(tool)
                self._pre.append((step.name, tool.process, step.name in named_inputs))
            self._keep_raw = "raw" in named_inputs
            self._insp: list[tuple] = []
            for step in recipe.inspect:
                tool = step.tool_cls(step.params, recipe.context(step))
                self._tools.append(tool)
                self._insp.append((step.name, step.tool_id, tool.inspect, tuple(step.limits.items()),
                                   step.roi, step.input, step.required))
        except BaseException:
            self.close()
            raise
        self._any = recipe.doc.decision == "any"

    def close(self) -> None:
        for tool in self._tools:
            try:
                tool.close()
            except Exception:  # closing must not hide the run's own outcome
                log.exception("closing a tool failed")
        self._tools = []

    def process(self, frame: Frame) -> FrameResult:
        timings: dict[str, float] = {}
        image = frame.image
        if image is None:
            return FrameResult(frame.key, frame.index, frame.source, frame.path, frame.timestamp, ERROR, [],
                               timings, self.recipe_hash, frame.error or "no image", None)
        images: dict[str, Any] | None = None
        if self._keep_raw:
            images = {"raw": image}
        step = ""
        try:
            for step, fn, keep in self._pre:
                t0 = _now_ms()
                image = fn(image)
                timings[step] = _now_ms() - t0
                if keep:
                    if images is None:
                        images = {}
                    images[step] = image
        except Exception as exc:
            self._step_error(step, frame, exc)
            return FrameResult(frame.key, frame.index, frame.source, frame.path, frame.timestamp, ERROR, [],
                               timings, self.recipe_hash, f"{step}: {type(exc).__name__}: {exc}", frame.image)
        results: list[ToolResult] = []
        verdicts: list[str] = []
        for name, tool_id, fn, limits, roi, inp, required in self._insp:
            src = image if inp is None else images[inp]  # type: ignore[index]
            t0 = _now_ms()
            try:
                if roi is not None:
                    src = _crop(src, roi)
                out = fn(src)
            except Exception as exc:
                ms = _now_ms() - t0
                timings[name] = ms
                self._step_error(name, frame, exc)
                results.append(ToolResult(name, tool_id, ERROR, {}, [], None, [], ms,
                                          f"{type(exc).__name__}: {exc}", roi))
                verdicts.append(ERROR)
                continue
            ms = _now_ms() - t0
            timings[name] = ms
            verdict = PASS
            failures: list[str] = []
            if limits:
                m = out.measurements
                for key, limit in limits:
                    if key not in m:
                        v = FAIL
                        failures.append(f"{key}: not measured")
                    else:
                        v = limit.check(m[key])
                        if v is not PASS:
                            failures.append(f"{key}={_fmt(m[key])} {v}")
                    if v is FAIL or (v is REVIEW and verdict is PASS):
                        verdict = v
            overlays = out.overlays
            if roi is not None and (roi[0] or roi[1]):
                # shifted back to image coordinates when (and if) a reporter or the GUI reads them
                overlays = LazyShapes(lambda o=overlays, dx=roi[0], dy=roi[1]: [s.shifted(dx, dy) for s in o])
            results.append(ToolResult(name, tool_id, verdict, out.measurements, overlays, out.heatmap,
                                      failures, ms, None, roi))
            if required:
                verdicts.append(verdict)
        if self._any and verdicts and ERROR not in verdicts and PASS in verdicts:
            final = PASS
        else:
            final = worst(verdicts)
        return FrameResult(frame.key, frame.index, frame.source, frame.path, frame.timestamp, final, results,
                           timings, self.recipe_hash, None, frame.image)

    def _step_error(self, step: str, frame: Frame, exc: BaseException) -> None:
        log.debug("step %s failed on %s:\n%s", step, frame.key, traceback.format_exc())
        if self._on_step_error is not None:
            self._on_step_error(step, frame.key, exc)


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


def open_reporter(spec: str, catalogue: Catalogue, run: RunInfo, base_dir: Path | None = None) -> Reporter:
    scheme, target = split_spec(spec, "report")
    entry = catalogue.reporters.get(scheme)
    if entry is None:
        raise UsageError(f"report {spec!r}: unknown reporter {scheme!r}; installed: "
                         f"{', '.join(sorted(catalogue.reporters))}")
    if not target:
        raise UsageError(f"report {spec!r}: missing a path after '{scheme}:'")
    p = Path(target).expanduser()
    if base_dir is not None and not p.is_absolute():
        p = base_dir / p
    return entry.cls(str(p), run)


# ------------------------------------------------------------------ running


@dataclass
class RunSummary:
    run_id: str
    recipe_hash: str
    counts: dict[str, int] = field(default_factory=lambda: {PASS: 0, REVIEW: 0, FAIL: 0, ERROR: 0})
    skipped: int = 0
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def frames(self) -> int:
        return sum(self.counts.values())


class _StopFlag:
    """Ctrl-C / SIGTERM: finish the current frame, then stop. A second Ctrl-C aborts.

    The source is told too (``Source.stop()``), so one that waits for input ends its wait.
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
        self._source.stop()

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def run_recipe(recipe: Recipe, source: Source, reporters: list[Reporter], pm, run: RunInfo,
               limit: int | None = None, resume: bool = False,
               on_frame: Callable[[FrameResult], None] | None = None,
               stop: Callable[[], bool] | None = None) -> RunSummary:
    """Run ``recipe`` over ``source`` into ``reporters``.

    Every frame reaches every reporter, including frames that failed to decode
    or whose steps raised (verdict ``error``). Ctrl-C (or ``stop()`` returning
    true, for GUIs) finishes the current frame, then closes the reporters; a GUI
    also calls ``source.stop()``, so that a source waiting for input returns.
    """
    summary = RunSummary(run.run_id, recipe.hash)
    hook = pm.hook
    pipeline = Pipeline(recipe, on_step_error=lambda step, key, exc: hook.loupe_on_step_error(
        run=run, step=step, key=key, error=exc))
    opened: list[Reporter] = []
    t_start = time.perf_counter()
    try:
        for r in reporters:
            r.open()
            opened.append(r)
        skip: Callable[[str], bool] | None = None
        if resume:
            done: set[str] | None = None
            for r in reporters:
                keys = r.done_keys()
                if keys is not None:
                    done = keys if done is None else done & keys
            if done is None:
                raise UsageError("--resume needs a reporter that stores results (sqlite:PATH)")

            def skip_stored(key: str, _done: set[str] = done) -> bool:
                if key in _done:
                    summary.skipped += 1
                    return True
                return False

            skip = skip_stored

        hook.loupe_before_run(run=run)
        after_frame = hook.loupe_after_frame if hook.loupe_after_frame.get_hookimpls() else None
        counts = summary.counts
        with _StopFlag(source) as flag:
            frames: Iterable[Frame] = source.frames(skip=skip)
            for frame in frames:
                result = pipeline.process(frame)
                for r in opened:
                    r.write(result)
                counts[result.verdict] += 1
                if after_frame is not None:
                    after_frame(run=run, result=result)
                if on_frame is not None:
                    on_frame(result)
                if limit is not None and summary.frames >= limit:
                    break
                if flag.stop or (stop is not None and stop()):
                    summary.interrupted = True
                    break
            summary.interrupted = summary.interrupted or flag.stop  # stopped while the source waited
    finally:
        summary.seconds = time.perf_counter() - t_start
        pipeline.close()
        try:
            source.close()
        finally:
            errors = []
            for r in opened:
                try:
                    r.close()
                except Exception as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]
    hook.loupe_after_run(run=run, counts=dict(summary.counts), interrupted=summary.interrupted)
    return summary


def new_run_info(recipe: Recipe, source_spec: str, pm) -> RunInfo:
    return RunInfo(run_id=uuid.uuid4().hex[:12], recipe=recipe, recipe_hash=recipe.hash, source=source_spec,
                   started=time.time(),
                   plugins={p.distribution: p.version for p in pm.load_report.plugins if not p.error})
