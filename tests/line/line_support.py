"""Helpers of the line tests (importable under a name no other test folder uses)."""
from __future__ import annotations
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
EXAMPLE = ROOT / "examples" / "station"
sys.path.insert(0, str(HERE))

#: subprocesses load only the plugins the station needs (faster start-up)
SERVE_ENV = {"LOUPE_PLUGINS": "classical,line", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def write_images(folder: Path, holes=(4, 4, 4, 3, 4, 3), size: int = 1) -> None:
    sys.path.insert(0, str(EXAMPLE))
    from make_images import plate  # the example's own image maker

    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(holes):
        img = plate(n, i % 3)
        if size > 1:
            img = cv2.resize(img, None, fx=size, fy=size, interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(folder / f"plate-{i}.png"), img)


def write_station(folder: Path, extra: str = "", io: str = "[]", name: str = "station.yaml",
                  buffer: int = 4, acknowledge: str = "manual", trigger: str = "software") -> Path:
    for f in ("four-holes.yaml", "three-holes.yaml"):
        shutil.copy(EXAMPLE / f, folder / f)
    if not (folder / "images").is_dir():
        write_images(folder / "images")
    p = folder / name
    p.write_text(f"""loupe_station: 1
name: test-line
jobs:
  four: four-holes.yaml
  three: three-holes.yaml
source: folder:images
trigger: {trigger}
io: {io}
store: [sqlite:results.sqlite]
buffer: {buffer}
acknowledge: {acknowledge}
{extra}""")
    return p


class Client:
    """A plain socket client of the TCP ASCII channel."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 20.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def recv(self) -> str:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode()

    def cmd(self, line: str) -> str:
        self.send(line)
        return self.recv()

    def close(self) -> None:
        self.sock.close()


def loupe_exe() -> list[str]:
    exe = Path(sys.executable).with_name("loupe")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "host.cli"]


class Served:
    """``loupe serve`` in a subprocess; ``port`` is parsed from its ready line."""

    def __init__(self, station: Path, *args: str):
        self.proc = subprocess.Popen(loupe_exe() + ["serve", str(station), *args], cwd=station.parent,
                                     env={**os.environ, **SERVE_ENV}, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        deadline = time.monotonic() + 60
        self.port = None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"loupe serve exited {self.proc.wait()}: {self.proc.stderr.read()}")
            self.lines.append(line)
            m = re.search(r"io: tcp://[^:]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        assert self.port, self.lines

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, "".join(self.lines) + out, err


