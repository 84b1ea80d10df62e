"""loupe-classical: registers the OpenCV sources, preprocessing and inspection tools."""
from host import hookimpl


@hookimpl
def loupe_acquire(register):
    from .sources import FolderSource

    register(FolderSource)


@hookimpl
def loupe_preprocess(register):
    from .tools.preprocess import Gray

    register(Gray)


@hookimpl
def loupe_inspect(register):
    from .tools.intensity import Intensity

    register(Intensity)
