"""loupe-line: hook implementations (one line per adapter; imports stay cheap)."""
from host import hookimpl


@hookimpl
def loupe_line_adapter(register):
    from .tcp import TcpAdapter

    register(TcpAdapter)
    from .modbus import ModbusAdapter  # noqa: E402 (loupe-line: Modbus TCP, h12b)
    from .opcua import OpcUaAdapter  # noqa: E402 (loupe-line: OPC UA, h12b)

    register(ModbusAdapter)
    register(OpcUaAdapter)


@hookimpl
def loupe_commands(register):
    from .plc import LineCommand

    register(LineCommand)
