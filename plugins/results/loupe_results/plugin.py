"""loupe-results: registers the ``loupe results`` command (summary, export, spc, migrate).

numpy, matplotlib, pyarrow and psycopg are imported when a sub-command runs, not when the plugin loads.
"""
from host import hookimpl


@hookimpl
def loupe_commands(register):
    from .command import ResultsCommand

    register(ResultsCommand)
