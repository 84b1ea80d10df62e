"""The operator screen as a line adapter (scheme ``http``).

The screen's server runs in its own process (``child.py``: uvicorn, FastAPI, the results it
holds, JPEG encoding, metrics), so it never competes with the line for the station's GIL. In
the station's process this adapter stays small: on its own event thread it turns each event
into a compact record (result id, verdict, job, measurements, failures, per-step times; the
raw image, heatmaps and overlays for at most ``live_fps`` frames a second and the failures) and
writes it to a pipe. When the screen's process lags, the pipe fills, this thread waits, and the
station's bounded queue for the adapter counts what it drops: the station never waits. Calls
from the screen (state, trigger, job select, reset counters, ...) come back on a second pipe
and are made on the station's control handle by another small thread here.
"""
from __future__ import annotations

import datetime as _dt
import logging
import multiprocessing
import pickle
import threading
import time
from pathlib import Path

from pydantic import Field, field_validator

from host import LineAdapter, Params, StationActionError, StationEvent, StationResult, UsageError, resolved_overlays

log = logging.getLogger("loupe.hmi")

#: records waiting for the sender before new ones are counted as dropped (the screen's process hangs)
MAX_PENDING = 10_000
#: the sender's batching period: at most this long between an event and its record's write
BATCH_S = 0.01

#: what the screen's process may call on the station's control handle
CALLS = frozenset({"status", "state", "job", "describe_job", "trigger", "acknowledge", "reset_counters",
                   "select_job", "reset", "reload"})


class ScreenParams(Params):
    secrets: str | None = Field(None, description="the station's secrets file (users and tokens, hashed; "
                                                  "`loupe hmi user` writes it); none: nobody can log in")
    public_view: bool = Field(False, description="show the screen read-only without a login")
    metrics_public: bool = Field(True, description="serve /metrics without a login (for Prometheus)")
    shifts: list[str] = Field(default_factory=lambda: ["06:00", "14:00", "22:00"],
                              description="shift start times (local HH:MM), for the per-shift counters")
    failures: int = Field(24, ge=1, le=500, description="failed frames kept for the gallery")
    history: int = Field(10_000, ge=100, le=1_000_000, description="results kept for /api/results")
    title: str = Field("", description="the screen's title (default: the station's name)")
    push_s: float = Field(0.1, ge=0.01, le=5, description="how often each browser's stream sends news: the newest "
                                                          "result, state changes, alarms (0.1 s: up to 10 updates/s)")
    live_fps: float = Field(15, ge=1, le=60, description="frames a second, at most, handed to the screen's "
                                                         "process for the live view (every result is)")
    failure_fps: float = Field(20, ge=1, le=200, description="failed frames a second, at most, handed over "
                                                             "for the gallery")

    @field_validator("shifts")
    @classmethod
    def _times(cls, v: list[str]) -> list[str]:
        for t in v:
            try:
                _dt.time.fromisoformat(t)
            except ValueError:
                raise ValueError(f"{t!r} is not a time of day HH:MM") from None
        return sorted(v)


