"""Fixtures for the optimisation tests: a tiny classifier (Fashion-MNIST) and a tiny anomaly model (textures),
both trained through the CLI, so the optimisers see exactly what users' bundles look like."""
from __future__ import annotations

from pathlib import Path

import pytest

from host.testing import run_loupe
from loupe_trainer.datasets import read_idx, write_class_folders

FMNIST = Path("/usr/share/datasets/fashion-mnist")
ENV = {"OMP_NUM_THREADS": "2"}
CLASSES = {0: "tshirt", 1: "trouser", 7: "sneaker"}




@pytest.fixture(scope="session")
def opt_fashion(tmp_path_factory) -> Path:
    src = FMNIST / "t10k-images-idx3-ubyte.gz"
    if not src.exists():
        pytest.skip(f"Fashion-MNIST not installed ({src})")
    x, y = read_idx(src), read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz")
    return write_class_folders(tmp_path_factory.mktemp("optfm") / "data", x, y, CLASSES,
                               {"train": slice(0, 16), "test": slice(300, 320)})


@pytest.fixture(scope="session")
def opt_classify_bundle(opt_fashion, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("optcb") / "fp32"
    r = run_loupe("train", "classify", opt_fashion, "--out", out, "--epochs", "1", "--input-size", "64",
                  "--pooling", "grid", "--max-minutes", "2", "-q", env=ENV)
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
