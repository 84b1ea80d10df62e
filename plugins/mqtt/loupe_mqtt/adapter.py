"""The MQTT line adapter: a station driven and watched over the plant's message bus.

``io: [mqtt://HOST:PORT/TOPIC]`` in a station (the same spec shape as the MQTT reporter;
user name in the spec, password from ``LOUPE_MQTT_PASSWORD``). The adapter

- subscribes to ``TOPIC/cmd`` (QoS 1) for commands, JSON objects
  ``{"cmd": "trigger"|"job"|"ack"|"start"|"stop"|"reset"|"reload"|"state", "job": ..., "result_id": ...,
  "id": <anything, echoed>}``, and answers each on ``TOPIC/reply`` with
  ``{"id": ..., "ok": true, ...}`` or ``{"id": ..., "ok": false, "code": ..., "message": ...}``;
- publishes ``TOPIC/state`` (retained: state, job, counts) on every state or job change, and
  ``TOPIC/result`` (QoS 1) for every result: ``{"result_id", "job", "verdict", "measurements",
  "failures", "created"}``; ``TOPIC/online`` is ``true`` (retained) while connected, and the
  broker's last will sets it to ``false``.

Commands are handled on paho's network thread and only call the station's control handle,
which never inspects on the caller's thread; results are published from the adapter's own
event thread, so a slow broker never delays the line (paho queues; the station's event
queue is bounded and counts what it drops).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from pydantic import Field

from host import LineAdapter, Params, StationActionError, StationEvent, UsageError

from .reporter import _num, parse_spec

log = logging.getLogger("loupe.mqtt")


class MqttLineParams(Params):
    qos: int = Field(1, ge=0, le=2, description="QoS of results and replies")
    client_id: str = Field("", description="MQTT client id (default: loupe-station-<pid>)")


class MqttLineAdapter(LineAdapter):
    """A station on the plant's MQTT bus: commands in on TOPIC/cmd, state and results out."""

    scheme = "mqtt"
    description = "MQTT line adapter: commands on TOPIC/cmd, replies, retained state and results on the bus"
    Params = MqttLineParams

    def __init__(self, target: str, params, control):
        super().__init__(target, params, control)
        self.host, self.port, self.user, self.topic, _, self.shown = parse_spec(target)
        self.name = f"{self.scheme}:{target}"
        self._client = None
        self._connected = threading.Event()

    @property
    def endpoint(self) -> str:
        return self.shown

    def start(self) -> None:
        import paho.mqtt.client as mqtt

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                        client_id=self.params.client_id or f"loupe-station-{os.getpid()}")
        if self.user:
            c.username_pw_set(self.user, os.environ.get("LOUPE_MQTT_PASSWORD"))
        c.will_set(f"{self.topic}/online", "false", qos=1, retain=True)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self._client = c
        self.control.set_adapter_connected(self.name, False, "connecting")
        try:
            c.connect_async(self.host, self.port, keepalive=10)
        except (OSError, ValueError) as exc:
            raise UsageError(f"io {self.shown}: {exc}") from None
        c.loop_start()
        self._connected.wait(5)  # the station starts either way; the alarm shows until the broker answers

    # ---------------------------------------------------------------- paho callbacks

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if getattr(reason_code, "is_failure", False):
            self.control.set_adapter_connected(self.name, False, f"broker refused: {reason_code}")
            return
        client.subscribe(f"{self.topic}/cmd", qos=1)
        client.publish(f"{self.topic}/online", "true", qos=1, retain=True)
        self._publish_state()
        self.control.set_adapter_connected(self.name, True, "connected")
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        self._connected.clear()
        self.control.set_adapter_connected(self.name, False, f"disconnected ({reason_code})")

    def _on_message(self, client, userdata, msg) -> None:
        try:
            request = json.loads(msg.payload)
            if not isinstance(request, dict):
                raise ValueError("a command is a JSON object")
        except ValueError as exc:
            self._reply({"id": None, "ok": False, "code": "bad_request", "message": str(exc)})
            return
        self._reply(self.handle(request))

    # ---------------------------------------------------------------- commands

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        ctl = self.control
        cmd = request.get("cmd")
        out: dict[str, Any] = {"id": request.get("id"), "cmd": cmd}
        try:
            if cmd == "trigger":
                out["result_id"] = ctl.trigger()
            elif cmd == "job":
                ctl.select_job(str(request.get("job", "")))
            elif cmd == "ack":
                rid = request.get("result_id")
                ctl.acknowledge(int(rid) if rid is not None else None)
            elif cmd == "start":
                ctl.start_continuous()
            elif cmd == "stop":
                ctl.stop_continuous()
            elif cmd == "reset":
                ctl.reset()
            elif cmd == "reload":
                ctl.reload()
            elif cmd != "state":
                return {**out, "ok": False, "code": "unknown_command",
                        "message": "cmd is one of trigger, job, ack, start, stop, reset, reload, state"}
        except StationActionError as exc:
            return {**out, "ok": False, "code": exc.code, "message": str(exc)}
        except (TypeError, ValueError) as exc:
            return {**out, "ok": False, "code": "bad_request", "message": str(exc)}
        return {**out, "ok": True, "state": ctl.state, "job": ctl.job}

    def _reply(self, body: dict[str, Any]) -> None:
        if self._client is not None:
            self._client.publish(f"{self.topic}/reply", json.dumps(body), qos=self.params.qos)

    def _publish_state(self) -> None:
        st = self.control.status()
        body = {"state": st["state"], "job": st["job"], "counts": st["counts"], "missed": st["missed"],
                "overrun": st["overrun"], "time": time.time()}
        self._client.publish(f"{self.topic}/state", json.dumps(body), qos=1, retain=True)

    # ---------------------------------------------------------------- events

    def on_event(self, event: StationEvent) -> None:
        if self._client is None:
            return
        if event.kind == "result_ready" and event.result is not None:
            r = event.result
            body = {"result_id": r.result_id, "job": r.job, "verdict": r.verdict, "created": r.created,
                    "measurements": {k: _num(v) for k, v in r.measurements.items()}, "failures": r.failures}
            self._client.publish(f"{self.topic}/result", json.dumps(body), qos=self.params.qos)
        elif event.kind in ("state_changed", "job_changed"):
            self._publish_state()

    def close(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            c.publish(f"{self.topic}/online", "false", qos=1, retain=True).wait_for_publish(2)
            c.disconnect()
            c.loop_stop()
