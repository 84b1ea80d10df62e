"""The small typed contracts that plugins register through the hooks.

A plugin registers *classes* (not instances) from its registration hooks. The
catalogue checks each class at registration (id, parameter model, required
methods) and records the plugin and distribution it came from. A recipe step is
turned into an instance once per run (``Tool(params, context)``): that is where
models load. The per-frame loop then only calls ``process`` / ``inspect``.
"""
from __future__ import annotations

import argparse
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict

from .types import Frame, FrameResult, ToolOutput

if TYPE_CHECKING:  # pragma: no cover
    from .bundle import Bundle
    from .recipe import Recipe


class Params(BaseModel):
    """Base class for parameter models: unknown fields are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)  # no inf/nan values


class NoParams(Params):
    pass


@dataclass
class StepContext:
    """What a tool gets when it is built: where relative paths resolve, its step name."""

    step: str = ""
    base_dir: Path = field(default_factory=Path.cwd)
    options: dict[str, Any] = field(default_factory=dict)

    def resolve(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)


# --------------------------------------------------------------------- tools


class Tool(ABC):
    """Common part of preprocess and inspect tools.

    ``id`` is namespaced by the plugin (``classical.blob``). ``Params`` is a
    pydantic model (subclass ``host.Params``): it validates recipe parameters,
    serialises them, and gives the GUI its form. ``__init__`` is called once
    per run, so load models and precompute here, never per frame.
    """

    id: ClassVar[str]
    stage: ClassVar[str]
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, params: BaseModel, context: StepContext | None = None):
        self.params = params
        self.context = context or StepContext()

    def close(self) -> None:
        """Release resources at the end of a run (optional)."""


class PreprocessTool(Tool):
    """Transforms an image; the next step gets the returned image."""

    stage: ClassVar[str] = "preprocess"

    @abstractmethod
    def process(self, image: np.ndarray) -> np.ndarray:
        """Return the transformed image. Must not modify ``image`` in place."""

    def transform(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """A geometric step (crop, resize, rotate) returns the 2x3 affine matrix that maps a pixel
        of its input image (of ``shape``) to its output image; the runner maps later steps'
        overlays back through it, so they land on the frame's pixels. Others return None."""
        return None


class InspectTool(Tool):
    """Measures an image and returns a ``ToolOutput``.

    ``measurements`` documents the names the tool produces (name -> help), so
    recipes can be validated and the GUI can offer limits; ``default_limits``
    applies when a step sets none (``limits: {}`` in a recipe keeps a step
    informational).
    """

    stage: ClassVar[str] = "inspect"
    measurements: ClassVar[dict[str, str]] = {}
    #: The tool's natural pass condition, used when a recipe step gives no ``limits``
    #: (e.g. ``{"ok": {"equals": True}}``); written into the step when the recipe is
    #: loaded, so it shows in the canonical recipe and its hash.
    default_limits: ClassVar[dict[str, dict[str, Any]]] = {}

    @abstractmethod
    def inspect(self, image: np.ndarray) -> ToolOutput:
        """Measure ``image`` (already cropped to the step's ROI). Must not modify it."""


# ------------------------------------------------------------------- sources


class SourceParams(Params):
    target: str = ""


class Source(ABC):
    """A kind of image source, opened from a spec such as ``folder:PATH``.

    ``Params`` must have a ``target`` field: the part of the spec after the
    colon. Other fields come from the recipe's ``source`` mapping.
    """

    scheme: ClassVar[str]
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = SourceParams

    def __init__(self, params: BaseModel, context: StepContext | None = None):
        self.params = params
        self.context = context or StepContext()

    @abstractmethod
    def frames(self, skip: Callable[[str], bool] | None = None) -> Iterator[Frame]:
        """Yield frames in order. When ``skip(key)`` is true the source should not
        decode that frame (it was stored by an earlier run) and must not yield it.
        A file that cannot be decoded is yielded as a frame with ``image=None`` and
        ``error`` set; it never stops the source."""

    def count(self) -> int | None:
        """How many frames will come, when known (for the progress bar)."""
        return None

    @property
    def stored(self) -> bool:
        """True when the frames exist before they are asked for (image files, a recorded video): a station
        then reads the next frame while it waits for a trigger, so a trigger does not wait for a decode.
        A camera, whose frame is taken when it is asked for, and a hot folder, which waits for new
        files, are not stored (the default)."""
        return False

    def stop(self) -> None:
        """Ask ``frames()`` to end soon; called from a signal handler or another thread
        (Ctrl-C, a GUI's Stop button). A source that can wait for input (a hot folder, a
        camera) must return from ``frames()`` promptly after it; others need not override."""

    def close(self) -> None:
        """Release the device or file handles."""


