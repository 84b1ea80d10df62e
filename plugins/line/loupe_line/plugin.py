"""loupe-line: hook implementations (one line per adapter; imports stay cheap)."""
from host import hookimpl


@hookimpl
def loupe_line_adapter(register):
    from .tcp import TcpAdapter

    register(TcpAdapter)


@hookimpl
def loupe_commands(register):
    from .plc import LineCommand

    register(LineCommand)
