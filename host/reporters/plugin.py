"""Built-in plugin: the host's reporters, registered like any external plugin."""
from host import hookimpl

from .files import CsvReporter, JsonlReporter
from .html import HtmlReporter
from .sqlite import SqliteReporter


@hookimpl
def loupe_report(register):
    for cls in (JsonlReporter, CsvReporter, SqliteReporter, HtmlReporter):
        register(cls)
