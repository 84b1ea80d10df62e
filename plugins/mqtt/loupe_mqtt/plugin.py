"""loupe-mqtt: registers the ``mqtt://HOST:PORT/TOPIC`` report spec and line adapter.

paho-mqtt is imported when a reporter opens, not when the plugin loads.
"""
from host import hookimpl


@hookimpl
def loupe_report(register):
    from .reporter import MqttReporter

    register(MqttReporter)


@hookimpl
def loupe_line_adapter(register):
    from .adapter import MqttLineAdapter

    register(MqttLineAdapter)
