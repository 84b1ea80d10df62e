"""Helpers for the plant-data tests: images with known gray means, recipes, running the CLI."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ images and recipes


def loupe_exe() -> str:
    return str(Path(sys.executable).with_name("loupe"))


def write_gray_images(folder: Path, means: list[float], prefix: str = "img") -> list[Path]:
    """10x10 8-bit images whose mean gray level is exactly each of ``means`` (to 0.01)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, m in enumerate(means):
        total = int(round(m * 100))
        base, extra = divmod(total, 100)
        img = np.full(100, base, np.uint8)
        img[:extra] += 1
        p = folder / f"{prefix}_{i:04d}.png"
        assert cv2.imwrite(str(p), img.reshape(10, 10))
        out.append(p)
    return out


def write_recipe(path: Path, lo: float | None = None, hi: float | None = None, name: str = "gauge") -> Path:
    lim = ""
    if lo is not None or hi is not None:
        parts = ", ".join(f"{k}: {v}" for k, v in (("min", lo), ("max", hi)) if v is not None)
        lim = f"\n    limits: {{mean: {{{parts}}}}}"
    path.write_text(f"loupe_recipe: 1\nname: {name}\ninspect:\n  - tool: classical.intensity\n    name: gray{lim}\n")
    return path


def run_loupe(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([loupe_exe(), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def wait_until(cond, timeout: float = 60.0, what: str = "condition", proc=None) -> None:
    t0 = time.time()
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended early while waiting for {what}: {proc.communicate()}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def cli(capsys, *args: str, env: dict[str, str] | None = None):
    """Run the ``loupe`` command line in this process (as ``loupe ARGS``); returns rc, stdout, stderr."""
    from types import SimpleNamespace

    from host.cli import main

    env = env or {}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    capsys.readouterr()
    try:
        rc = main(list(args))
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=rc, stdout=out, stderr=err)
