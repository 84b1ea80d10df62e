"""The operator screen as a line adapter (scheme ``http``): it hears the station's events on
its own thread and serves the pages, the API and the metrics from a uvicorn server on
another. Neither ever runs on the station's per-frame path: events reach it through the
station's bounded queue, and images are encoded only when a browser asks for them.
"""
from __future__ import annotations

import collections
import datetime as _dt
import logging
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from host import LineAdapter, Params, StationEvent, StationResult, UsageError, resolved_overlays

log = logging.getLogger("loupe.hmi")


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

    @field_validator("shifts")
    @classmethod
    def _times(cls, v: list[str]) -> list[str]:
        for t in v:
            try:
                _dt.time.fromisoformat(t)
            except ValueError:
                raise ValueError(f"{t!r} is not a time of day HH:MM") from None
        return sorted(v)


class Held:
    """A result as the screen keeps it: what its JSON needs, no image, no heatmap. The JSON is built when a
    browser or the API first asks (a fast line's results mostly never are), then cached."""

    __slots__ = ("id", "job", "verdict", "created", "failures", "ms", "steps", "error", "image", "_json")

    def __init__(self, res: StationResult):
        fr = res.frame
        self.id, self.job, self.verdict, self.created = res.result_id, res.job, res.verdict, res.created
        self.failures, self.ms = res.failures, sum(res.processing_ms.values())
        self.steps = [(tr.step, tr.tool, tr.verdict, tr.failures, tr.error, tr.ms, tr.measurements)
                      for tr in (fr.results if fr is not None else ())]
        self.error = fr.error if fr is not None else None
        self.image = bool(fr is not None and fr.image is not None)
        self._json: dict[str, Any] | None = None

    def json(self) -> dict[str, Any]:
        if self._json is None:
            self._json = {
                "id": self.id, "job": self.job, "verdict": self.verdict, "created": self.created,
                "failures": list(self.failures), "ms": round(self.ms, 3), "error": self.error, "image": self.image,
                "steps": [{"step": st, "tool": tool, "verdict": v, "failures": list(f), "error": err,
                           "ms": round(ms, 3), "measurements": {k: _num(x) for k, x in m.items()}}
                          for st, tool, v, f, err, ms, m in self.steps]}
        return self._json


def summary(res: StationResult) -> dict[str, Any]:
    """The JSON a browser gets for one result (no image; limits are in the job's description)."""
    return Held(res).json()


def _num(v: Any) -> Any:
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float):
        return round(v, 6) if v == v and abs(v) != float("inf") else None
    if isinstance(v, (int, str, bool)) or v is None:
        return v
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return [_num(x) for x in v[:100]]
    return str(v)