# ----------------------------------------------------------------- reporters


@dataclass
class RunInfo:
    """What a reporter knows about the run it records."""

    run_id: str
    recipe: "Recipe"
    recipe_hash: str
    source: str
    started: float
    plugins: dict[str, str] = field(default_factory=dict)
    resume: bool = False  # a results store adopts the interrupted run's id on resume


class Reporter(ABC):
    """A results sink opened from a spec such as ``sqlite:PATH``."""

    scheme: ClassVar[str]
    description: ClassVar[str] = ""

    def __init__(self, target: str, run: RunInfo):
        self.target = target
        self.run = run

    def open(self) -> None:
        """Called once before the first frame."""

    @abstractmethod
    def write(self, result: FrameResult) -> None:
        """Record one frame. Called for every frame, including error frames."""

    def close(self) -> None:
        """Flush and close. Called once, also after Ctrl-C or a failure."""

    def flush(self) -> None:
        """Make what was written so far durable and release any write lock (optional). A station
        calls it when it goes idle and at a job changeover, where each job keeps its own open run."""

    def done_keys(self) -> set[str] | None:
        """Keys of frames already stored for this recipe hash (for ``--resume``);
        ``None`` when this reporter cannot resume."""
        return None


# ------------------------------------------------------- training and models


class Cancelled(Exception):
    """Raised inside a long job when its ``Progress`` was cancelled."""


class Progress:
    """Progress sink for long jobs (training, evaluation, optimisation).

    Jobs call ``update`` and ``log``; front-ends (CLI bar, GUI) subclass it.
    ``update`` raises ``Cancelled`` once ``cancel()`` was called.
    """

    def __init__(self) -> None:
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def check(self) -> None:
        if self._cancelled:
            raise Cancelled("cancelled")

    def update(self, stage: str, done: int, total: int, **metrics: float) -> None:
        self.check()
        self.on_update(stage, done, total, metrics)

    def on_update(self, stage: str, done: int, total: int, metrics: dict[str, float]) -> None:
        """Override to show progress."""

    def log(self, message: str) -> None:
        """Override to show messages."""


class Trainer(ABC):
    """Trains a model for one task (``anomaly``, ``classify``) into a bundle."""

    task: ClassVar[str]
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams

    @abstractmethod
    def train(self, data: Path, out: Path, params: BaseModel, progress: Progress) -> "Bundle":
        """Train on ``data``, write a bundle to ``out`` and return it."""

    def make_sample_data(self, out: Path, seed: int = 0) -> Path | None:
        """Optionally write a small sample data set for this task (``loupe demo``); return its folder."""
        return None


class ModelRuntime(ABC):
    """Opens bundles of one task for inference and evaluation (no torch)."""

    task: ClassVar[str]
    description: ClassVar[str] = ""
    _threads: int | None = None  # a count the runtime was built with; else the variable below

    @property
    def threads(self) -> int:
        """ONNX Runtime intra-op threads of the sessions it opens: its own count if it was given one, else
        ``LOUPE_ORT_THREADS``, else 2."""
        if self._threads is not None:
            return self._threads
        try:
            return max(1, int(os.environ.get("LOUPE_ORT_THREADS", "2")))
        except ValueError:
            return 2

    @abstractmethod
    def predictor(self, bundle: "Bundle") -> Callable[[np.ndarray], dict[str, Any]]:
        """Return a callable mapping one image to its prediction (loaded once)."""

    @abstractmethod
    def evaluate(self, bundle: "Bundle", data: Path, out: Path | None, progress: Progress) -> dict[str, Any]:
        """Score the test split of ``data``; write plots to ``out`` when given."""

    # Evaluation split in two, for ``loupe eval --executor`` (optional: a runtime that does not override
    # ``eval_plan`` evaluates only locally). The local ``evaluate`` should use the same three methods, so
    # that a distributed evaluation gives the same result as a local one.

    def eval_plan(self, bundle: "Bundle", data: Path) -> "EvalPlan | None":
        """The test split of ``data`` as small picklable items, each naming its image by path; None when
        this runtime cannot split its evaluation."""
        return None

    def eval_predictor(self, bundle: "Bundle") -> Callable[[Any], dict[str, Any]]:
        """Return a callable (the model loaded once) mapping one item of ``eval_plan`` to a small picklable
        row: the image is read from its path inside the callable, in whatever process runs it."""
        raise NotImplementedError

    def eval_metrics(self, bundle: "Bundle", data: Path, plan: "EvalPlan", rows: list[dict[str, Any]]
                     ) -> dict[str, Any]:
        """The evaluation's result from the rows of every item, in the plan's order (``evaluate``'s JSON)."""
        raise NotImplementedError


