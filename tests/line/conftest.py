"""Fixtures for the line tests: a real station (classical recipes on rendered images), real sockets."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from line_support import (EXAMPLE, HERE, ROOT, SERVE_ENV, Client, Served, loupe_exe,  # noqa: E402,F401
                          write_images, write_station)


@pytest.fixture
def line_pm():
    """The host built-ins, loupe-classical and loupe-line (autoload off)."""
    from host import create_plugin_manager
    import loupe_classical.plugin as classical
    import loupe_line.plugin as line

    pm = create_plugin_manager(autoload=False)
    pm.register_plugin(classical, name="classical", distribution="loupe-classical")
    pm.register_plugin(line, name="line", distribution="loupe-line")
    pm.check_pending()
    return pm


@pytest.fixture
def station_file(tmp_path) -> Path:
    return write_station(tmp_path)


@pytest.fixture
def make_station(line_pm):
    """``make_station(path, **overrides)`` loads and starts a station; closed at teardown."""
    from host.core.station import Station, load_station

    started = []

    def make(path, **kw):
        cfg = load_station(path, line_pm.catalogue, **kw)
        st = Station(cfg, line_pm)
        st.start()
        started.append(st)
        return st

    yield make
    for st in started:
        st.close()


@pytest.fixture
def serve():
    procs: list[Served] = []

    def start(station: Path, *args: str) -> Served:
        s = Served(station, *args)
        procs.append(s)
        return s

    yield start
    for s in procs:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
