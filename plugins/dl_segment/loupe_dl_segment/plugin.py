"""loupe-dl-segment: registers the ``segment.defects`` inspect tool and the ``segment`` model runtime.

Only onnxruntime, numpy and OpenCV at run time (never torch); they are imported
when a tool is built, not when the plugin loads.
"""
from host import hookimpl


@hookimpl
def loupe_inspect(register):
    from .tool import SegmentTool

    register(SegmentTool)


@hookimpl
def loupe_model_runtime(register):
    from .tool import SegmentRuntime

    register(SegmentRuntime)
