"""What ``loupe optimize`` needs to know about detection bundles: model inputs and which images are whose."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from host import Bundle, UsageError


def _scan(bundle: Bundle, data: Path):
    from loupe_dl_detect.data import DataError, scan

    try:
        return scan(data, classes=[str(c) for c in bundle.meta.get("classes", [])] or None)
    except DataError as exc:
        raise UsageError(str(exc)) from None


def prepare(bundle: Bundle, size: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """decoded image -> model input, exactly as ``loupe_dl_detect`` prepares it."""
    from loupe_dl_detect.data import DEFAULT_NORMALISATION, preprocess

    norm = bundle.meta.get("normalisation") or DEFAULT_NORMALISATION
    return lambda img: preprocess([img], size, norm)


def training_paths(bundle: Bundle, data: Path) -> list[Path]:
    """Training images of a detection set, without the share the trainer held out for testing."""
    ds = _scan(bundle, data)
    held = set(((bundle.meta.get("split") or {}).get("test_names")) or [])
    return [s.image for s in ds.train if s.name not in held]


def eval_paths(bundle: Bundle, data: Path) -> list[Path]:
    from loupe_dl_detect.data import eval_samples

    try:
        samples, _ = eval_samples(_scan(bundle, data), bundle.meta.get("split"))
    except UsageError:
        return []
    return [s.image for s in samples]
