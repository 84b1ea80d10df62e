"""``tcp://HOST:PORT``: a line-oriented ASCII channel (Cognex Native Mode / Keyence CV-X style).

One command per line, one reply per command, in order; lines end with CR LF
(a bare LF is accepted). Commands are case-insensitive::

    TRG              -> OK,<result_id>,<verdict>[,<measurement>...]
    JOB <id>         -> OK,<id>
    JOB?             -> OK,<job>
    STATE?           -> OK,<state>            (Initialized, Ready, SingleExecution, ContinuousExecution, Error)
    ACK [<id>]       -> OK[,<id>]             (release a result; the oldest without an id)
    START | STOP     -> OK,<state>            (continuous mode)
    RESET            -> OK,<state>
    RELOAD           -> OK,<job>
    anything failing -> ER,<command>,<code>

``TRG`` may be pipelined: the trigger is taken as soon as the line is read and
its reply is written when the result is ready, so a PLC can send triggers at
its own rate; any other command waits for the replies before it. With
``auto_ack`` (the default) the reply is the acknowledgement: the result is
released as it is published and never waits in the buffer. See ``docs/line.md``.

A ``TRG`` reply is written by the inspection thread itself, as the result is
published, when the connection's writer thread waits for exactly that result
(every reply before it written): one non-blocking send, whatever it leaves is
written by the writer thread. Otherwise (an earlier reply still going out, a
result that came before its ``TRG`` was queued) the writer thread writes it.
"""
from __future__ import annotations

import logging
import math
import queue
import socket
import socketserver
import threading
import time
from typing import Any

from pydantic import Field

from host import LineAdapter, Params, StationActionError, StationResult

log = logging.getLogger("loupe.line.tcp")

MAX_LINE = 1024


def parse_target(target: str, default_port: int | None = None) -> tuple[str, int]:
    """``//HOST:PORT`` (or ``HOST:PORT``) -> (host, port); ``[::1]:2000`` for IPv6."""
    t = target[2:] if target.startswith("//") else target
    t = t.split("/", 1)[0]
    host, sep, port = t.rpartition(":")
    if not sep:
        host, port = t, ""
    host = host.strip("[]") or "127.0.0.1"
    if not port:
        if default_port is None:
            raise ValueError(f"{target!r}: expected //HOST:PORT")
        return host, default_port
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{target!r}: the port must be a number 0-65535")
    return host, int(port)


