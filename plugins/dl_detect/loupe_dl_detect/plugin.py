"""loupe-dl-detect: registers the ``detect.objects`` inspect tool and the ``detect`` model runtime.

Only onnxruntime, numpy and OpenCV at run time (never torch); they are imported
when a tool is built, not when the plugin loads.
"""
from host import hookimpl


@hookimpl
def loupe_inspect(register):
    from .tool import DetectTool

    register(DetectTool)


@hookimpl
def loupe_model_runtime(register):
    from .tool import DetectRuntime

    register(DetectRuntime)
