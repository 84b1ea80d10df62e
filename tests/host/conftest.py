"""Fixtures for the host tests: real images, a test plugin installed as a distribution."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def pip_install_target(src: Path, target: Path) -> None:
    """Install a distribution into ``target`` with pip (a real install: dist-info and entry points)."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True, timeout=300)


def env_with(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="session")
def support_env(tmp_path_factory) -> dict[str, str]:
    """Environment for subprocesses that sees tests/host/support, installed with pip into its own folder."""
    site = tmp_path_factory.mktemp("support-site")
    pip_install_target(HERE / "support", site)
    return env_with(site)


@pytest.fixture
def pip_target():
    """``pip_target(src, folder)`` installs a distribution into a folder; returns the env that sees it."""
    def install(src: Path, target: Path) -> dict[str, str]:
        pip_install_target(src, target)
        return env_with(target)
    return install


def write_png(path: Path, image: np.ndarray) -> Path:
    import cv2

    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture
def image_dir(tmp_path) -> Path:
    """Real photos (scikit-image) plus a corrupt, a truncated and an empty file."""
    import skimage.data as data

    d = tmp_path / "images"
    d.mkdir()
    write_png(d / "a_coins.png", data.coins())
    write_png(d / "b_camera.png", data.camera())
    write_png(d / "c_moon.png", data.moon())
    (d / "d_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    (d / "e_truncated.png").write_bytes((d / "a_coins.png").read_bytes()[:300])
    (d / "f_empty.png").write_bytes(b"")
    return d