def format_value(v: Any) -> str | None:
    """One measurement as a reply field (None: not a scalar, left out)."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else "nan"
    if isinstance(v, str):
        return v.replace(",", ";").replace("\r", " ").replace("\n", " ")
    if v is None:
        return ""
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return format_value(v.item())
    return None


def format_result(r: StationResult, names: list[str] | None) -> str:
    fields = ["OK", str(r.result_id), r.verdict]
    if names is None:
        for v in r.measurements.values():
            f = format_value(v)
            if f is not None:
                fields.append(f)
    else:
        for n in names:
            f = format_value(r.measurements.get(n))
            fields.append(f if f is not None else "")
    return ",".join(fields)


def line_bytes(text: str) -> bytes:
    """A reply as sent: ASCII (anything else replaced), CR LF terminated."""
    return text.encode("ascii", "replace") + b"\r\n"


class TcpParams(Params):
    auto_ack: bool = Field(True, description="a TRG reply acknowledges its result (else the PLC sends ACK)")
    timeout_s: float = Field(30.0, gt=0, le=3600, description="how long TRG waits for its result before "
                                                              "ER,TRG,timeout")
    measurements: list[str] | None = Field(None, description="the measurements after the verdict, by "
                                                             "'step.name' (default: every scalar one, in the "
                                                             "recipe's order)")
    max_clients: int = Field(8, ge=1, le=256, description="connections served at once; more are refused")


class _Direct:
    """A connection's hand-over between its writer thread and the inspection thread: the result id the writer
    waits for (every reply before it written), and the bytes of that reply the inspection thread's
    non-blocking send left (``None``: it sent nothing; the writer writes the whole reply)."""

    __slots__ = ("lock", "rid", "rest", "sock")

    def __init__(self, sock: socket.socket):
        self.lock = threading.Lock()  # held for a few assignments only, never across I/O
        self.rid: int | None = None
        self.rest: bytes | None = None
        self.sock = sock

    def offer(self, r: StationResult, names: list[str] | None) -> bool:
        """On the inspection thread: write ``r``'s reply now if the writer waits for it. Never blocks."""
        if self.rid != r.result_id or not self.lock.acquire(blocking=False):
            return False
        try:
            if self.rid != r.result_id or self.rest is not None:
                return False
            data = line_bytes(format_result(r, names))
            try:
                sent = self.sock.send(data, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return False  # the connection is gone: its reader and writer find out
            self.rest = data[sent:]
            return True
        finally:
            self.lock.release()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address, adapter: "TcpAdapter"):
        self.adapter = adapter
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        adapter = self.server.adapter
        if not adapter._connect(self.request):
            try:
                self.wfile.write(b"ER,CONNECT,too_many_clients\r\n")
            except OSError:
                pass
            return
        replies: queue.Queue = queue.Queue()
        direct = _Direct(self.request)
        adapter._replies[self.request] = replies
        adapter._direct[self.request] = direct
        writer = threading.Thread(target=self._write_replies, args=(replies, direct), daemon=True,
                                  name="loupe-tcp-writer")
        writer.start()
        try:
            while True:
                try:
                    raw = self.rfile.readline(MAX_LINE + 1)
                except OSError:
                    break
                if not raw:
                    break
                if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                    replies.put(("now", "ER,?,line_too_long"))
                    break
                line = raw.decode("ascii", "replace").strip()
                if not line:
                    continue
                self._command(line, replies)
        finally:
            replies.put(None)
            writer.join(adapter.params.timeout_s + 5)
            adapter._disconnect(self.request)

    def _command(self, line: str, replies: queue.Queue) -> None:
        adapter = self.server.adapter
        control = adapter.control
        word, _, arg = line.partition(" ")
        cmd = word.upper()
        arg = arg.strip()
        name = cmd.replace(",", ";")[:32]
        if cmd == "TRG":
            try:
                replies.put(("trg", control.trigger(acknowledge=adapter.params.auto_ack)))
            except StationActionError as exc:
                replies.put(("now", f"ER,TRG,{exc.code}"))
            return
        replies.join()  # every other command runs after the replies before it
        try:
            if cmd == "STATE?":
                reply = f"OK,{control.state}"
            elif cmd == "JOB?":
                reply = f"OK,{control.job}"
            elif cmd == "JOB":
                if not arg:
                    raise StationActionError("bad_argument", "JOB needs a job id")
                control.select_job(arg)
                reply = f"OK,{arg}"
            elif cmd == "ACK":
                if arg and not arg.isdigit():
                    raise StationActionError("bad_argument", "ACK takes a result id")
                control.acknowledge(int(arg) if arg else None)
                reply = f"OK,{arg}" if arg else "OK"
            elif cmd == "START":
                control.start_continuous()
                reply = f"OK,{control.state}"
            elif cmd == "STOP":
                control.stop_continuous()
                deadline = time.monotonic() + adapter.params.timeout_s
                while control.state == "ContinuousExecution" and time.monotonic() < deadline:
                    time.sleep(0.001)  # the reply comes once the frame in progress is done
                reply = f"OK,{control.state}"
            elif cmd == "RESET":
                control.reset()
                reply = f"OK,{control.state}"
            elif cmd == "RELOAD":
                control.reload()
                reply = f"OK,{control.job}"
            else:
                reply = f"ER,{name},unknown_command"
        except StationActionError as exc:
            log.info("tcp %s refused: %s", line, exc)
            reply = f"ER,{name},{exc.code}"
        replies.put(("now", reply))

    def _write_replies(self, replies: queue.Queue, direct: _Direct) -> None:
        adapter = self.server.adapter
        control = adapter.control
        alive = True
        while True:
            item = replies.get()
            try:
                if item is None:
                    return
                kind, value = item
                if kind == "trg":
                    with direct.lock:
                        direct.rid, direct.rest = value, None
                    r = control.wait_result(value, timeout=adapter.params.timeout_s)
                    with direct.lock:
                        direct.rid, data = None, direct.rest  # what the inspection thread left to send
                    if data is None:
                        data = line_bytes("ER,TRG,timeout" if r is None else
                                          format_result(r, adapter.params.measurements))
                else:
                    data = line_bytes(value)
                if alive and data:
                    try:
                        self.wfile.write(data)
                        self.wfile.flush()
                    except OSError:
                        alive = False
            finally:
                replies.task_done()


