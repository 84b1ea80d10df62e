"""Shared fixtures for the detection tests: a small generated parts set and a tiny model trained through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from host.testing import run_loupe

ENV = {"OMP_NUM_THREADS": "2"}


@pytest.fixture(scope="session")
def parts_small(tmp_path_factory) -> Path:
    """24 training and 12 test scenes of 160 x 160 px, two part classes, 2-3 larger parts each (COCO layout)."""
    from loupe_trainer.detect.samples import make_parts_dataset

    return make_parts_dataset(tmp_path_factory.mktemp("parts") / "data", n_train=24, n_test=12, size=160, seed=3,
                              classes=("nut", "screw"), objects=(2, 3), scale=(0.15, 0.28))


@pytest.fixture(scope="session")
def tiny_detector(parts_small, tmp_path_factory) -> Path:
    """A detector trained through the CLI: 128 px input, 96 px crops, a few short epochs; with the verifier
    (``--verify``: its linear layer alone, at most 4 candidates per image, to keep it a few seconds)."""
    out = tmp_path_factory.mktemp("bundle") / "det"
    r = run_loupe("train", "detect", parts_small, "--out", out, "--input-size", "128", "--crop", "96",
                  "--epochs", "5", "--steps-per-epoch", "4", "--patience", "5", "--max-minutes", "60", "-q",
                  "--verify", "--verify-epochs", "0", "--verify-candidates", "4", env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["task"] == "detect" and meta["classes"] == ["nut", "screw"] and meta["stride"] == 8
    return out
