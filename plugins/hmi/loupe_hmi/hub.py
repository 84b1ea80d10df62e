"""What the operator screen knows, in the screen's own process: recent results, the frames it
holds (the newest and the failures gallery), counters per shift, alarms.

The station's process sends compact records (``adapter.result_record``) through a pipe; the
screen's reader thread turns them into ``Held`` results here and the server reads them. One
lock guards it.
"""
from __future__ import annotations

import collections
import datetime as _dt
import threading
import time
from typing import Any


class Held:
    """A result as the screen keeps it: what its JSON needs, no image. The JSON is built when a
    browser or the API first asks (a fast line's results mostly never are), then cached."""

    __slots__ = ("id", "job", "verdict", "created", "failures", "ms", "steps", "error", "image", "_json")

    def __init__(self, rec: tuple, image: bool):
        _, self.id, self.job, self.verdict, self.created, self.failures, processing_ms, self.steps, self.error, \
            _, _ = rec
        self.ms = sum(processing_ms.values())
        self.image = image
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
    """Fed by the screen process's reader thread (``add_result``, ``add_alarm``, ``changed``), read by the
    server's threads; browsers' streams poll ``latest``, ``version`` and ``alarm_seq``."""

    def __init__(self, params):
        self.p = params
        self.lock = threading.Lock()
        self.history: collections.deque[Held] = collections.deque(maxlen=params.history)
        # id -> (image, [(heatmap, roi)], overlay dicts): the newest frame received and the failures'
        self.frames: collections.OrderedDict[int, tuple] = collections.OrderedDict()
        self.failed_ids: collections.deque[int] = collections.deque(maxlen=params.failures)
        self.jpegs: collections.OrderedDict[int, tuple[bytes, int, int]] = collections.OrderedDict()
        self.alarm_log: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
        self.shift_counts = {"pass": 0, "review": 0, "fail": 0, "error": 0}
        self.shift_start = self._shift_start(time.time())
        self.latest_id: int | None = None
        self.latest_frame_id: int | None = None  # the newest result whose frame the screen holds (live image)
        self.version = 0          # bumped on state, job and alarm events: streams then send the state
        self.alarm_seq = 0        # alarms so far (the log keeps the last 100)
        self.latest: Held | None = None
        self.closing = False
        self.last_state = ""
        self.results_seen = 0
        self.records_dropped = 0  # records the station's side dropped (10,000 waited: this process hung)
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

    def add_result(self, rec: tuple) -> Held:
        """``rec``: ("r", id, job, verdict, created, failures, processing_ms, steps, error, has_image, frame)."""
        rid, verdict, created, processing_ms, frame = rec[1], rec[3], rec[4], rec[6], rec[10]
        s = Held(rec, frame is not None)
        with self.lock:
            start = self._shift_start(created)
            if start != self.shift_start:
                self.shift_start = start
                self.shift_counts = dict.fromkeys(self.shift_counts, 0)
            self.shift_counts[verdict] = self.shift_counts.get(verdict, 0) + 1
            self.history.append(s)
            self.latest = s
            self.results_seen += 1
            self.latest_id = rid
            if frame is not None:
                self.frames[rid] = frame
                self.latest_frame_id = rid
                if verdict != "pass":
                    self.failed_ids.append(rid)
                keep = set(self.failed_ids) | {rid}
                for r in [r for r in self.frames if r not in keep]:
                    del self.frames[r]
                for r in [r for r in self.jpegs if r not in keep]:
                    del self.jpegs[r]
            self.step_ms.extend(processing_ms.items())
            if len(self.step_ms) > 100_000:
                del self.step_ms[:50_000]
        return s

    def add_frame(self, rid: int, frame: tuple) -> None:
        """The live view's frame for a result already added (the newest, at most ``live_fps`` a second)."""
        with self.lock:
            held = next((s for s in reversed(self.history) if s.id == rid), None) if self.history else None
            if held is None:
                return
            held.image, held._json = True, None
            self.frames[rid] = frame
            self.latest_frame_id = rid
            keep = set(self.failed_ids) | {rid}
            for r in [r for r in self.frames if r not in keep]:
                del self.frames[r]
            for r in [r for r in self.jpegs if r not in keep]:
                del self.jpegs[r]

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
        """The held frame as a JPEG, encoded here (the screen's process) when first asked, then cached."""
        from .render import render_jpeg

        with self.lock:
            got = self.jpegs.get(rid)
            fr = self.frames.get(rid)
        if got is not None or fr is None:
            return got
        got = render_jpeg(fr[0], fr[1])
        if got is not None:
            with self.lock:
                if rid in self.frames:
                    self.jpegs[rid] = got
        return got

    def overlays(self, rid: int) -> list[dict[str, Any]] | None:
        with self.lock:
            fr = self.frames.get(rid)
        return None if fr is None else fr[2]

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
