"""``mqtt://HOST:PORT/TOPIC``: every result published on the plant's message bus (paho-mqtt 2).

Topics under the base TOPIC (e.g. ``mqtt://broker:1883/plant/line1/station3``):

* ``TOPIC/result`` — one JSON message per frame (QoS 1; retained when ``?retain=1``, so a late
  subscriber sees the last result). Schema ``loupe.result/1``, see docs/plant-data.md.
* ``TOPIC/status`` — ``{"state": "online"|"offline", ...}``, retained: the birth message on connect,
  the broker's last will when the connection dies, and ``offline`` at a clean end.
* ``TOPIC/run`` — ``{"event": "started"|"ended", ...}`` at the start and end of a run (QoS 1).

The per-frame path never waits: ``write`` puts a small tuple on a bounded in-memory queue
(``queue`` frames, default 10000; a frame that finds it full is counted in ``overflow`` and dropped, with a
warning at the end). A publisher thread serialises the results and appends them to an on-disk spool
(SQLite, ``spool`` path, at most ``spool_max`` messages, default 100000: messages beyond that are dropped and
counted), hands them to paho while the broker is connected (at most ``max_inflight`` = 100 unacknowledged),
and deletes each one when the broker acknowledges it (PUBACK). While the broker is down the spool grows;
paho reconnects on its own, re-sends what it held unacknowledged, and the publisher goes on from the spool. At the end of a run the reporter waits up to ``flush_s`` seconds
(default 10) for the acknowledgements; what is still unacknowledged stays in the spool and is sent by the
next run that uses the same spool. Delivery is at least once: after a reconnect a message may arrive twice,
so subscribers de-duplicate on ``(run_id, key)``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import queue
import socket
import sqlite3
import threading
import time
import uuid
from hashlib import sha1
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from host import FrameResult, Reporter, UsageError

log = logging.getLogger("loupe.mqtt")

_STOP = object()
SCHEMA = "loupe.result/1"


def _num(v):
    if v is None or isinstance(v, (bool, str, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if hasattr(v, "tolist"):
        return _num(v.tolist())
    if isinstance(v, (list, tuple)):
        return [_num(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _num(x) for k, x in v.items()}
    return str(v)


def parse_spec(target: str):
    t = target.strip()
    if t.lower().startswith("mqtt:"):
        t = t[5:]
    url = "mqtt://" + t.lstrip("/")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or 1883
    except ValueError as exc:
        raise UsageError(f"report mqtt:{target}: {exc} (expected mqtt://HOST:PORT/TOPIC)") from None
    topic = parts.path.strip("/")
    shown = f"mqtt://{parts.hostname}:{port}/{topic}"
    if not host or not topic:
        raise UsageError(f"report {url!r}: expected mqtt://HOST:PORT/TOPIC")
    if parts.password is not None:
        raise UsageError(f"report {shown}: do not put a password in the spec; set LOUPE_MQTT_PASSWORD")
    if any(c in topic for c in "+#"):
        raise UsageError(f"report {shown}: the topic may not contain the wildcards + or #")
    return host, port, parts.username, topic, dict(parse_qsl(parts.query)), shown


class MqttReporter(Reporter):
    """Publishes each result as JSON (QoS 1) with birth/last-will status and an on-disk spool."""

    scheme = "mqtt"
    description = ("MQTT publisher (mqtt://HOST:PORT/TOPIC; TOPIC/result QoS 1, TOPIC/status birth and will; "
                   "?retain=1; on-disk spool while the broker is down)")
    queue_frames = 10000
    spool_max = 100000
    flush_s = 10.0
    max_inflight = 100

    def open(self) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise UsageError("mqtt reports need paho-mqtt: pip install loupe-mqtt") from None

        host, port, user, topic, opts, shown = parse_spec(self.target)
        self.shown = shown
        try:
            self.queue_frames = int(opts.get("queue", self.queue_frames))
            self.spool_max = int(opts.get("spool_max", self.spool_max))
            self.flush_s = float(opts.get("flush_s", self.flush_s))
            self.retain = opts.get("retain", "0").lower() in ("1", "true", "yes")
            qos = int(opts.get("qos", 1))
        except ValueError as exc:
            raise UsageError(f"report {shown}: bad option: {exc}") from None
        if qos not in (0, 1, 2):
            raise UsageError(f"report {shown}: qos must be 0, 1 or 2")
        self.qos = qos
        self.topic = topic
        self.station = opts.get("station") or os.environ.get("LOUPE_STATION") or getattr(self.run, "station", None) \
            or socket.gethostname()
        spool = opts.get("spool") or str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "loupe" / (
            f"mqtt-spool-{sha1(f'{host}:{port}/{topic}'.encode()).hexdigest()[:12]}.sqlite"))
        self.spool_path = Path(spool).expanduser()
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        self._spool = sqlite3.connect(str(self.spool_path), isolation_level=None, check_same_thread=False)
        self._spool.execute("PRAGMA journal_mode=WAL")
        self._spool.execute("PRAGMA synchronous=NORMAL")
        self._spool.execute("CREATE TABLE IF NOT EXISTS spool(id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
                            "payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL)")
        self.carried = self._spool.execute("SELECT COUNT(*) FROM spool").fetchone()[0]  # left by an earlier run

        self.published = 0  # acknowledged by the broker
        self.overflow = 0   # dropped: the in-memory queue was full
        self.spool_dropped = 0  # dropped: the spool was full
        self.reconnects = 0
        self._connected = threading.Event()
        self._acked: queue.SimpleQueue = queue.SimpleQueue()
        self._first_connect = threading.Event()
        self._connect_rc: list = []

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                        client_id=opts.get("client_id") or f"loupe-{self.station}-{uuid.uuid4().hex[:8]}",
                        clean_session=True)
        if user:
            c.username_pw_set(user, os.environ.get("LOUPE_MQTT_PASSWORD"))
        c.max_inflight_messages_set(0)  # the publisher thread bounds what is in flight (max_inflight)
        c.reconnect_delay_set(min_delay=1, max_delay=5)
        c.will_set(f"{topic}/status", self._status("offline", will=True), qos=1, retain=True)
        c.enable_logger(logging.getLogger("loupe.mqtt.paho"))  # shown with loupe -v
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self._client = c
        try:
            c.connect(host, port, keepalive=int(opts.get("keepalive", 15)))
        except (OSError, ValueError) as exc:
            self._spool.close()
            raise UsageError(f"report {shown}: cannot connect to the broker: {exc}") from None
        c.loop_start()
        if not self._first_connect.wait(10) or self._connect_rc[0] != 0:
            c.loop_stop()
            c.disconnect()
            self._spool.close()
            rc = self._connect_rc[0] if self._connect_rc else "no answer in 10 s"
            raise UsageError(f"report {shown}: the broker refused the connection: {rc}")
        self._q: queue.Queue = queue.Queue(maxsize=self.queue_frames)
        self._error: BaseException | None = None
        self._enqueue_event("started")
        self._thread = threading.Thread(target=self._publisher, name="loupe-mqtt-publisher", daemon=True)
        self._thread.start()

    def _status(self, state: str, will: bool = False) -> bytes:
        return json.dumps({"state": state, "station": self.station, "run_id": self.run.run_id,
                           "recipe": self.run.recipe.name, "ts": None if will else time.time()}).encode()

    # ---------------------------------------------------------------- paho callbacks (its loop thread)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        rc = 0 if not reason_code.is_failure else str(reason_code)
        if not self._first_connect.is_set():
            self._connect_rc.append(rc)
            self._first_connect.set()
        elif rc == 0:
            self.reconnects += 1
        if rc == 0:
            client.publish(f"{self.topic}/status", self._status("online"), qos=1, retain=True)
            self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self._acked.put(mid)

    # ---------------------------------------------------------------- per frame

    def write(self, result: FrameResult) -> None:
        item = (result.key, result.index, result.path, result.source, result.timestamp, result.verdict,
                result.error, result.timings,
                [(r.step, r.tool, r.verdict, r.measurements, r.failures, r.error, r.ms) for r in result.results])
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self.overflow += 1

    def _enqueue_event(self, event: str, **extra) -> None:
        self._pending_events = getattr(self, "_pending_events", [])
        self._pending_events.append((f"{self.topic}/run", json.dumps({
            "event": event, "run_id": self.run.run_id, "station": self.station, "recipe": self.run.recipe.name,
            "recipe_hash": self.run.recipe_hash, "source": self.run.source, "ts": time.time(), **extra}).encode()))

    def _payload(self, item) -> bytes:
        key, idx, path, source, ts, verdict, error, timings, steps = item
        run = self.run
        return json.dumps({
            "schema": SCHEMA, "run_id": run.run_id, "station": self.station, "recipe": run.recipe.name,
            "recipe_hash": run.recipe_hash, "key": key, "index": idx, "source": source, "path": path,
            "timestamp": ts, "verdict": verdict, "error": error, "total_ms": sum(timings.values()),
            "timings": timings,
            "results": [{"step": s, "tool": t, "verdict": v, "measurements": {k: _num(x) for k, x in m.items()},
                         "failures": f, "error": e, "ms": ms} for s, t, v, m, f, e, ms in steps]},
            allow_nan=False).encode()

    # ---------------------------------------------------------------- publisher thread

    def _publisher(self) -> None:
        import paho.mqtt.client as mqtt

        db = self._spool
        handed: dict[int, int] = {}  # paho mid -> spool id
        next_id = 0  # highest spool id handed to paho
        stopping = False
        deadline = None
        try:
            while True:
                # 1. move new results from memory to the spool
                items = []
                try:
                    items.append(self._q.get(timeout=0.05))
                    while len(items) < 1000:
                        items.append(self._q.get_nowait())
                except queue.Empty:
                    pass
                if _STOP in items:
                    items.remove(_STOP)
                    stopping = True
                    self._enqueue_event("ended", overflow=self.overflow)
                rows = [(f"{self.topic}/result", self._payload(it), self.qos, int(self.retain)) for it in items]
                rows += [(t, p, 1, 0) for t, p in getattr(self, "_pending_events", [])]
                self._pending_events = []
                if rows:
                    have = db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
                    room = max(0, self.spool_max - have)
                    if len(rows) > room:
                        self.spool_dropped += len(rows) - room
                        rows = rows[:room]
                    db.execute("BEGIN")
                    db.executemany("INSERT INTO spool(topic, payload, qos, retain) VALUES (?,?,?,?)", rows)
                    db.execute("COMMIT")
                # 2. forget what the broker acknowledged
                done = []
                while True:
                    try:
                        mid = self._acked.get_nowait()
                    except queue.Empty:
                        break
                    sid = handed.pop(mid, None)
                    if sid is not None:
                        done.append((sid,))
                if done:
                    db.executemany("DELETE FROM spool WHERE id=?", done)
                    self.published += len(done)
                # 3. hand the next messages to paho, keeping at most max_inflight unacknowledged. paho keeps
                #    what it was handed until the broker acknowledges it, and re-sends it after a reconnect
                #    (same message id), so nothing is handed twice within a run.
                if self._connected.is_set() and len(handed) < self.max_inflight:
                    for sid, topic, payload, qos, retain in db.execute(
                            "SELECT id, topic, payload, qos, retain FROM spool WHERE id>? ORDER BY id LIMIT ?",
                            (next_id, self.max_inflight - len(handed))).fetchall():
                        info = self._client.publish(topic, payload, qos=qos, retain=bool(retain))
                        next_id = sid
                        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                            log.warning("%s: message refused by the client (%s); dropped", self.shown,
                                        mqtt.error_string(info.rc))
                            db.execute("DELETE FROM spool WHERE id=?", (sid,))
                            self.spool_dropped += 1
                        elif qos == 0:
                            db.execute("DELETE FROM spool WHERE id=?", (sid,))
                            self.published += 1
                        else:
                            handed[info.mid] = sid
                        if info.rc == mqtt.MQTT_ERR_NO_CONN:  # paho sends it after the reconnect
                            break
                if stopping:
                    if deadline is None:
                        deadline = time.monotonic() + self.flush_s
                    if self._q.empty() and db.execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 0:
                        return
                    if time.monotonic() > deadline:
                        return
        except BaseException as exc:
            log.exception("the MQTT publisher failed")
            self._error = exc

    # ---------------------------------------------------------------- close

    def close(self) -> None:
        thread = getattr(self, "_thread", None)
        if thread is None:
            return
        self._thread = None
        while thread.is_alive():
            try:
                self._q.put(_STOP, timeout=0.5)
                break
            except queue.Full:
                pass
        thread.join()
        left = self._spool.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
        self._spool.close()
        c = self._client
        if self._connected.is_set():
            info = c.publish(f"{self.topic}/status", self._status("offline"), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                pass
        c.disable_logger()  # paho logs a spurious "not connected" error while its loop thread winds down
        c.disconnect()
        c.loop_stop()
        if left:
            log.warning("%s: %d messages not yet acknowledged stay in the spool %s; the next run that uses it "
                        "sends them", self.shown, left, self.spool_path)
        if self.overflow or self.spool_dropped:
            log.warning("%s: %d results dropped (queue full: %d, spool full: %d)", self.shown,
                        self.overflow + self.spool_dropped, self.overflow, self.spool_dropped)
        self.left_in_spool = left
        if self._error is not None:
            from host import LoupeError

            raise LoupeError(f"{self.shown}: publishing failed: {self._error}")
