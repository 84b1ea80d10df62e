"""Fixtures for the optimisation tests: a tiny classifier (Fashion-MNIST) and a tiny anomaly model (textures),
both trained through the CLI, so the optimisers see exactly what users' bundles look like."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from host.testing import run_loupe
from loupe_trainer.datasets import read_idx

FMNIST = Path("/usr/share/datasets/fashion-mnist")
ENV = {"OMP_NUM_THREADS": "2"}
CLASSES = {0: "tshirt", 1: "trouser", 7: "sneaker"}




@pytest.fixture(scope="session")
def opt_fashion(tmp_path_factory) -> Path:
    import cv2

    src = FMNIST / "t10k-images-idx3-ubyte.gz"
    if not src.exists():
        pytest.skip(f"Fashion-MNIST not installed ({src})")
    x, y = read_idx(src), read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz")
    root = tmp_path_factory.mktemp("optfm") / "data"
    for label, name in CLASSES.items():
        ids = np.flatnonzero(y == label)
        for split, chosen in (("train", ids[:16]), ("test", ids[300:320])):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                cv2.imwrite(str(d / f"{i:05d}.png"), x[i])
    return root


@pytest.fixture(scope="session")
def opt_classify_bundle(opt_fashion, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("optcb") / "fp32"
    r = run_loupe("train", "classify", opt_fashion, "--out", out, "--epochs", "1", "--input-size", "64",
                  "--max-minutes", "2", "-q", env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def opt_texture(tmp_path_factory) -> Path:
    from loupe_trainer.samples import make_texture_dataset

    root = tmp_path_factory.mktemp("opttex")
    make_texture_dataset(root, "fabric", 16, 8, 8, size=128, seed=3)
    return root / "fabric"


@pytest.fixture(scope="session")
def opt_anomaly_bundle(opt_texture, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("optab") / "fp32"
    r = run_loupe("train", "anomaly", opt_texture, "--out", out, "--image-size", "128", "-q", env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    return out