class OperatorScreen(LineAdapter):
    """The operator screen and the station's HTTP API (``hmi: {listen: HOST:PORT}`` or ``--hmi``)."""

    scheme = "http"
    description = "operator screen in the browser, HTTP API (OpenAPI), Prometheus metrics, health probes"
    Params = ScreenParams
    wants_frames = True
    queue_size = 256
    # state flicker (Ready <-> SingleExecution per trigger) is read from the status the streams poll
    event_kinds = frozenset({"result_ready", "job_changed", "error", "trigger_missed"})

    def __init__(self, target: str, params, control):
        super().__init__(target, params, control)
        hostport = target[2:] if target.startswith("//") else target
        host, sep, port = hostport.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise UsageError(f"http:{target}: expected http://HOST:PORT")
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port)
        self.name = f"{self.scheme}:{target}"  # the station knows the adapter by its spec
        self.process: multiprocessing.process.BaseProcess | None = None
        self._events = None     # the pipe to the screen's process (records of events)
        self._rpc = None        # the pipe its calls on the control handle come through
        self._bridge: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._frames = threading.Condition()
        self._newest = None     # (result id, FrameResult): the newest frame not yet handed over
        self._pending: list[tuple] = []  # records not yet sent: the sender thread pickles them in batches
        self.dropped = 0        # records dropped because MAX_PENDING were waiting (the screen hangs)
        self._flusher: threading.Thread | None = None
        self._closing = False
        self._live_gap = 1.0 / params.live_fps
        self._fail_gap = 1.0 / params.failure_fps
        self._last_live = self._last_fail = -1e9

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        from . import child

        secrets_file = None
        if self.params.secrets:
            secrets_file = Path(self.params.secrets).expanduser()
            if not secrets_file.is_absolute():
                secrets_file = Path(getattr(self.control, "base_dir", Path.cwd())) / secrets_file
        config = {"host": self.host, "port": self.port, "params": self.params.model_dump(),
                  "secrets": str(secrets_file) if secrets_file else None,
                  "title": self.params.title or self.control.status().get("station", "station")}
        ctx = multiprocessing.get_context("spawn")  # the station has threads: no fork
        ev_child, self._events = ctx.Pipe(duplex=False)
        self._rpc, rpc_child = ctx.Pipe()
        try:  # a frame (a few hundred kB) in one write, not one per 64 kB with a wake-up of the screen each
            import fcntl

            fcntl.fcntl(self._events.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        except OSError:
            pass
        self.process = ctx.Process(target=child.main, args=(config, ev_child, rpc_child),
                                   name=f"loupe-hmi {self.name}", daemon=True)
        self.process.start()  # a program that embeds the station needs the `if __name__ == "__main__"` guard
        ev_child.close()
        rpc_child.close()
        try:
            got = self._rpc.recv() if self._rpc.poll(120) else ("error", "did not start within 120 s")
        except (EOFError, OSError):
            got = ("error", f"its process exited (code {self.process.exitcode})")
        if got[0] != "ready":
            self.close()
            raise UsageError(f"{self.name}: the operator screen: {got[1]}")
        self.port = got[1]
        self._bridge = threading.Thread(target=self._serve_calls, name="loupe-hmi-calls", daemon=True)
        self._bridge.start()
        self._flusher = threading.Thread(target=self._hand_frames, name="loupe-hmi-frames", daemon=True)
        self._flusher.start()
        self.control.set_adapter_connected(self.name, True, f"serving (process {self.process.pid})")
        log.info("operator screen on %s (process %s)", self.endpoint, self.process.pid)

    # ------------------------------------------------------------ station -> screen

    def on_event(self, event: StationEvent) -> None:
        """A compact record of the event to the screen's process (no JSON, no image encoding here)."""
        if self._events is None:
            return
        newest = None
        if event.kind == "result_ready" and event.result is not None:
            rec = self._record(event.result)
            if rec[10] is None and rec[9]:
                newest = (rec[1], event.result.frame)
        elif event.kind in ("error", "trigger_missed"):
            rec = ("a", event.kind, event.message or event.kind, event.time)
        else:
            rec = ("c", event.kind, event.state)
        with self._frames:
            if len(self._pending) < MAX_PENDING:
                self._pending.append(rec)
                if newest is not None:  # after its result: the live view's frame follows at its own pace
                    self._newest = newest
            else:
                self.dropped += 1
            self._frames.notify()

    def _send(self, data: bytes) -> None:
        with self._send_lock:
            try:
                if self._events is not None:
                    self._events.send_bytes(data)
            except (OSError, ValueError):
                self._events = None  # the screen's process is gone: _serve_calls reports it

    def _record(self, res: StationResult) -> tuple:
        """("r", id, job, verdict, created, failures, processing_ms, steps, error, has_image, frame): ``frame``
        only for a failure (at most ``failure_fps`` a second, for the gallery); the live view's frames go
        separately (``_hand_frames``)."""
        fr = res.frame
        steps, error, frame = [], None, None
        if fr is not None:
            steps = [(tr.step, tr.tool, tr.verdict, tr.failures, tr.error, tr.ms, tr.measurements)
                     for tr in fr.results]
            error = fr.error
            if fr.image is not None and res.verdict != "pass":
                now = time.monotonic()
                if now - self._last_fail >= self._fail_gap:
                    self._last_fail = self._last_live = now
                    frame = _frame(fr)
        return ("r", res.result_id, res.job, res.verdict, res.created, res.failures, res.processing_ms, steps,
                error, fr is not None and fr.image is not None, frame)

    def _hand_frames(self) -> None:
        """The sender: every ``BATCH_S`` at most, the records waiting, pickled as one message (a fast line's
        records cost the station a list append each, and one write per batch), then the live view's frame:
        the newest one, at most ``live_fps`` a second, and always the last of a burst (a line that stops
        shows its last frame). Intermediate frames are skipped, never results."""
        while True:
            with self._frames:
                while not self._pending and self._newest is None and not self._closing:
                    self._frames.wait()
                if self._closing and not self._pending:
                    return
            time.sleep(BATCH_S)  # what comes meanwhile goes in the same message
            now = time.monotonic()
            with self._frames:
                batch, self._pending = self._pending, []
                item = None
                if self._newest is not None and now - self._last_live >= self._live_gap:
                    item, self._newest = self._newest, None
            if item is not None:
                self._last_live = now
                batch.append(("f", item[0], _frame(item[1])))
            if not batch:
                continue  # the newest frame waits for its turn (live_fps)
            try:
                data = pickle.dumps(("b", self.dropped, batch), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # a measurement of a type pickle cannot take: send what its JSON would hold
                data = pickle.dumps(("b", self.dropped, [_plain(r) for r in batch]), protocol=pickle.HIGHEST_PROTOCOL)
            self._send(data)

    # ------------------------------------------------------------ screen -> station

    def _serve_calls(self) -> None:
        conn = self._rpc
        while True:
            try:
                name, args = conn.recv()
            except (EOFError, OSError):
                break
            try:
                if name not in CALLS:
                    raise ValueError(f"no such call: {name}")
                attr = getattr(self.control, name)
                reply = ("ok", attr(*args) if callable(attr) else attr)
            except StationActionError as exc:
                reply = ("action", (exc.code, str(exc)))
            except Exception as exc:  # noqa: BLE001 - the screen shows it; the station goes on
                reply = ("error", f"{type(exc).__name__}: {exc}")
            try:
                conn.send(reply)
            except (EOFError, OSError):
                break
            except Exception as exc:  # noqa: BLE001 - an answer pickle cannot take
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
        if not self._closing:
            code = self.process.exitcode if self.process is not None else None
            log.error("%s: the operator screen's process exited (code %s)", self.name, code)
            self.control.set_adapter_connected(self.name, False, f"the screen's process exited (code {code})")

    def close(self) -> None:
        self._closing = True
        with self._frames:
            self._frames.notify()
        if self._flusher is not None:
            self._flusher.join(2)  # the last batch
        events = None
        if self._send_lock.acquire(timeout=2):  # else a writer waits on a full pipe: the screen hangs
            try:
                events, self._events = self._events, None
                if events is not None:
                    events.send_bytes(pickle.dumps(("x",)))
            except (OSError, ValueError):
                pass
            finally:
                self._send_lock.release()
        if self.process is not None and self.process.pid is not None:  # started
            self.process.join(5)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(3)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(3)
        if events is not None:
            events.close()
        if self._rpc is not None:
            self._rpc.close()
        if self._bridge is not None:
            self._bridge.join(2)


def _frame(fr) -> tuple:
    """What the screen's process needs to draw a frame: the raw image, heatmaps, overlays as dicts."""
    return (fr.image, [(tr.heatmap, tr.roi) for tr in fr.results if tr.heatmap is not None],
            [{**shape.to_dict(), "step": tr.step} for tr in fr.results
             for shape in resolved_overlays(tr)])  # "verdict" shapes take the step's colour


def _plain(rec: tuple) -> tuple:
    from .hub import _num

    if rec[0] != "r":
        return rec if rec[0] == "f" else tuple(str(x) if not isinstance(x, (int, float)) else x for x in rec)
    steps = [(st, tool, v, list(f), err, ms, {k: _num(x) for k, x in m.items()}) for st, tool, v, f, err, ms, m
             in rec[7]]
    return (*rec[:7], steps, *rec[8:])
