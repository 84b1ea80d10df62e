"""Line adapters in a process of their own (``io: [{spec: modbus://0.0.0.0:502, process: own}]``).

A protocol server written in Python (pymodbus, asyncua) serves each poll and request of its clients
holding the interpreter's lock. Inside the station's process that work takes the lock from the
inspection thread: a PLC polling the Modbus status inputs every half millisecond made each inspection
2.5-5x slower than the bare pipeline (notes/issue-12.md, sessions 10 and 11).

With ``process: own`` the station starts the adapter in a child process (``ProcessAdapter``, below).
The adapter there gets a ``RemoteControl``: actions (a trigger, an acknowledgement, a job change) go to
the station over a socket pair and come back with the station's answer; reads (the state, the job, the
recent results, ``wait_result``) are answered from the child's own copy, which the station's events
keep current. So the station's process does nothing per poll of a client, only per action and per
event; and a client that floods the adapter with requests slows the adapter's process, not the
inspection.

Messages are pickled tuples over an ``AF_UNIX`` ``SOCK_SEQPACKET`` pair, which keeps message
boundaries: the station sends an event with one non-blocking ``send``, which passes whole or not at
all (then the event is counted as dropped, as for any adapter whose queue is full).

    station -> adapter   ("init", dict) ("event", StationEvent) ("reply", id, ok, value) ("stop",)
    adapter -> station   ("started", endpoint) ("failed", message) ("call", id, name, args) ("tell", name, args)

The adapter's process ignores SIGINT and SIGTERM (a Ctrl-C reaches the whole process group): it stops
when the station says so, or when the station's end of the socket closes (the station died). If it
exits on its own, the station raises an alarm and starts it again.
"""
from __future__ import annotations

import collections
import dataclasses
import importlib
import itertools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .errors import StationActionError
from .line import (RESULT_ACKNOWLEDGED, RESULT_READY, LineAdapter, StationControl, StationEvent,
                   StationResult)

log = logging.getLogger("loupe.station.process")

MAX_MESSAGE = 1 << 20   # the socket buffers' size: no message is larger
#: the station's actions and reads an adapter's process may call (nothing else is run)
CALLS = frozenset({"trigger", "start_continuous", "stop_continuous", "select_job", "acknowledge", "reset",
                   "reload", "reset_counters", "status", "describe_job", "result"})
#: calls that may take long (a reload builds pipelines): run on a thread of their own, so a trigger
#: sent meanwhile is not held up behind them
SLOW_CALLS = frozenset({"reload", "select_job", "stop_continuous", "reset"})
TELLS = frozenset({"set_adapter_connected"})
START_TIMEOUT_S = 30.0
CHILD = "import sys; from host.core.line_process import child_main; sys.exit(child_main(int(sys.argv[1])))"
RESTART_DELAY_S = 1.0
MAX_UNACKED = 100_000  # the largest result buffer a station file may ask for


