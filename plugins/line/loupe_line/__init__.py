"""loupe-line: line adapters for ``loupe serve`` stations, and ``loupe line plc``, a simulated PLC."""
__version__ = "0.1.0"
