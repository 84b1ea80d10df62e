"""The MQTT line adapter: a real station driven over a real Mosquitto broker by a real paho client."""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


class Plc:
    """A bus client that sends commands and collects replies, results and state."""

    def __init__(self, port: int, topic: str):
        import paho.mqtt.client as mqtt

        self.topic, self.lock, self.msgs = topic, threading.Lock(), []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-plc")
        ready = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{topic}/#", qos=1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: ready.set()
        self.c.on_message = self._on
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert ready.wait(10)

    def _on(self, client, userdata, msg):
        kind = msg.topic.rsplit("/", 1)[1]
        if kind == "cmd":  # our own commands, echoed by the subscription to TOPIC/#
            return
        with self.lock:
            self.msgs.append((kind, json.loads(msg.payload), bool(msg.retain)))

    def of(self, kind):
        with self.lock:
            return [m for k, m, _ in self.msgs if k == kind]

    def send(self, body, timeout=30.0):
        self.c.publish(f"{self.topic}/cmd", json.dumps(body), qos=1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [r for r in self.of("reply") if r.get("id") == body.get("id")]
            if got:
                return got[0]
            time.sleep(0.02)
        raise AssertionError(f"no reply to {body}")

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def wait(fn, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    return fn()


@pytest.fixture
def station(broker, tmp_path):
    from host import create_plugin_manager
    from host.core.station import Station, load_station

    src = ROOT / "examples" / "station"
    for name in ("four-holes.yaml", "three-holes.yaml"):
        shutil.copy(src / name, tmp_path / name)
    shutil.copytree(src / "images", tmp_path / "images")
    (tmp_path / "s.yaml").write_text(f"""loupe_station: 1
jobs: {{four: four-holes.yaml, three: three-holes.yaml}}
source: folder:images
io: ["mqtt://127.0.0.1:{broker.port}/line1/cam"]
store: ["jsonl:out.jsonl"]
acknowledge: auto
""")
    pm = create_plugin_manager()
    st = Station(load_station(tmp_path / "s.yaml", pm.catalogue), pm)
    st.start()
    yield st
    st.close()


def test_commands_results_and_state_over_the_bus(station, broker):
    plc = Plc(broker.port, "line1/cam")
    try:
        online = wait(lambda: plc.of("online"))
        assert online[-1] is True
        reply = plc.send({"cmd": "trigger", "id": 1})
        assert reply["ok"] is True and reply["result_id"] >= 1
        result = wait(lambda: [r for r in plc.of("result") if r["result_id"] == reply["result_id"]])[0]
        assert result["verdict"] in ("pass", "fail") and "holes.count" in result["measurements"]
        reply = plc.send({"cmd": "job", "job": "three", "id": "j"})
        assert reply["ok"] is True and reply["job"] == "three" and station.job == "three"
        assert wait(lambda: [s for s in plc.of("state") if s["job"] == "three"])
        bad = plc.send({"cmd": "job", "job": "nope", "id": 3})
        assert bad["ok"] is False and bad["code"] == "unknown_job"
        assert plc.send({"cmd": "fly", "id": 4})["code"] == "unknown_command"
        plc.c.publish("line1/cam/cmd", b"not json", qos=1)
        assert wait(lambda: [r for r in plc.of("reply") if r.get("code") == "bad_request"])
        assert station.status()["adapters"]["mqtt://127.0.0.1:%d/line1/cam" % broker.port]["connected"] is True
    finally:
        plc.close()


def test_broker_restart_shows_an_alarm_and_the_adapter_reconnects(station, broker):
    name = "mqtt://127.0.0.1:%d/line1/cam" % broker.port
    assert wait(lambda: station.status()["adapters"][name]["connected"] is True)
    broker.stop()
    assert wait(lambda: station.status()["adapters"][name]["connected"] is False)
    assert f"adapter {name}" in station.status()["alarms"]
    assert station.wait_result(station.trigger(), timeout=30) is not None  # the line goes on without the bus
    broker.start()
    assert wait(lambda: station.status()["adapters"][name]["connected"] is True, timeout=60)
    plc = Plc(broker.port, "line1/cam")
    try:
        assert plc.send({"cmd": "trigger", "id": "after"})["ok"] is True
    finally:
        plc.close()
