"""The host's own commands, registered like any plugin's (see ``DEFAULT_PLUGINS``)."""
from __future__ import annotations

from .. import hookimpl


@hookimpl
def loupe_commands(register):
    from .bench import BenchCommand
    from .bundle import BundleCommand
    from .demo import DemoCommand

    register(BenchCommand)
    register(DemoCommand)
    register(BundleCommand)
