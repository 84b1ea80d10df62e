"""Shared fixtures for the segmentation tests: a small generated data set and a tiny model trained via the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from host.testing import run_loupe

ENV = {"OMP_NUM_THREADS": "2"}


@pytest.fixture(scope="session")
def seg_data(tmp_path_factory) -> Path:
    """classes.txt (scratch, stain, dent), train: 6 good + 4 per class, test: 4 good + 3 per class, 96 px."""
    from loupe_trainer.segment.samples import make_segment_dataset

    return make_segment_dataset(tmp_path_factory.mktemp("seg") / "data", ("brushed_metal", "brick"), 6, 4, 4, 3,
                                size=96, seed=3)


@pytest.fixture(scope="session")
def seg_bundle(seg_data, tmp_path_factory) -> Path:
    """Trained through the CLI, tiny: 64 px crops of the 96 px images, 3 epochs of 3 steps (about 25 s on an idle
    2-core machine)."""
    out = tmp_path_factory.mktemp("segb") / "tiny"
    r = run_loupe("train", "segment", seg_data, "--out", out, "--input-size", "96", "--crop", "64", "--epochs", "3",
                  "--steps-per-epoch", "3", "--batch-size", "4", "--lr", "3e-3", "-q", env=ENV)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "trained segment model" in r.stdout
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["task"] == "segment"
    return out
