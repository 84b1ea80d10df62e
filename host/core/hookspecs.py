"""Hook specifications: everything the host knows of plugins comes through these.

Calling styles, chosen on purpose:

* **Registration hooks** (``loupe_acquire``, ``loupe_preprocess``,
  ``loupe_inspect``, ``loupe_train``, ``loupe_report`` and the extras below
  them) are called *once*, when the catalogue is built from a plugin manager.
  Each gets a ``register`` callback and calls it with the classes it
  contributes. The union of registrations is the catalogue; recipes pick tools
  from it by id, so no hook is ever broadcast per frame to tool plugins.
* **Event hooks** (``loupe_before_run``, ``loupe_after_frame``,
  ``loupe_after_run``, ``loupe_on_step_error``) are broadcast to every plugin
  so it can observe a run. Their return values are ignored.

All hooks are called with keyword arguments only; an implementation may accept
any subset of the arguments (pluggy's opt-in arguments). Specs only ever grow
by adding arguments.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from .contracts import (Command, Executor, ModelRuntime, Optimizer, Reporter, RunInfo, Source, Tool,
                            Trainer)
    from .line import LineAdapter
    from .types import FrameResult

hookspec = pluggy.HookspecMarker("loupe")

# -------------------------------------------------------------------------
# acquire
# -------------------------------------------------------------------------


@hookspec
def loupe_acquire(register: "Callable[[type[Source]], None]") -> None:
    """Register image source kinds.

    Called once per plugin manager, when the catalogue is built.

    :param register: call it with each ``host.Source`` subclass this plugin
        provides. The class's ``scheme`` (``folder``, ``video``, ``camera``) is
        the prefix of a source spec (``folder:PATH``); a scheme registered twice
        is an error naming both plugins.

    The return value is ignored. Must not open devices or files: a source is
    opened only when a run starts.
    """


# -------------------------------------------------------------------------
# preprocess
# -------------------------------------------------------------------------


@hookspec
def loupe_preprocess(register: "Callable[[type[Tool]], None]") -> None:
    """Register preprocessing tools (image in, image out).

    Called once per plugin manager, when the catalogue is built.

    :param register: call it with each ``host.PreprocessTool`` subclass. Its
        ``id`` must be namespaced by the plugin (``classical.blur``) and unique
        across all plugins; its ``Params`` pydantic model validates the recipe's
        ``params`` mapping.

    The return value is ignored. Must not load models or allocate per-run state:
    tools are instantiated once per run, by the runner.
    """


# -------------------------------------------------------------------------
# inspect
# -------------------------------------------------------------------------


@hookspec
def loupe_inspect(register: "Callable[[type[Tool]], None]") -> None:
    """Register inspection tools (image in, measurements, overlays, heatmap out).

    Called once per plugin manager, when the catalogue is built.

    :param register: call it with each ``host.InspectTool`` subclass. Its
        ``id`` is namespaced (``classical.blob``, ``anomaly.patchcore``), its
        ``measurements`` mapping names what recipes may put limits on.

    The return value is ignored. Must not import heavy libraries at module
    import time or load models here: that happens when the tool is built.
    """


@hookspec
def loupe_model_runtime(register: "Callable[[type[ModelRuntime]], None]") -> None:
    """Register runtimes that open model bundles of one task for inference.

    Called once per plugin manager, when the catalogue is built. ``loupe eval``
    and ``loupe bench`` pick the runtime whose ``task`` matches the bundle's
    metadata.

    :param register: call it with each ``host.ModelRuntime`` subclass.

    The return value is ignored. A runtime must not import torch.
    """


# -------------------------------------------------------------------------
# train
# -------------------------------------------------------------------------


@hookspec
def loupe_train(register: "Callable[[type[Trainer]], None]") -> None:
    """Register trainers, one per task (``anomaly``, ``classify``).

    Called once per plugin manager, when the catalogue is built.
    ``loupe train TASK DATA --out BUNDLE`` picks the trainer by ``task`` and
    turns the trainer's ``Params`` fields into command-line options.

    :param register: call it with each ``host.Trainer`` subclass.

    The return value is ignored. Must not import torch at registration time.
    """


@hookspec
def loupe_optimize(register: "Callable[[type[Optimizer]], None]") -> None:
    """Register bundle optimisation methods (``int8``, ``fp16``, ``prune``).

    Called once per plugin manager, when the catalogue is built.
    ``loupe optimize BUNDLE --method M`` picks the optimiser by ``method``.

    :param register: call it with each ``host.Optimizer`` subclass.

    The return value is ignored.
    """


# -------------------------------------------------------------------------
# report
# -------------------------------------------------------------------------


@hookspec
def loupe_report(register: "Callable[[type[Reporter]], None]") -> None:
    """Register reporter kinds (``jsonl``, ``csv``, ``sqlite``, ``html``, ...).

    Called once per plugin manager, when the catalogue is built. A report spec
    ``SCHEME:TARGET`` picks the reporter by ``scheme``.

    :param register: call it with each ``host.Reporter`` subclass.

    The return value is ignored. Must not open files: reporters are opened when
    a run starts and closed when it ends.
    """


# -------------------------------------------------------------------------
# execute (runs spread over many processes or machines)
# -------------------------------------------------------------------------


@hookspec
def loupe_executor(register: "Callable[[type[Executor]], None]") -> None:
    """Register executors: engines that run a recipe over a source elsewhere (``ray``).

    Called once per plugin manager, when the catalogue is built.
    ``loupe run RECIPE --executor NAME[:ADDRESS] [--workers N]`` picks the
    executor by ``name``; without ``--executor`` the local runner is used.

    :param register: call it with each ``host.Executor`` subclass.

    The return value is ignored. Must not start or join a cluster at
    registration time: an executor connects in ``Executor.run``.
    """


# -------------------------------------------------------------------------
# command line
# -------------------------------------------------------------------------


@hookspec
def loupe_commands(register: "Callable[[type[Command]], None]") -> None:
    """Register extra ``loupe`` sub-commands (``dataset``, ``gui``).

    Called once when the command line is built. The host's own command names
    (``plugins``, ``tools``, ``validate``, ``run``, ``train``, ``eval``,
    ``optimize``, and ``bench``, ``demo``, ``bundle``, which the host registers
    through this hook itself) cannot be taken: a plugin that registers one is
    marked FAILED and left out. ``args.plugin_manager`` is set when ``run`` is
    called.

    :param register: call it with each ``host.Command`` subclass.

    The return value is ignored. Keep imports inside ``Command.run``.
    """


# -------------------------------------------------------------------------
# events
# -------------------------------------------------------------------------


@hookspec
def loupe_before_run(run: "RunInfo") -> None:
    """Broadcast once when a run starts, after steps are built and reporters opened.

    :param run: the run's id, recipe, recipe hash and source spec.

    The return value is ignored. Must not modify the recipe.
    """


@hookspec
def loupe_after_frame(run: "RunInfo", result: "FrameResult") -> None:
    """Broadcast after each frame has been written to the reporters.

    :param run: the current run.
    :param result: the frame's result (verdict, tool results, timings).

    The return value is ignored. Runs on the per-frame path: keep it cheap,
    and must not modify ``result``. The runner skips the broadcast when no
    plugin implements this hook.
    """


@hookspec
def loupe_on_step_error(run: "RunInfo", step: str, key: str, error: BaseException) -> None:
    """Broadcast when a step raises on a frame (the frame gets an ``error`` verdict).

    :param run: the current run.
    :param step: the name of the failing step.
    :param key: the frame's key (file path or ``source#index``).
    :param error: the exception.

    The return value is ignored. Must not raise.
    """


@hookspec
def loupe_after_run(run: "RunInfo", counts: "dict[str, int]", interrupted: bool) -> None:
    """Broadcast once when a run ends, after the reporters were closed.

    :param run: the finished run.
    :param counts: frames per verdict (``pass``, ``review``, ``fail``, ``error``).
    :param interrupted: true when the run was stopped by Ctrl-C (or SIGTERM)
        before its source was exhausted.

    The return value is ignored.
    """


# -------------------------------------------------------------------------
# line (stations: ``loupe serve``)
# -------------------------------------------------------------------------


@hookspec
def loupe_line_adapter(register: "Callable[[type[LineAdapter]], None]") -> None:
    """Register line adapters: the station's links to PLCs, buses and screens.

    Called once per plugin manager, when the catalogue is built. An adapter spec
    in a station's ``io`` list (``opcua://127.0.0.1:4840``, ``modbus://0.0.0.0:5020``,
    ``tcp://127.0.0.1:2000``, ``mqtt://broker:1883/plant/line1``) picks the adapter
    class by its ``scheme``; the operator screen registers one too.

    :param register: call it with each ``host.LineAdapter`` subclass. A scheme
        registered twice is an error naming both plugins.

    The return value is ignored. Must not open sockets: an adapter is started by
    the station (``LineAdapter.start``) once every job's pipeline is built, and it
    acts only through the ``host.StationControl`` handle it is given, never by
    calling the runner. Events reach it through its own bounded queue on its own
    thread (``LineAdapter.on_event``), so a slow or disconnected client never
    delays inspection; events that overflow that queue are counted, not waited on.
    """
