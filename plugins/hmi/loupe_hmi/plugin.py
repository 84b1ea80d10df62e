"""loupe-hmi: registers the ``http`` line adapter (the operator screen) and ``loupe hmi`` (users, tokens).

FastAPI, uvicorn and OpenCV are imported when a station starts the screen, not when the plugin loads.
"""
from host import hookimpl


@hookimpl
def loupe_line_adapter(register):
    from .adapter import OperatorScreen

    register(OperatorScreen)


@hookimpl
def loupe_commands(register):
    from .command import HmiCommand

    register(HmiCommand)
