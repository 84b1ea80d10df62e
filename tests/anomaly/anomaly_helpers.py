"""Constants and helpers for the anomaly tests (importable: conftest puts this folder on sys.path)."""
from __future__ import annotations

import json
from pathlib import Path

ENV = {"OMP_NUM_THREADS": "2"}
TRAIN_ARGS = ["--image-size", "128", "--max-bank", "2048", "-q"]


def bundle_meta(path: Path) -> dict:
    return json.loads((Path(path) / "bundle.json").read_text())
