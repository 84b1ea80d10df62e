"""loupe-postgres: registers the ``postgresql://USER@HOST:PORT/DB`` report spec.

psycopg is imported when a store is opened, not when the plugin loads.
"""
from host import hookimpl


@hookimpl
def loupe_report(register):
    from .reporter import PostgresReporter

    register(PostgresReporter)