class TcpAdapter(LineAdapter):
    """The TCP ASCII channel: ``TRG``, ``JOB <id>``, ``STATE?`` and friends, CR LF terminated."""

    scheme = "tcp"
    description = "line-oriented ASCII channel (Cognex Native Mode / Keyence style): TRG, JOB <id>, STATE?"
    Params = TcpParams
    queue_size = 64
    direct_events = True  # on_event is at most one non-blocking send (_Direct.offer)
    event_kinds = frozenset({"result_ready"})

    def __init__(self, target, params, control):
        super().__init__(target, params, control)
        self.host, self.port = parse_target(target)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._clients: set[socket.socket] = set()
        self._replies: dict[socket.socket, queue.Queue] = {}
        self._direct: dict[socket.socket, _Direct] = {}
        self.direct_replies = 0  # TRG replies the inspection thread wrote itself
        self._lock = threading.Lock()
        self.name = f"tcp:{target}"

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    def start(self) -> None:
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="loupe-tcp", daemon=True)
        self._thread.start()
        self.control.set_adapter_connected(self.name, False, "no client")
        log.info("tcp adapter listening on %s", self.endpoint)

    def _connect(self, sock: socket.socket) -> bool:
        with self._lock:
            if len(self._clients) >= self.params.max_clients:
                return False
            self._clients.add(sock)
            n = len(self._clients)
        self.control.set_adapter_connected(self.name, True, f"{n} client(s)")
        return True

    def _disconnect(self, sock: socket.socket) -> None:
        with self._lock:
            self._clients.discard(sock)
            self._replies.pop(sock, None)
            self._direct.pop(sock, None)
            n = len(self._clients)
        self.control.set_adapter_connected(self.name, n > 0, f"{n} client(s)" if n else "no client")

    def on_event(self, event) -> bool:
        """On the inspection thread, as a result is published: the connection whose writer waits for it
        gets its reply now."""
        r = event.result
        if r is not None:
            for direct in list(self._direct.values()):
                if direct.offer(r, self.params.measurements):
                    self.direct_replies += 1
                    break
        return True

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        # the station closes its adapters after the frame in progress: let its reply go out first
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(q.unfinished_tasks for q in list(self._replies.values())):
            time.sleep(0.005)
        with self._lock:
            clients = list(self._clients)
        for sock in clients:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(2)


# ------------------------------------------------------------- PLC driver


class TcpDriver:
    """The simulated PLC's side of the TCP channel (``loupe line plc --io tcp://...``).

    Triggers are pipelined: a sender writes ``TRG`` on schedule, a receiver
    matches the replies to the commands in order.
    """

    scheme = "tcp"

    def __init__(self, target: str, timeout: float = 30.0):
        self.host, self.port = parse_target(target)
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self._buf = b""

    def open(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("ascii") + b"\r\n")

    def recv(self) -> str:
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the station closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("ascii", "replace").rstrip("\r")

    def command(self, line: str) -> str:
        self.send(line)
        return self.recv()

    def state(self) -> str:
        return self.command("STATE?").split(",", 1)[-1]

    def select_job(self, job: str) -> str:
        return self.command(f"JOB {job}")

    def run(self, times: list[float], ack: bool) -> list[dict]:
        """Send one TRG at each ``times[i]`` (perf_counter seconds); return one outcome per trigger:
        ``{"sent", "done", "reply", "result_id", "verdict", "error"}``."""
        outcomes: list[dict] = [dict(sent=None, done=None, reply=None, result_id=None, verdict=None, error=None)
                                for _ in times]
        expect: queue.Queue = queue.Queue()  # ("trg", i) or ("ack", rid), in the order sent
        lock = threading.Lock()
        failure: list[BaseException] = []

        def receive():
            try:
                done = 0
                while done < len(times):
                    kind, i = expect.get()
                    reply = self.recv()
                    now = time.perf_counter()
                    if kind == "ack":
                        if not reply.startswith("OK"):
                            outcomes[i]["error"] = f"ack: {reply}"
                        continue
                    o = outcomes[i]
                    o["done"], o["reply"] = now, reply
                    parts = reply.split(",")
                    if parts[0] == "OK" and len(parts) >= 3 and parts[1].isdigit():
                        o["result_id"], o["verdict"] = int(parts[1]), parts[2]
                        if ack:
                            with lock:
                                expect.put(("ack", i))
                                self.send(f"ACK {parts[1]}")
                    else:
                        o["error"] = parts[2] if parts[0] == "ER" and len(parts) >= 3 else reply
                    done += 1
                # the acknowledgements still on the wire
                while not expect.empty():
                    kind, i = expect.get()
                    reply = self.recv()
                    if not reply.startswith("OK"):
                        outcomes[i]["error"] = f"ack: {reply}"
            except BaseException as exc:
                failure.append(exc)

        rx = threading.Thread(target=receive, daemon=True)
        rx.start()
        for i, t in enumerate(times):
            delay = t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if failure:
                break
            with lock:
                expect.put(("trg", i))
                outcomes[i]["sent"] = time.perf_counter()
                self.send("TRG")
        rx.join(self.timeout + 5)
        if failure:
            raise failure[0]
        if rx.is_alive():
            raise TimeoutError("the station stopped replying")
        return outcomes
