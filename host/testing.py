"""pytest helpers for plugin authors (registered as the ``loupe`` pytest plugin).

Fixtures:

``loupe_pm``
    a plugin manager with autoload off: only the host's built-ins.
``register_plugin``
    ``register_plugin(module_or_object, name=None)`` registers a plugin on
    ``loupe_pm`` and unregisters it at teardown; returns the manager.
``run_recipe``
    ``run_recipe(recipe_dict, images, pm=None, reports=())`` runs a recipe given
    as a dict over images (arrays, files or a folder) in this process, through
    the host's own runner (limits, verdicts, reporters), and returns a
    :class:`RecipeRun` with every ``FrameResult``: no YAML file, no subprocess.

Helpers:

``run_loupe(*args, cwd=None, env=None, timeout=600)``
    runs the ``loupe`` command line in a subprocess (the installed console
    script next to this Python); returns the ``CompletedProcess`` (text).
``check_tool_contract(tool_cls, image, params=None)``
    builds a tool and runs it once, asserting the contract every tool must keep
    (the result types, declared measurements, input left untouched).
``check_source_contract(source_cls, params)``
    opens a source and reads it twice (all frames, then with a ``skip``),
    asserting the source contract; returns the frames.
``check_reporter_contract(reporter_cls, target)``
    writes a pass, a fail (with a NaN and a list measurement) and an error
    frame with a non-ASCII file name through a reporter, then closes it,
    asserting the reporter contract; returns the results it wrote, for the
    caller to compare with what the reporter stored.
"""
from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .core import runner as _runner
from .core.contracts import InspectTool, PreprocessTool, Reporter, RunInfo, Source, StepContext
from .core.manager import LoupePluginManager, create_plugin_manager
from .core.recipe import Recipe
from .core.types import ERROR, FAIL, PASS, Frame, FrameResult, Shape, ToolOutput, ToolResult


@pytest.fixture
def loupe_pm() -> LoupePluginManager:
    pm = create_plugin_manager(autoload=False)
    pm.strict = True  # a plugin under test raises its registration error instead of being left out
    return pm


@pytest.fixture
def register_plugin(loupe_pm: LoupePluginManager):
    names: list[str] = []

    def _register(plugin: Any, name: str | None = None) -> LoupePluginManager:
        name = name or getattr(plugin, "__name__", None) or f"test-plugin-{len(names)}"
        loupe_pm.register_plugin(plugin, name=name, distribution="(test)")
        loupe_pm.check_pending()
        names.append(name)
        return loupe_pm

    yield _register
    for name in names:
        if loupe_pm.has_plugin(name):
            loupe_pm.unregister_plugin(name)


