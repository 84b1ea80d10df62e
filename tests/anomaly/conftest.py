"""Fixtures for the anomaly tests: a small generated texture set and a bundle trained on it through the CLI."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from host.testing import run_loupe

sys.path.insert(0, str(Path(__file__).parent))

from anomaly_helpers import ENV, TRAIN_ARGS  # noqa: E402


@pytest.fixture(scope="session")
def texture_data(tmp_path_factory) -> Path:
    from loupe_trainer.samples import make_texture_dataset

    return make_texture_dataset(tmp_path_factory.mktemp("tex"), "brushed_metal", n_train=30, n_test_good=8,
                                n_test_defect=4, size=128, seed=3)


@pytest.fixture(scope="session")
def anomaly_bundle(texture_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "metal"
    r = run_loupe("train", "anomaly", texture_data, "--out", out, *TRAIN_ARGS, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trained anomaly model" in r.stdout
    return out


@pytest.fixture(scope="session")
def anomaly_eval(anomaly_bundle, texture_data, tmp_path_factory) -> tuple[Path, dict]:
    """``loupe eval BUNDLE DATA --json --out DIR`` once: (DIR, the printed JSON)."""
    import json

    out = tmp_path_factory.mktemp("eval") / "eval"
    r = run_loupe("eval", anomaly_bundle, texture_data, "--json", "--out", out, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, json.loads(r.stdout)
