"""loupe-classical: registers the OpenCV sources, preprocessing and inspection tools.

Imports happen inside the hooks, so ``loupe plugins`` and recipe-free commands stay fast.
"""
from host import hookimpl


@hookimpl
def loupe_acquire(register):
    from .sources import CameraSource, FolderSource, VideoSource

    for cls in (FolderSource, VideoSource, CameraSource):
        register(cls)


@hookimpl
def loupe_preprocess(register):
    from .tools.preprocess import PREPROCESS_TOOLS

    for cls in PREPROCESS_TOOLS:
        register(cls)


@hookimpl
def loupe_inspect(register):
    from .tools import INSPECT_TOOLS

    for cls in INSPECT_TOOLS():
        register(cls)
