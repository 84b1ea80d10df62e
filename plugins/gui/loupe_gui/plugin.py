"""loupe-gui: registers the ``loupe gui`` command (no Qt import here)."""
from host import hookimpl


@hookimpl
def loupe_commands(register):
    from .command import GuiCommand

    register(GuiCommand)