class Hub:
    """What the screen knows: recent results, the failures gallery, counters per shift, alarms.

    Fed by ``OperatorScreen.on_event`` (the adapter's event thread), read by the server
    thread; one lock guards it. Browsers subscribe for pushes (``subscribe``).
    """

    def __init__(self, params: ScreenParams):
        self.p = params
        self.lock = threading.Lock()
        self.history: collections.deque[Held] = collections.deque(maxlen=params.history)
        self.frames: collections.OrderedDict[int, Any] = collections.OrderedDict()  # id -> FrameResult
        self.failed_ids: collections.deque[int] = collections.deque(maxlen=params.failures)
        self.jpegs: collections.OrderedDict[int, tuple[bytes, int, int]] = collections.OrderedDict()
        self.alarm_log: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
        self.shift_counts = {"pass": 0, "review": 0, "fail": 0, "error": 0}
        self.shift_start = self._shift_start(time.time())
        self.latest_id: int | None = None
        self.version = 0          # bumped on state, job and alarm events: streams then send the state
        self.alarm_seq = 0        # alarms so far (the log keeps the last 100)
        self.latest: Held | None = None
        self.closing = False
        self.last_state = ""
        self.results_seen = 0
        self.step_ms: list[tuple[str, float]] = []  # drained by the metrics collector

    def _shift_start(self, now: float) -> float:
        t = _dt.datetime.fromtimestamp(now)
        starts = []
        for day in (t.date() - _dt.timedelta(days=1), t.date()):
            for s in self.p.shifts:
                starts.append(_dt.datetime.combine(day, _dt.time.fromisoformat(s)))
        past = [s for s in starts if s <= t]
        return (max(past) if past else _dt.datetime.combine(t.date(), _dt.time())).timestamp()

    def shift_label(self) -> str:
        return _dt.datetime.fromtimestamp(self.shift_start).strftime("%a %H:%M")

    def add_result(self, res: StationResult) -> Held:
        s = Held(res)
        with self.lock:
            start = self._shift_start(res.created)
            if start != self.shift_start:
                self.shift_start = start
                self.shift_counts = dict.fromkeys(self.shift_counts, 0)
            self.shift_counts[res.verdict] = self.shift_counts.get(res.verdict, 0) + 1
            self.history.append(s)
            self.latest = s
            self.results_seen += 1
            self.latest_id = res.result_id
            if res.frame is not None and res.frame.image is not None:
                self.frames[res.result_id] = res.frame
                if res.verdict != "pass":
                    self.failed_ids.append(res.result_id)
                keep = set(self.failed_ids) | {res.result_id}
                for rid in [r for r in self.frames if r not in keep]:
                    del self.frames[rid]
                for rid in [r for r in self.jpegs if r not in keep]:
                    del self.jpegs[rid]
            self.step_ms.extend((k, v) for k, v in res.processing_ms.items())
            if len(self.step_ms) > 100_000:
                del self.step_ms[:50_000]
        return s

    def add_alarm(self, kind: str, message: str, when: float) -> dict[str, Any]:
        with self.lock:
            self.alarm_seq += 1
            a = {"seq": self.alarm_seq, "kind": kind, "message": message, "time": when}
            self.alarm_log.appendleft(a)
            self.version += 1
        return a

    def reset_shift(self) -> None:
        with self.lock:
            self.shift_counts = dict.fromkeys(self.shift_counts, 0)

    def jpeg(self, rid: int) -> tuple[bytes, int, int] | None:
        from .render import render_jpeg

        with self.lock:
            got = self.jpegs.get(rid)
            fr = self.frames.get(rid)
        if got is not None or fr is None:
            return got
        got = render_jpeg(fr)
        if got is not None:
            with self.lock:
                if rid in self.frames:
                    self.jpegs[rid] = got
        return got

    def overlays(self, rid: int) -> list[dict[str, Any]] | None:
        with self.lock:
            fr = self.frames.get(rid)
        if fr is None:
            return None
        out = []
        for tr in fr.results:
            for shape in resolved_overlays(tr):  # "verdict"/"alert" shapes take the step's verdict colour
                d = shape.to_dict()
                d["step"] = tr.step
                out.append(d)
        return out

    def query(self, verdict: str | None, job: str | None, limit: int, before: int | None) -> list[dict[str, Any]]:
        with self.lock:
            items = list(self.history)
        out = []
        for s in reversed(items):
            if before is not None and s.id >= before:
                continue
            if verdict and s.verdict != verdict:
                continue
            if job and s.job != job:
                continue
            out.append(s.json())
            if len(out) >= limit:
                break
        return out

    def changed(self, kind: str, state: str = "") -> None:
        """Something browsers should re-read (job, error, a state an operator must see): they poll these
        counters. The Ready <-> SingleExecution flicker of every trigger is not news: the counts go out
        with the periodic state."""
        if kind == "state_changed" and state in ("Ready", "SingleExecution") and \
                self.last_state in ("Ready", "SingleExecution"):
            self.last_state = state
            return
        with self.lock:
            self.last_state = state or self.last_state
            self.version += 1


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
        self.hub = Hub(params)
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        import socket

        import uvicorn

        from .app import build_app

        secrets_file = None
        if self.params.secrets:
            secrets_file = Path(self.params.secrets).expanduser()
            if not secrets_file.is_absolute():
                secrets_file = Path(getattr(self.control, "base_dir", Path.cwd())) / secrets_file
        app = build_app(self, secrets_file)
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise UsageError(f"{self.name}: cannot listen: {exc}") from None
        sock.listen(64)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="loupe-hmi", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)
        if not self._server.started:
            raise UsageError(f"{self.name}: the operator screen did not start")
        self.control.set_adapter_connected(self.name, True, "serving")
        log.info("operator screen on %s", self.endpoint)

    def on_event(self, event: StationEvent) -> None:
        """Cheap bookkeeping only: browsers' streams pick the news up at their own pace (``app.events``)."""
        hub = self.hub
        if event.kind == "result_ready" and event.result is not None:
            hub.add_result(event.result)
        elif event.kind in ("error", "trigger_missed"):
            hub.add_alarm(event.kind, event.message or event.kind, event.time)
        else:
            hub.changed(event.kind, event.state)

    def close(self) -> None:
        if self._server is not None:
            self.hub.closing = True
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
        self._server = None