@dataclass
class EvalPlan:
    """A test set ready to be predicted anywhere: ``items`` in order; ``state`` is whatever
    ``eval_metrics`` needs besides the rows (the split's name, ...)."""

    items: list[Any]
    state: dict[str, Any] = field(default_factory=dict)


class Optimizer(ABC):
    """Makes a bundle smaller or faster (``int8``, ``fp16``, ``prune``)."""

    method: ClassVar[str]
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams

    @abstractmethod
    def optimize(self, bundle: "Bundle", out: Path, params: BaseModel, progress: Progress) -> "Bundle":
        """Write the optimised bundle to ``out`` and return it."""


class Command(ABC):
    """A ``loupe`` sub-command supplied by a plugin (``dataset``, ``gui``)."""

    name: ClassVar[str]
    help: ClassVar[str] = ""

    @abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        ...

    @abstractmethod
    def run(self, args: argparse.Namespace) -> int:
        ...


# ------------------------------------------------------------------ executors


@dataclass
class ExecutorJob:
    """What ``loupe run --executor`` hands an executor: one run, described, not opened.

    ``source_spec`` / ``source_options`` / ``source_base`` are what ``open_source`` takes;
    ``reporters`` are built but not opened (the executor opens them on the driver, writes
    every frame to them and closes them, as the local runner does).
    """

    recipe: "Recipe"
    source_spec: str
    source_options: dict[str, Any]
    source_base: Path
    reporters: list[Reporter]
    run: RunInfo
    limit: int | None = None
    resume: bool = False
    quiet: bool = False
    #: the command line's ``--engine`` (wins over the recipe's ``engine:`` on every worker)
    engine: str | None = None


@dataclass
class ExecutorSummary:
    """What an executor reports back: counts per verdict, like the local run's summary."""

    run_id: str
    counts: dict[str, int]
    skipped: int = 0
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def frames(self) -> int:
        return sum(self.counts.values())


class Executor(ABC):
    """Runs a recipe over a source on another engine (``ray``), results back on the driver.

    ``name`` is what ``--executor NAME[:ADDRESS]`` picks. The executor must give the
    same verdicts as the local runner frame for frame (it builds the recipe's
    ``host.Pipeline`` in its workers), write every frame to every reporter (error
    frames included), honour ``resume`` through the reporters' ``done_keys()`` and
    stop after ``limit`` frames.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def __init__(self, address: str | None = None, workers: int | None = None):
        self.address = address or None
        self.workers = workers

    @abstractmethod
    def run(self, job: ExecutorJob, pm: Any) -> ExecutorSummary:
        """Run ``job``; ``pm`` is the driver's plugin manager (catalogue, event hooks)."""

    def predict_all(self, task: str, bundle: Path, items: list[Any], progress: Progress,
                    engine: str | None = None) -> list[dict[str, Any]]:
        """``loupe eval --executor``: each worker opens the ``task`` runtime's ``eval_predictor`` on the
        bundle at ``bundle`` once (on ``engine``, None: the worker's default) and maps items to rows; the
        rows come back in the items' order."""
        raise NotImplementedError(f"executor {self.name!r} cannot run evaluations")
