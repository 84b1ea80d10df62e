"""What ``loupe optimize`` needs to know about bundles trained on labelled sets (segmentation, detection):
model inputs, and which images are training and which held out. One module for both tasks: each task's
inference plugin supplies the same ``scan``, ``eval_samples``, ``preprocess`` and ``DEFAULT_NORMALISATION``."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

import numpy as np

from host import Bundle, UsageError

#: task -> the inference plugin module that reads its data sets
DATA_MODULES = {"segment": "loupe_dl_segment.data", "detect": "loupe_dl_detect.data"}


def _data(bundle: Bundle):
    return importlib.import_module(DATA_MODULES[bundle.task])


def _scan(bundle: Bundle, data: Path):
    mod = _data(bundle)
    try:
        return mod.scan(data, classes=[str(c) for c in bundle.meta.get("classes", [])] or None)
    except mod.DataError as exc:
        raise UsageError(str(exc)) from None


def prepare(bundle: Bundle, size: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """decoded image -> model input, exactly as the task's inference plugin prepares it."""
    mod = _data(bundle)
    norm = bundle.meta.get("normalisation") or mod.DEFAULT_NORMALISATION
    return lambda img: mod.preprocess([img], size, norm)


def training_paths(bundle: Bundle, data: Path) -> list[Path]:
    """Training images of the set, without the share the trainer held out for testing."""
    ds = _scan(bundle, data)
    held = set(((bundle.meta.get("split") or {}).get("test_names")) or [])
    return [s.image for s in ds.train if s.name not in held]


def eval_paths(bundle: Bundle, data: Path) -> list[Path]:
    try:
        samples, _ = _data(bundle).eval_samples(_scan(bundle, data), bundle.meta.get("split"))
    except UsageError:
        return []
    return [s.image for s in samples]