def run_loupe(*args: str, cwd: str | Path | None = None, env: dict[str, str] | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``loupe ARGS...`` in a subprocess, as a user would; returns the completed process (text)."""
    exe = Path(sys.executable).with_name("loupe")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "host.cli"]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(cmd + [str(a) for a in args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def check_tool_contract(tool_cls: type, image: np.ndarray, params: dict[str, Any] | None = None,
                        context: StepContext | None = None) -> Any:
    """Build ``tool_cls`` and run it on ``image``; assert the tool contract; return the output."""
    p = tool_cls.Params.model_validate(params or {})
    tool = tool_cls(p, context or StepContext(step="contract"))
    before = image.copy()
    try:
        if issubclass(tool_cls, PreprocessTool):
            out = tool.process(image)
            assert isinstance(out, np.ndarray), f"{tool_cls.id}: process() must return an ndarray"
        else:
            assert issubclass(tool_cls, InspectTool)
            out = tool.inspect(image)
            assert isinstance(out, ToolOutput), f"{tool_cls.id}: inspect() must return a ToolOutput"
            assert isinstance(out.measurements, dict)
            declared = set(tool_cls.measurements)
            if declared:
                # a declared pattern ("*.area": one per model class) is produced when some name matches it
                missing = {d for d in declared - set(out.measurements)
                           if "*" not in d or not fnmatch.filter(out.measurements, d)}
                assert not missing, f"{tool_cls.id}: declared measurements not produced: {sorted(missing)}"
            for s in out.overlays:
                assert isinstance(s, Shape), f"{tool_cls.id}: overlays must be host.Shape objects"
            if out.heatmap is not None:
                assert isinstance(out.heatmap, np.ndarray) and out.heatmap.ndim == 2
        assert np.array_equal(image, before), f"{tool_cls.id}: modified its input image in place"
    finally:
        tool.close()
    return out


# ------------------------------------------------------------------ sources


def check_source_contract(source_cls: type, params: dict[str, Any] | None = None,
                          context: StepContext | None = None, min_frames: int = 1) -> list[Frame]:
    """Open ``source_cls`` with ``params`` and read it; assert the source contract; return the frames.

    Checked: ``Params`` validates ``params`` (a ``target`` field exists); ``frames()`` yields ``host.Frame``
    objects in index order with unique keys, each with an image (a numpy array) or ``image=None`` and an
    ``error``; ``count()``, when it is not None, is the number of frames; a ``skip(key)`` that returns True
    keeps that frame out of a second pass; ``stop()`` and ``close()`` can be called.
    """
    assert issubclass(source_cls, Source), f"{source_cls!r} is not a host.Source"
    assert "target" in source_cls.Params.model_fields, f"{source_cls.scheme}: Params needs a 'target' field"
    p = source_cls.Params.model_validate(params or {})
    src = source_cls(p, context or StepContext(step="source"))
    try:
        n = src.count()
        frames = list(src.frames())
    finally:
        src.close()
    assert len(frames) >= min_frames, f"{source_cls.scheme}: {len(frames)} frames, expected >= {min_frames}"
    keys = set()
    for i, f in enumerate(frames):
        assert isinstance(f, Frame), f"{source_cls.scheme}: frames() must yield host.Frame, got {type(f).__name__}"
        assert f.key not in keys, f"{source_cls.scheme}: key {f.key!r} yielded twice"
        keys.add(f.key)
        if f.image is None:
            assert f.error, f"{source_cls.scheme}: frame {f.key!r} has no image and no error"
        else:
            assert isinstance(f.image, np.ndarray) and f.image.ndim in (2, 3), \
                f"{source_cls.scheme}: frame {f.key!r}: image must be a 2-D or 3-D numpy array"
        if i:
            assert f.index > frames[i - 1].index, f"{source_cls.scheme}: frame indices must increase"
    if n is not None:
        assert n == len(frames), f"{source_cls.scheme}: count() said {n}, frames() gave {len(frames)}"
    first = frames[0].key
    src = source_cls(p, context or StepContext(step="source"))
    try:
        again = [f.key for f in src.frames(skip=lambda k: k == first)]
        src.stop()
    finally:
        src.close()
    assert first not in again, f"{source_cls.scheme}: a frame whose skip(key) was True was yielded"
    assert len(again) == len(frames) - 1, f"{source_cls.scheme}: skipping one key changed the other frames"
    return frames


# ---------------------------------------------------------------- reporters


BAD_NAME = os.fsdecode(b"caf\xe9.png")


def contract_results(recipe_hash: str = "0" * 64) -> list[FrameResult]:
    """The frames every reporter must store: a pass, a fail (with a NaN and a list measurement, a failure
    reason and overlays), an error frame with a non-ASCII file name and no image, and a frame whose file name
    is not valid UTF-8."""
    img = np.zeros((8, 8), np.uint8)
    ok = ToolResult("light", "demo.mean", PASS, {"mean": 120.5, "ok": True, "label": "good"},
                    [Shape("rect", [(1, 1), (4, 4)], status=PASS)], None, [], 0.12)
    bad = ToolResult("parts", "demo.count", FAIL, {"count": 11, "width": float("nan"), "areas": [10.0, 12.5]},
                     [Shape("circle", [(3, 3)], radius=2, status=FAIL)], None, ["count 11 < min 12"], 0.3)
    return [
        FrameResult("images/a.png", 0, "contract", "images/a.png", 1.0, PASS, [ok], {"light": 0.12}, recipe_hash,
                    image=img),
        FrameResult("images/b.png", 1, "contract", "images/b.png", 2.0, FAIL, [ok, bad],
                    {"light": 0.12, "parts": 0.3}, recipe_hash, image=img),
        FrameResult("images/défaut ü.png", 2, "contract", "images/défaut ü.png", 3.0, ERROR, [], {}, recipe_hash,
                    error="cannot decode images/défaut ü.png"),
        # a file name that is not valid UTF-8 (byte 0xe9) reaches reporters with a surrogate escape
        FrameResult(f"images/{BAD_NAME}", 3, "contract", f"images/{BAD_NAME}", 4.0, PASS, [ok], {"light": 0.1},
                    recipe_hash, image=img),
    ]


def contract_run(recipe: Recipe | None = None, source: str = "contract", resume: bool = False) -> RunInfo:
    """A ``RunInfo`` for reporter tests (an empty recipe unless one is given)."""
    if recipe is None:
        recipe = Recipe.from_dict({"loupe_recipe": 1, "name": "contract", "inspect": []},
                                  create_plugin_manager(autoload=False).catalogue, file="<contract>")
    return RunInfo(run_id="contract01", recipe=recipe, recipe_hash=recipe.hash, source=source, started=0.0,
                   resume=resume)


def check_reporter_contract(reporter_cls: type, target: str | Path, results: list[FrameResult] | None = None,
                            run: RunInfo | None = None) -> list[FrameResult]:
    """Write ``results`` (default :func:`contract_results`) through ``reporter_cls(target, run)``; assert the
    reporter contract; return the results written.

    Checked: the class is a ``host.Reporter`` with a ``scheme``; ``open()``, one ``write()`` per frame (error
    frames and frames without an image included) and ``close()`` succeed; ``done_keys()`` is ``None`` (the
    reporter cannot resume) or, on a reporter opened again for the same run, the set of the keys written.
    """
    assert issubclass(reporter_cls, Reporter), f"{reporter_cls!r} is not a host.Reporter"
    assert getattr(reporter_cls, "scheme", ""), f"{reporter_cls.__name__}: no scheme"
    run = run or contract_run()
    results = results if results is not None else contract_results(run.recipe_hash)
    rep = reporter_cls(str(target), run)
    rep.open()
    try:
        for r in results:
            rep.write(r)
    finally:
        rep.close()
    again = reporter_cls(str(target), contract_run(run.recipe, run.source, resume=True))
    again.open()
    try:
        keys = again.done_keys()
    finally:
        again.close()
    if keys is not None:
        assert set(keys) >= {r.key for r in results}, \
            f"{reporter_cls.scheme}: done_keys() lacks {sorted({r.key for r in results} - set(keys))}"
    return results


# --------------------------------------------------------------- in process


class _ArraySource(Source):
    """Frames from images held in memory (numpy arrays) or named files (for ``run_recipe``)."""

    scheme = "memory"

    def __init__(self, images: list[Any]):
        super().__init__(None, StepContext(step="source"))
        self.images = images

    def count(self) -> int:
        return len(self.images)

    def frames(self, skip=None):
        for i, item in enumerate(self.images):
            path = str(item) if isinstance(item, (str, Path)) else None
            key = path if path is not None else f"memory#{i}"
            if skip is not None and skip(key):
                continue
            if path is None:
                yield Frame(np.asarray(item), "memory", i)
                continue
            try:
                yield Frame(_read(path), "memory", i, path=path)
            except (OSError, ValueError) as exc:
                yield Frame(None, "memory", i, path=path, error=str(exc))


def _read(path: str) -> np.ndarray:
    import importlib

    try:
        cv2 = importlib.import_module("cv2")
    except ImportError:  # pragma: no cover - the host itself needs no OpenCV
        raise ValueError(f"{path}: reading image files needs OpenCV; pass numpy arrays instead") from None
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{path}: cannot decode the image")
    return img


class RecipeRun:
    """What :func:`run_recipe` returns: every frame's result, the summary, the recipe."""

    def __init__(self, recipe: Recipe, results: list[FrameResult], summary: Any):
        self.recipe, self.results, self.summary = recipe, results, summary

    @property
    def verdicts(self) -> list[str]:
        return [r.verdict for r in self.results]

    def measurements(self, step: str) -> list[dict[str, Any]]:
        """The measurements of step ``step`` in each frame (an empty dict where the step did not run)."""
        out = []
        for fr in self.results:
            out.append(next((dict(t.measurements) for t in fr.results if t.step == step), {}))
        return out


def run_recipe_in_process(recipe: dict[str, Any], images: Any, pm: LoupePluginManager | None = None,
                          reports: tuple[str, ...] | list[str] = (), base_dir: str | Path | None = None
                          ) -> RecipeRun:
    """Run the recipe ``recipe`` (a dict, as its YAML would load) over ``images`` in this process.

    ``images``: a list of numpy arrays and/or image file paths, or a folder (``Path`` or ``"folder:..."``
    spec; then the recipe's source kinds apply). ``pm`` defaults to a plugin manager that loads every
    installed plugin. ``reports`` are report specs (``"jsonl:out.jsonl"``) written as ``loupe run`` would.
    """
    pm = pm or create_plugin_manager()
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    doc = {"loupe_recipe": 1, "name": "test", **recipe}
    rec = Recipe.from_dict(doc, pm.catalogue, base_dir=base, file="<run_recipe>")
    if isinstance(images, (str, Path)) and (str(images).startswith("folder:") or Path(images).is_dir()):
        spec = str(images) if str(images).startswith("folder:") else f"folder:{images}"
        source = _runner.open_source(spec, pm.catalogue, base)
    else:
        spec = "memory"
        source = _ArraySource(list(images))
    run = _runner.new_run_info(rec, spec, pm)
    reporters = [_runner.open_reporter(r, pm.catalogue, run, base) for r in reports]
    results: list[FrameResult] = []
    summary = _runner.run_recipe(rec, source, reporters, pm, run, on_frame=results.append)
    return RecipeRun(rec, results, summary)


@pytest.fixture
def run_recipe(tmp_path):
    """``run_recipe(recipe_dict, images, pm=None, reports=())``: see :func:`run_recipe_in_process` (paths in
    the recipe and in ``reports`` resolve in the test's ``tmp_path``)."""

    def _run(recipe: dict[str, Any], images: Any, pm: LoupePluginManager | None = None,
             reports: tuple[str, ...] | list[str] = ()) -> RecipeRun:
        return run_recipe_in_process(recipe, images, pm=pm, reports=reports, base_dir=tmp_path)

    return _run
