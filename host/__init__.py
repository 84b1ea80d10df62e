"""Loupe host: hook specs, plugin manager, recipes, runner and results store.

Plugins import what they need from here::

    from host import hookimpl, InspectTool, ToolOutput, Params
"""
import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("loupe")

from .core.bundle import Bundle, model_sha256, write_bundle  # noqa: E402
from .core.contracts import (Cancelled, Command, InspectTool, ModelRuntime, NoParams, Optimizer,  # noqa: E402
                             Params, PreprocessTool, Progress, Reporter, RunInfo, Source, SourceParams,
                             StepContext, Trainer)
from .core.errors import (BundleError, LoupeError, PluginError, RecipeError, StationActionError,  # noqa: E402
                          UsageError)
from .core.line import (LineAdapter, StationControl, StationEvent, StationResult)  # noqa: E402
from .core.manager import create_plugin_manager  # noqa: E402
from .core.recipe import Limit, ModelRef, Recipe  # noqa: E402
from .core.types import (ERROR, FAIL, PASS, REVIEW, Frame, FrameResult, LazyShapes, Shape, ToolOutput,  # noqa: E402
                         ToolResult)

__all__ = [
    "hookimpl", "__version__", "Bundle", "model_sha256", "write_bundle", "Cancelled", "Command", "InspectTool",
    "ModelRuntime", "NoParams", "Optimizer", "Params", "PreprocessTool", "Progress", "Reporter", "RunInfo",
    "Source", "SourceParams", "StepContext", "Trainer", "BundleError", "LoupeError", "PluginError",
    "RecipeError", "UsageError", "create_plugin_manager", "Limit", "ModelRef", "Recipe", "ERROR", "FAIL",
    "PASS", "REVIEW", "Frame", "FrameResult", "LazyShapes", "Shape", "ToolOutput", "ToolResult",
    "LineAdapter", "StationControl", "StationEvent", "StationResult", "StationActionError",
]

# colour rules shared by every drawing of results (HTML report, eval reports, the desktop app)
from .reporters.imaging import (CONFUSION_PASS_AT, CONFUSION_REVIEW_AT, VERDICT_COLOURS,  # noqa: E402
                                confusion_style, overlay_status, resolved_overlays)

__all__ += ["CONFUSION_PASS_AT", "CONFUSION_REVIEW_AT", "VERDICT_COLOURS", "confusion_style", "overlay_status",
            "resolved_overlays"]

# executors (``loupe run --executor``): the contract, and the pipeline a worker builds once
from .core.contracts import Executor, ExecutorJob, ExecutorSummary  # noqa: E402
from .core.runner import Pipeline  # noqa: E402

__all__ += ["Executor", "ExecutorJob", "ExecutorSummary", "Pipeline"]
