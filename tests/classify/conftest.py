"""Shared fixtures for the classification tests: a small real data set (Fashion-MNIST PNGs) and a tiny model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from host.testing import run_loupe
from loupe_trainer.datasets import fashion_mnist_file, read_idx, write_class_folders

FMNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = {0: "tshirt", 1: "trouser", 7: "sneaker"}   # Fashion-MNIST label -> folder name


def _find(stem: str) -> Path:
    try:
        return fashion_mnist_file(stem, FMNIST)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def fmnist_small(tmp_path_factory) -> Path:
    """train/<class>/ with 12 images and test/<class>/ with 15 images of three Fashion-MNIST classes."""
    x = read_idx(_find("t10k-images-idx3-ubyte"))
    y = read_idx(_find("t10k-labels-idx1-ubyte"))
    return write_class_folders(tmp_path_factory.mktemp("fmnist") / "data", x, y, CLASSES,
                               {"train": slice(0, 12), "test": slice(200, 215)})


@pytest.fixture(scope="session")
def tiny_bundle(fmnist_small, tmp_path_factory) -> Path:
    """A model trained through the CLI: 64 px input, grid pooling, linear probe + 1 fine-tuning epoch."""
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    r = run_loupe("train", "classify", fmnist_small, "--out", out, "--epochs", "1", "--input-size", "64",
                  "--pooling", "grid", "--max-minutes", "3", "-q", env={"OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trained classify model" in r.stdout
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["task"] == "classify"
    return out
