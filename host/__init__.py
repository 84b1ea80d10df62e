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
from .core.errors import (BundleError, DataError, LoupeError, PluginError, RecipeError,  # noqa: E402
                          StationActionError, UsageError)
from .core.line import (LineAdapter, StationControl, StationEvent, StationResult)  # noqa: E402
from .core.manager import create_plugin_manager  # noqa: E402
from .core.recipe import Limit, ModelRef, Recipe  # noqa: E402
from .core.types import (ERROR, FAIL, PASS, REVIEW, Frame, FrameResult, LazyShapes, Shape, ToolOutput,  # noqa: E402
                         ToolResult)

__all__ = [
    "hookimpl", "__version__", "Bundle", "model_sha256", "write_bundle", "Cancelled", "Command", "InspectTool",
    "ModelRuntime", "NoParams", "Optimizer", "Params", "PreprocessTool", "Progress", "Reporter", "RunInfo",
    "Source", "SourceParams", "StepContext", "Trainer", "BundleError", "DataError", "LoupeError", "PluginError",
    "RecipeError", "UsageError", "create_plugin_manager", "Limit", "ModelRef", "Recipe", "ERROR", "FAIL",
    "PASS", "REVIEW", "Frame", "FrameResult", "LazyShapes", "Shape", "ToolOutput", "ToolResult",
    "LineAdapter", "StationControl", "StationEvent", "StationResult", "StationActionError",
]

# recipes' budgets and located problems, bundle metadata, ONNX Runtime sessions
from .core.bundle import PARITY_IMAGES, BundleMeta, ModelInput, Normalisation, read_bundle_meta  # noqa: E402
from .core.errors import RecipeProblem  # noqa: E402
from .core.recipe import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, check_image_size  # noqa: E402
from .core.safeyaml import YamlBudgetError, load_yaml  # noqa: E402
from .core.sessions import (ENGINE_CHOICES, SessionOptions, available_engines, create_session,  # noqa: E402
                            engine_status, resolve_engine, set_engine_override)
from .core.sessions import eval_batch  # noqa: E402  (loupe eval --batch)

__all__ += ["PARITY_IMAGES", "BundleMeta", "ModelInput", "Normalisation", "read_bundle_meta", "RecipeProblem", "MAX_IMAGE_PIXELS",
            "MAX_IMAGE_SIDE", "check_image_size", "YamlBudgetError", "load_yaml", "SessionOptions",
            "available_engines", "create_session", "eval_batch", "ENGINE_CHOICES", "engine_status", "resolve_engine",
            "set_engine_override"]
# colour rules shared by every drawing of results (HTML report, eval reports, the desktop app)
from .reporters.imaging import (CONFUSION_PASS_AT, CONFUSION_REVIEW_AT, VERDICT_COLOURS,  # noqa: E402
                                confusion_style, overlay_status, resolved_overlays)

__all__ += ["CONFUSION_PASS_AT", "CONFUSION_REVIEW_AT", "VERDICT_COLOURS", "confusion_style", "overlay_status",
            "resolved_overlays"]
# every chart's drawing (matplotlib, imported only when a chart is drawn): `from host import charts`
from .reporters import charts  # noqa: E402

__all__ += ["charts"]
# the one image reader: numpy only; a plugin registers the decoder (OpenCV's imdecode)
from .core.imageio import (IMAGE_EXTENSIONS, decode_image, is_image_file, read_data_image,  # noqa: E402
                           read_image, register_image_decoder, register_rgb_converter, to_rgb8, use_opencv)

__all__ += ["IMAGE_EXTENSIONS", "decode_image", "is_image_file", "read_data_image", "read_image",
            "register_image_decoder",
            "register_rgb_converter", "to_rgb8", "use_opencv"]

# executors (``loupe run --executor``): the contract, and the pipeline a worker builds once
from .core.contracts import Executor, ExecutorJob, ExecutorSummary  # noqa: E402
from .core.runner import Pipeline  # noqa: E402

__all__ += ["Executor", "ExecutorJob", "ExecutorSummary", "Pipeline"]
from .core.contracts import EvalPlan  # noqa: E402  (loupe eval --executor)

__all__ += ["EvalPlan"]

# statistical process control (individuals/MR, X-bar/R, Western Electric rules, Cp/Cpk): numpy only
from .core import spc  # noqa: E402

__all__ += ["spc"]

# what the desktop app and the screenshots build on (issue 10): sources, reporters and runs, the station,
# and the image helpers of the reports; plugins import these from here, never from host.core/host.reporters
from .core.recipe import SourceDoc  # noqa: E402
from .core.runner import new_run_info, open_reporter, open_source, run_recipe  # noqa: E402
from .core.station import Station, load_station  # noqa: E402
from .reporters.imaging import blend_heatmap, colormap, thumbnail, to_uint8  # noqa: E402

__all__ += ["SourceDoc", "new_run_info", "open_reporter", "open_source", "run_recipe", "Station", "load_station",
            "blend_heatmap", "colormap", "thumbnail", "to_uint8"]

# model input preparation (issue 10): resize, normalise, NCHW RGB; the resizer is injected (use_opencv)
from .core.imageio import (DEFAULT_NORMALISATION, normalise, prepare_images, register_resizer,  # noqa: E402
                           resize_mask, resize_to)

__all__ += ["DEFAULT_NORMALISATION", "normalise", "prepare_images", "register_resizer", "resize_mask", "resize_to"]
