"""The operator screen's own process: the HTTP server (uvicorn, FastAPI), the screen's memory of
results (``Hub``), JPEG encoding and the metrics, away from the station's process and its GIL.

Started by ``OperatorScreen.start`` with the ``spawn`` context (the station has threads). Two
pipes tie it to the station: ``events`` brings compact records of the station's events (one way,
read by this process's main thread); ``rpc`` carries the server's calls on the station's control
handle (status, trigger, job select, ...) and their answers, one at a time. The process ends when
the station says so or when the ``events`` pipe closes (the station exited or was killed): no
orphan server outlives its station.
"""
from __future__ import annotations

import logging
import pickle
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from host import StationActionError

log = logging.getLogger("loupe.hmi")


class StationProxy:
    """The station's control handle, seen from the screen's process: each call goes through the
    ``rpc`` pipe to the adapter's thread in the station, which makes it on the real handle."""

    def __init__(self, conn):
        self.conn = conn
        self.lock = threading.Lock()

    def call(self, name: str, *args: Any) -> Any:
        with self.lock:
            self.conn.send((name, args))
            kind, value = self.conn.recv()
        if kind == "ok":
            return value
        if kind == "action":
            raise StationActionError(*value)
        raise RuntimeError(f"station: {value}")

    @property
    def state(self) -> str:
        return self.call("state")

    @property
    def job(self) -> str:
        return self.call("job")

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def describe_job(self, job: str) -> dict[str, Any]:
        return self.call("describe_job", job)

    def trigger(self) -> int:
        return self.call("trigger")

    def acknowledge(self, result_id: int | None = None) -> None:
        return self.call("acknowledge", result_id)

    def reset_counters(self) -> None:
        return self.call("reset_counters")

    def select_job(self, job: str) -> None:
        return self.call("select_job", job)

    def reset(self) -> None:
        return self.call("reset")

    def reload(self) -> None:
        return self.call("reload")


def main(config: dict[str, Any], events, rpc) -> None:
    """The screen process's entry point (``multiprocessing`` spawn target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the station, which closes the pipe
    try:
        server, thread, hub = _start(config, rpc)
    except Exception as exc:  # reported to the station, which raises UsageError naming the adapter
        rpc.send(("error", str(exc) or type(exc).__name__))
        return
    try:
        while True:
            msg = pickle.loads(events.recv_bytes())
            if msg[0] == "x":
                break
            _, hub.records_dropped, batch = msg
            for rec in batch:
                kind = rec[0]
                if kind == "r":
                    hub.add_result(rec)
                elif kind == "f":
                    hub.add_frame(rec[1], rec[2])
                elif kind == "a":
                    hub.add_alarm(rec[1], rec[2], rec[3])
                elif kind == "c":
                    hub.changed(rec[1], rec[2])
    except (EOFError, OSError):
        pass  # the station's process is gone
    finally:
        hub.closing = True
        server.should_exit = True
        thread.join(5)


def _start(config: dict[str, Any], rpc):
    import uvicorn

    from .adapter import ScreenParams
    from .app import build_app
    from .hub import Hub

    params = ScreenParams(**config["params"])
    hub = Hub(params)
    secrets = Path(config["secrets"]) if config["secrets"] else None
    proxy = StationProxy(rpc)
    app = build_app(proxy, hub, params, secrets, config["title"])
    host, port = config["host"], config["port"]
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"cannot listen: {exc}") from None
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="loupe-hmi-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.01)
    if not server.started:
        raise RuntimeError("the operator screen's server did not start")
    with proxy.lock:  # before any call of the server's on the same pipe
        rpc.send(("ready", sock.getsockname()[1]))
    return server, thread, hub
