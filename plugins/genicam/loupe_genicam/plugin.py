"""loupe-genicam: registers the ``genicam:`` source and the ``loupe cameras`` command.

harvesters and genicam are imported when a camera is opened or listed, never when
the plugin loads.
"""
from host import hookimpl


@hookimpl
def loupe_acquire(register):
    from .source import GenICamSource

    register(GenICamSource)


@hookimpl
def loupe_commands(register):
    from .cameras import CamerasCommand

    register(CamerasCommand)
