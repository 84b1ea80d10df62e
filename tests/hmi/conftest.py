"""A real station with the operator screen (`loupe serve` in a subprocess), and a real browser.

The station has two jobs on one folder of images (plates with 4 and 3 holes, and a QR code
whose text is an HTML injection attempt), a TCP adapter for triggers, and the screen with a
secrets file holding an engineer, an operator and an operator token.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))

from hmi_helpers import PASSWORDS, QR_TEXT  # noqa: E402


def _plate(n_holes: int) -> np.ndarray:
    img = np.full((130, 160), 200, np.uint8)
    for x, y in [(40, 40), (120, 40), (40, 90), (120, 90)][:n_holes]:
        cv2.circle(img, (x, y), 12, 30, -1, lineType=cv2.LINE_AA)
    return img


def _qr(text: str) -> np.ndarray:
    code = cv2.QRCodeEncoder.create().encode(text)
    code = cv2.resize(code, None, fx=6, fy=6, interpolation=cv2.INTER_NEAREST)
    return cv2.copyMakeBorder(code, 24, 24, 24, 24, cv2.BORDER_CONSTANT, value=255)


def _loupe(*args, **kw):
    exe = Path(sys.executable).with_name("loupe")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="session")
def station(tmp_path_factory):
    d = tmp_path_factory.mktemp("hmi-station")
    images = d / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a-plate4.png"), _plate(4))
    cv2.imwrite(str(images / "b-plate3.png"), _plate(3))
    cv2.imwrite(str(images / "c-qr.png"), _qr(QR_TEXT))
    shutil.copy(ROOT / "examples" / "station" / "four-holes.yaml", d / "four-holes.yaml")
    (d / "qr.yaml").write_text("loupe_recipe: 1\nname: qr\ninspect:\n  - tool: classical.qrcode\n    name: code\n"
                               "    limits: {count: {min: 1}}\n")
    secrets = d / "secrets.yaml"
    for user, role in (("eng", "engineer"), ("op", "operator")):
        r = _loupe("hmi", "user", secrets, user, "--role", role, "--password-stdin", input=PASSWORDS[user] + "\n")
        assert r.returncode == 0, r.stderr
    r = _loupe("hmi", "token", secrets, "dash", "--role", "operator")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    (d / "station.yaml").write_text(f"""loupe_station: 1
name: hmi-test
jobs: {{four: four-holes.yaml, qr: qr.yaml}}
source: folder:images
trigger: software
io: [tcp://127.0.0.1:0]
store: [sqlite:results.sqlite]
buffer: 64
acknowledge: auto
hmi: {{listen: "127.0.0.1:0", secrets: secrets.yaml, public_view: true}}
""")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("loupe")), "serve", "station.yaml"], cwd=d,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    endpoints = {}
    deadline = time.monotonic() + 180
    lines = []
    while time.monotonic() < deadline and len(endpoints) < 2:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"io: (http|tcp)://([\d.]+):(\d+)", line)
        if m:
            endpoints[m.group(1)] = (m.group(2), int(m.group(3)))
    assert len(endpoints) == 2, "".join(lines)
    host, port = endpoints["http"]
    info = {"dir": d, "url": f"http://{host}:{port}", "tcp": endpoints["tcp"], "token": token, "proc": proc}
    yield info
    family = descendants(proc.pid)
    assert family, "the operator screen runs in a child process of the station"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    assert wait_gone(family) == [], "processes left behind by `loupe serve` after SIGTERM"


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    """The pids still running (zombies count as gone) after waiting up to ``timeout`` seconds."""
    def alive(p: int) -> bool:
        try:
            return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture(scope="session")
def browser():
    from playwright import sync_api as pw_sync
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed (make test installs it)"
    with pw_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()
