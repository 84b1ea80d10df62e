"""The one place that builds ONNX Runtime inference sessions.

Every plugin that runs an ONNX graph (the inference runtimes, the trainer's
export checks and optimisers) calls ``create_session``, so session settings and
engines are chosen here once. ``onnxruntime`` is imported only when a session is
first built: the host itself does not depend on it (the inference plugins do).

Graphs whose weights live in ONNX external-data files are refused (a bundle's
manifest pins the ``.onnx`` file only, and ONNX Runtime follows any location a
graph names, even outside the bundle).

Engines: ``cpu`` (ONNX Runtime's CPU provider) today. The ``engine`` argument is
the extension point for the others (``openvino``, ``cuda``, ``tensorrt``,
``auto``): each maps to a list of execution providers in ``_providers``; callers
pass ``engine=...`` through and never name providers themselves.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BundleError, UsageError

#: engine name -> ONNX Runtime execution providers, in order of preference
ENGINES: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
}

#: "all" (every graph optimisation, the default), "basic" or "none"
_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
           "none": "ORT_DISABLE_ALL"}


@dataclass(frozen=True)
class SessionOptions:
    """How a session is built. ``threads``: intra-op threads (one inter-op thread, sequential
    execution: Loupe runs one image at a time per step). ``optimization``: the graph
    optimisation level (``all``, ``extended``, ``basic``, ``none``). ``engine``: see the
    module docstring."""

    threads: int = 2
    engine: str = "cpu"
    optimization: str = "all"


def available_engines() -> list[str]:
    """The engines whose providers this onnxruntime build has (empty when onnxruntime is missing)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    have = set(ort.get_available_providers())
    return [name for name, providers in ENGINES.items() if set(providers) <= have]


def _providers(engine: str) -> list[str]:
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; this Loupe runs {', '.join(sorted(ENGINES))}")
    return list(ENGINES[engine])


def create_session(model: str | Path | bytes, threads: int | None = None, *, engine: str | None = None,
                   optimization: str | None = None, options: SessionOptions | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model`` (a file path or the serialised graph).

    ``threads``, ``engine`` and ``optimization`` override ``options`` (default
    ``SessionOptions()``). Raises ``UsageError`` for an unknown engine, ``BundleError``
    naming the file when the graph cannot be opened, and ``ImportError`` with an
    install hint when onnxruntime is not installed.
    """
    opts = options or SessionOptions()
    threads = opts.threads if threads is None else threads
    engine = opts.engine if engine is None else engine
    level = opts.optimization if optimization is None else optimization
    providers = _providers(engine)
    if level not in _LEVELS:
        raise UsageError(f"unknown graph optimisation level {level!r} ({', '.join(_LEVELS)})")
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - every inference plugin depends on it
        raise ImportError("ONNX Runtime is needed to run models: pip install onnxruntime") from exc
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
    so.log_severity_level = 3  # ORT's notes on unused initializers are not the user's business
    what = "the serialised ONNX graph" if isinstance(model, bytes) else str(model)
    if isinstance(model, bytes):
        data = model
    else:
        try:
            data = Path(model).read_bytes()
        except OSError as exc:
            raise BundleError(f"{model}: cannot read the ONNX graph: {exc.strerror or exc}") from None
    # Weights in external data files are refused: a bundle's manifest pins the graph file, and
    # ONNX Runtime would follow any location the graph names (even outside the bundle). The graph
    # is opened from its bytes with an empty folder for external data, so no such file is found.
    with tempfile.TemporaryDirectory(prefix="loupe-no-external-data-") as empty:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", empty)
        try:
            return ort.InferenceSession(data, so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            text = str(exc)
            if "xternal data" in text:
                raise BundleError(f"{what}: the graph keeps its weights in external data files, which Loupe "
                                  f"refuses (no manifest covers them); save the model with its weights inside "
                                  f"the .onnx file") from None
            raise BundleError(f"{what}: cannot open the ONNX graph: {text}") from None
