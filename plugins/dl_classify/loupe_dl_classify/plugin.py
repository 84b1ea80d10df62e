"""loupe-dl-classify: registers the ``classify.cnn`` inspect tool and the ``classify`` model runtime.

Only onnxruntime, numpy and OpenCV at run time (never torch); they are imported
when a tool is built, not when the plugin loads.
"""
from host import hookimpl


@hookimpl
def loupe_inspect(register):
    from .tool import ClassifyTool

    register(ClassifyTool)


@hookimpl
def loupe_model_runtime(register):
    from .tool import ClassifyRuntime

    register(ClassifyRuntime)