class _Receiver:
    """Whole messages from a SOCK_SEQPACKET socket into one reused buffer (a fresh megabyte per ``recv``
    would cost an allocation and its page faults per event); ``None`` at EOF."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray(MAX_MESSAGE)
        self.view = memoryview(self.buf)

    def __call__(self) -> Any:
        n = self.sock.recv_into(self.buf)
        return pickle.loads(self.view[:n]) if n else None


def _light(result: StationResult | None) -> StationResult | None:
    return result if result is None or result.frame is None else dataclasses.replace(result, frame=None)


def _socket_pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):  # room for a burst of events (a buffer's worth of results at once)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return a, b


# ------------------------------------------------------------------ the station's side


class ProcessAdapter(LineAdapter):
    """Runs another line adapter (``cls``) in a child process and relays between it and the station."""

    direct_events = True  # on_event is one non-blocking send

    def __init__(self, spec: str, cls: type[LineAdapter], target: str, params, control: StationControl):
        super().__init__(target, params, control)
        self.spec = spec
        self.cls = cls
        self.scheme = cls.scheme
        self.queue_size = cls.queue_size
        self._endpoint = f"{cls.scheme}:{target}"
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failed: str | None = None
        self._closing = False
        self._up = False      # started once: from then on, a process that ends on its own is started again
        self.restarts = 0

    @property
    def endpoint(self) -> str:
        return self._endpoint

    @property
    def pid(self) -> int | None:
        """The adapter's process (a new one after a restart)."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        self._spawn()
        self._thread = threading.Thread(target=self._supervise, name=f"loupe-process-{self.spec}", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            self.close()
            raise OSError(f"the adapter's process did not start within {START_TIMEOUT_S:.0f} s")
        if self._failed is not None:
            message = self._failed
            self.close()
            raise OSError(message)
        self._up = True

    def _spawn(self) -> None:
        ours, theirs = _socket_pair()
        c = self.control
        last = c.last_result()
        recent = []
        if last is not None:  # the results the station still holds: the buffer and its recent history
            for rid in range(max(1, last.result_id - 1023), last.result_id + 1):
                r = c.result(rid)
                if r is not None:
                    recent.append(_light(r))
        init = {"cls": f"{self.cls.__module__}:{self.cls.__qualname__}", "spec": self.spec, "target": self.target,
                "params": self.params.model_dump(mode="json"), "state": c.state, "job": c.job, "jobs": c.jobs,
                "base_dir": str(c.base_dir), "recent": recent, "floor": last.result_id if last else 0,
                "log_level": logging.getLogger().getEffectiveLevel()}
        self._started.clear()
        self._failed = None
        try:
            self._proc = subprocess.Popen([sys.executable, "-c", CHILD, str(theirs.fileno())],
                                          pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        ours.sendall(pickle.dumps(("init", init), protocol=pickle.HIGHEST_PROTOCOL))
        self._sock = ours
        # results published between the snapshot and now went to no socket (a restart): send them now
        now = c.last_result()
        for rid in range(init["floor"] + 1, now.result_id + 1 if now is not None else 0):
            r = c.result(rid)
            if r is not None:
                self.on_event(StationEvent(RESULT_READY, c.state, c.job, time.time(), _light(r)))

    def _supervise(self) -> None:
        """Serve the adapter's calls until its process ends; start it again if it ended on its own."""
        delay = RESTART_DELAY_S
        while True:
            sock = self._sock
            self._serve(sock)
            code = self._proc.wait() if self._proc is not None else None
            if self._closing or not self._up:
                self._started.set()
                return
            sock.close()
            self.restarts += 1
            why = f"failed to start: {self._failed}" if self._failed else f"exited (code {code})"
            log.error("line adapter %s: its process %s; starting it again in %.0f s", self.spec, why, delay)
            self._report(False, f"the adapter's process {why}; restarting it")
            time.sleep(delay)
            delay = min(2 * delay, 30.0) if self._failed else RESTART_DELAY_S
            if self._closing:
                return
            try:
                self._spawn()
            except OSError as exc:
                log.error("line adapter %s: cannot start its process again: %s", self.spec, exc)
                self._report(False, f"cannot start the adapter's process again: {exc}")
                return

    def _report(self, connected: bool, detail: str) -> None:
        try:
            self.control.set_adapter_connected(self.spec, connected, detail)
        except Exception:  # noqa: BLE001
            pass

    def _serve(self, sock: socket.socket) -> None:
        receive = _Receiver(sock)
        while True:
            try:
                msg = receive()
            except OSError:
                return
            if msg is None:
                return
            kind = msg[0]
            if kind == "call":
                _, cid, name, args = msg
                if name in SLOW_CALLS:
                    threading.Thread(target=self._call, args=(sock, cid, name, args), daemon=True,
                                     name=f"loupe-process-{name}").start()
                else:
                    self._call(sock, cid, name, args)
            elif kind == "tell" and msg[1] in TELLS:
                try:
                    getattr(self.control, msg[1])(*msg[2])
                except Exception:  # noqa: BLE001
                    log.exception("line adapter %s: %s failed", self.spec, msg[1])
            elif kind == "started":
                self._endpoint = msg[1]
                self._started.set()
            elif kind == "failed":
                self._failed = msg[1]
                self._started.set()

    def _call(self, sock: socket.socket, cid: int, name: str, args: tuple) -> None:
        try:
            if name not in CALLS:
                raise AttributeError(f"{name} is not a station action")
            value = getattr(self.control, name)(*args)
            if isinstance(value, StationResult):
                value = _light(value)
            reply = ("reply", cid, True, value)
        except StationActionError as exc:
            reply = ("reply", cid, False, ("action", exc.code, str(exc)))
        except Exception as exc:  # noqa: BLE001 - the adapter's caller gets it
            reply = ("reply", cid, False, ("error", type(exc).__name__, str(exc)))
        try:
            sock.sendall(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            pass  # the process is gone

    def on_event(self, event: StationEvent) -> bool:
        sock = self._sock
        if sock is None:
            return False
        if event.result is not None and event.result.frame is not None:
            event = dataclasses.replace(event, result=_light(event.result))
        try:
            sock.send(pickle.dumps(("event", event), protocol=pickle.HIGHEST_PROTOCOL), socket.MSG_DONTWAIT)
        except OSError:  # full (the process lags far behind) or gone: dropped, and counted by the station
            return False
        return True

    def close(self) -> None:
        self._closing = True
        sock, proc = self._sock, self._proc
        if sock is not None:
            try:
                sock.settimeout(2.0)
                sock.send(pickle.dumps(("stop",)))
            except OSError:
                pass
        if proc is not None:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                log.warning("line adapter %s: its process did not stop within 10 s; killed", self.spec)
                proc.kill()
                proc.wait(5)
        if sock is not None:
            sock.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)


# ------------------------------------------------------------------ the adapter's side


class _Link:
    """The adapter's end of the socket: calls that wait for the station's reply."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._ids = itertools.count(1)
        self._waiting: dict[int, list] = {}
        self._lock = threading.Lock()
        self.closed = threading.Event()

    def send(self, msg: tuple) -> None:
        self.sock.sendall(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))

    def call(self, name: str, *args: Any, timeout: float = 60.0) -> Any:
        cid = next(self._ids)
        slot = [threading.Event(), None]
        with self._lock:
            self._waiting[cid] = slot
        try:
            self.send(("call", cid, name, args))
        except OSError:
            with self._lock:
                self._waiting.pop(cid, None)
            raise StationActionError("not_ready", "the station is gone") from None
        if not slot[0].wait(timeout) or slot[1] is None:
            with self._lock:
                self._waiting.pop(cid, None)
            raise StationActionError("not_ready", f"the station did not answer {name} within {timeout:.0f} s")
        ok, value = slot[1]
        if ok:
            return value
        kind, a, b = value
        if kind == "action":
            raise StationActionError(a, b)
        raise RuntimeError(f"{name}: {a}: {b}")

    def deliver(self, cid: int, ok: bool, value: Any) -> None:
        with self._lock:
            slot = self._waiting.pop(cid, None)
        if slot is not None:
            slot[1] = (ok, value)
            slot[0].set()

    def fail_all(self) -> None:
        """The station is gone: every waiting call returns at once (with an error)."""
        self.closed.set()
        with self._lock:
            slots, self._waiting = list(self._waiting.values()), {}
        for slot in slots:
            slot[0].set()


class RemoteControl(StationControl):
    """The control handle of an adapter in its own process.

    Actions go to the station and wait for its answer; ``state``, ``job``, ``last_result``, ``result``
    and ``wait_result`` read a copy kept current by the station's events (the same results the
    station holds: those waiting for an acknowledgement and the recent history).
    """

    history_size = 256

    def __init__(self, link: _Link, init: dict):
        self._link = link
        self._state = init["state"]
        self._job = init["job"]
        self._jobs = list(init["jobs"])
        self._base = Path(init["base_dir"])
        self._floor = int(init["floor"])  # every result after this id reaches this copy as an event
        self._cv = threading.Condition()
        self._unacked: collections.OrderedDict[int, StationResult] = collections.OrderedDict()
        self._recent: collections.OrderedDict[int, StationResult] = collections.OrderedDict()
        self._last: StationResult | None = None
        for r in init["recent"]:
            self._remember(r)

    def _remember(self, r: StationResult) -> None:
        if not r.acknowledged:
            self._unacked[r.result_id] = r
            while len(self._unacked) > MAX_UNACKED:  # only if acknowledgement events were dropped
                self._unacked.popitem(last=False)
        self._recent[r.result_id] = r
        while len(self._recent) > self.history_size:
            self._recent.popitem(last=False)
        if self._last is None or r.result_id > self._last.result_id:
            self._last = r

    def observe(self, event: StationEvent) -> None:
        """Update the copy from a station event (before the adapter hears of it)."""
        with self._cv:
            self._state, self._job = event.state, event.job
            r = event.result
            if r is not None and event.kind == RESULT_READY:
                self._remember(r)
            elif r is not None and event.kind == RESULT_ACKNOWLEDGED:
                self._unacked.pop(r.result_id, None)
                held = self._recent.get(r.result_id)
                if held is not None:
                    held.acknowledged = True
            self._cv.notify_all()

    # ---- reads

    @property
    def state(self) -> str:
        return self._state

    @property
    def job(self) -> str:
        return self._job

    @property
    def jobs(self) -> list[str]:
        return list(self._jobs)

    @property
    def base_dir(self) -> Path:
        return self._base

    def status(self) -> dict[str, Any]:
        return self._link.call("status")

    def last_result(self) -> StationResult | None:
        return self._last

    def result(self, result_id: int) -> StationResult | None:
        with self._cv:
            r = self._unacked.get(result_id) or self._recent.get(result_id)
        if r is not None or result_id > self._floor:
            return r
        return self._link.call("result", result_id)  # older than this copy: ask the station

    def wait_result(self, result_id: int, timeout: float | None = None) -> StationResult | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while True:
                r = self._unacked.get(result_id) or self._recent.get(result_id)
                if r is not None:
                    return r
                if self._last is not None and self._last.result_id > result_id or self._link.closed.is_set():
                    return None  # passed by (aborted before its result, or no longer held)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cv.wait(left)

    def describe_job(self, job: str) -> dict[str, Any]:
        return self._link.call("describe_job", job)

    # ---- actions

    def trigger(self, acknowledge: bool = False) -> int:
        return self._link.call("trigger", acknowledge)

    def start_continuous(self) -> None:
        self._link.call("start_continuous")

    def stop_continuous(self) -> None:
        self._link.call("stop_continuous")

    def select_job(self, job: str) -> None:
        self._link.call("select_job", job)

    def acknowledge(self, result_id: int | None = None) -> None:
        self._link.call("acknowledge", result_id)

    def reset(self) -> None:
        self._link.call("reset")

    def reload(self) -> None:
        self._link.call("reload", timeout=600.0)

    def reset_counters(self) -> None:
        self._link.call("reset_counters")

    def set_adapter_connected(self, adapter: str, connected: bool, detail: str = "") -> None:
        try:
            self._link.send(("tell", "set_adapter_connected", (adapter, connected, detail)))
        except OSError:
            pass


def _load_class(path: str) -> type[LineAdapter]:
    module, _, name = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def child_main(fd: int) -> int:
    """The adapter's process: build the adapter, relay, stop when the station says so or is gone."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # the station stops this process, not the terminal
        signal.signal(sig, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    receive = _Receiver(sock)
    kind, init = receive()
    logging.basicConfig(level=init["log_level"], format=f"%(levelname)s %(name)s ({init['spec']}): %(message)s")
    link = _Link(sock)
    control = RemoteControl(link, init)
    from .station import _Channel  # the station's own event channel (that module imports this one)

    channels: list[_Channel] = []  # the adapter's, once it is built and listens

    def read() -> None:
        try:
            while True:
                msg = receive()
                if msg is None:
                    break
                if msg[0] == "reply":
                    link.deliver(msg[1], msg[2], msg[3])
                elif msg[0] == "event":
                    ev = msg[1]
                    control.observe(ev)
                    # a direct adapter is called here; any other from its channel's thread, since it may take
                    # locks its own threads hold while they wait on a call answered by this thread
                    for ch in channels:
                        if ch.kinds is None or ev.kind in ch.kinds:
                            ch.put(ev)
                elif msg[0] == "stop":
                    break
        except OSError:
            pass
        finally:
            link.fail_all()

    threading.Thread(target=read, name="loupe-station-link", daemon=True).start()
    try:
        cls = _load_class(init["cls"])
        adapter = cls(init["target"], cls.Params.model_validate(init["params"]), control)
        if type(adapter).on_event is not LineAdapter.on_event:
            channels.append(_Channel(init["spec"], adapter))
        adapter.start()
    except Exception as exc:  # noqa: BLE001 - the station reports it (io X: cannot start: ...)
        try:
            link.send(("failed", str(exc) or type(exc).__name__))
        except OSError:
            pass
        return 1
    link.send(("started", adapter.endpoint))
    link.closed.wait()
    for ch in channels:  # the events already received first
        ch.stop(timeout=2.0)
    try:
        adapter.close()
    except Exception:  # noqa: BLE001
        log.exception("closing line adapter %s failed", init["spec"])
    return 0

