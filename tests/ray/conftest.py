"""One local Ray instance for the whole session (started in this process, joined by the CLI runs).

The instance has 3 CPU slots (2 workers + Ray Data's own small tasks), no dashboard and a
200 MB object store. Its workers see the host tests' support plugin (a slow step, a step that
raises), installed with pip into its own folder, as do the CLI subprocesses.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def support_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("ray-support-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(ROOT / "tests" / "host" / "support")],
                   check=True, capture_output=True, timeout=300)
    return site


@pytest.fixture(scope="session")
def ray_address(support_site) -> str:
    ray = pytest.importorskip("ray")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(support_site), old or ""])
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ctx = ray.init(num_cpus=3, include_dashboard=False, object_store_memory=200 * 1024 * 1024,
                       log_to_driver=False, configure_logging=False)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="session")
def env(support_site) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(support_site), os.environ.get("PYTHONPATH", "")]),
            "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Path:
    """Real photos (scikit-image) at several exposures, in two sub-folders, plus broken files."""
    import cv2
    import skimage.data as data

    d = tmp_path_factory.mktemp("archive")
    photos = {"coins": data.coins(), "camera": data.camera(), "moon": data.moon(), "page": data.page()}
    i = 0
    for sub in ("day1", "day2"):
        (d / sub).mkdir()
        for name, img in photos.items():
            for gain in (0.5, 0.8, 1.0, 1.3, 1.6):
                out = np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)[::2, ::2]
                assert cv2.imwrite(str(d / sub / f"{i:03d}_{name}_{gain}.png"), out)
                i += 1
    (d / "day2" / "900_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    (d / "day2" / "901_empty.png").write_bytes(b"")
    return d
