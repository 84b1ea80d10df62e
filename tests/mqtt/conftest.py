"""A real Mosquitto broker for the MQTT tests, started on a free loopback port with its own config file
(persistence on, so a restart keeps the subscriber's session), and a real paho subscriber."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, exe: str, folder: Path):
        self.exe, self.folder, self.port = exe, folder, free_port()
        self.conf = folder / "mosquitto.conf"
        (folder / "db").mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {folder / 'db'}/\nlog_dest file {folder / 'broker.log'}\n"
                             f"max_queued_messages 100000\n")
        if os.geteuid() == 0:  # as root, mosquitto would switch to the 'mosquitto' user, who cannot reach tmp_path
            with open(self.conf, "a") as fh:
                fh.write("user root\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        t0 = time.time()
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto did not start: {self.proc.stderr.read().decode()}")
                if time.time() - t0 > 10:
                    raise RuntimeError("mosquitto did not open its port in 10 s")
                time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def broker(tmp_path):
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if exe is None:
        pytest.fail("Mosquitto is not installed: run scripts/install-data.sh (Debian package 'mosquitto')")
    b = Broker(exe, tmp_path / "broker")
    b.start()
    yield b
    b.stop(signal.SIGKILL)


class Subscriber:
    """A paho client with a persistent session (clean_session=False), collecting every message."""

    def __init__(self, port: int, topic: str, client_id: str = "loupe-test-sub"):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, dict | str, bool]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.c.reconnect_delay_set(min_delay=1, max_delay=1)
        self.subscribed = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port, keepalive=5)
        self.c.loop_start()
        assert self.subscribed.wait(10), "the subscriber could not subscribe"

    def _on_message(self, client, userdata, msg):
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            payload = msg.payload.decode()
        with self.lock:
            self.messages.append((msg.topic, payload, bool(msg.retain)))

    def on(self, suffix: str) -> list:
        with self.lock:
            return [(p, r) for t, p, r in self.messages if t.endswith(suffix)]

    def keys(self) -> set[str]:
        return {p["key"] for p, _ in self.on("/result")}

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def subscriber():
    subs = []

    def make(port, topic, client_id="loupe-test-sub"):
        s = Subscriber(port, topic, client_id)
        subs.append(s)
        return s

    yield make
    for s in subs:
        s.close()
