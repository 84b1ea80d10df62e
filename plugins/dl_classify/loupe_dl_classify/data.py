"""Class-folder data sets and the image preprocessing shared by training and inference (numpy + OpenCV).

Layouts understood (the classification layout users already have)::

    DATA/train/<class>/*.png   [DATA/test/<class>/*.png]   [DATA/unlabelled/**/*.png]
    DATA/<class>/*.png                                  (no train/ folder: all of it is training data)

``unlabelled/`` (beside ``train/``, or beside the class folders) holds images of the same
parts without a class, at any depth: the trainer pseudo-labels them for its head
(``ClassifyParams.max_unlabelled``). It is never a class.

Without a ``test/`` folder the held-out split is a deterministic stratified
fraction of the training images (``stratified_split``), so ``loupe eval``
scores exactly the images the trainer kept out.

The trainer imports ``preprocess`` from here, so the exported model and the
runtime see identical inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from host import IMAGE_EXTENSIONS, read_image, use_opencv, to_rgb8  # noqa: F401 (the one reader)
# the one model-input preparation (resize, normalise, NCHW RGB), re-exported under this module's names
from host import DEFAULT_NORMALISATION, normalise, resize_to  # noqa: F401
from host import prepare_images as preprocess  # noqa: F401

use_opencv(cv2)



# -------------------------------------------------------------- data sets


@dataclass
class Sample:
    path: Path
    label: int


@dataclass
class ClassFolders:
    """Images found under a class-folder data set."""

    root: Path
    classes: list[str]
    train: list[Sample]
    test: list[Sample]          # empty when there is no test/ folder
    has_test: bool
    unlabelled: list[Path] = field(default_factory=list)   # images under DATA/unlabelled/, sorted

    def counts(self, split: str = "train") -> dict[str, int]:
        out = {c: 0 for c in self.classes}
        for s in getattr(self, split):
            out[self.classes[s.label]] += 1
        return out


UNLABELLED = "unlabelled"   # DATA/unlabelled/: images without a class (never a class folder)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_dirs(folder: Path) -> dict[str, Path]:
    return {d.name: d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def scan(data: str | Path, classes: list[str] | None = None) -> ClassFolders:
    """Find the class folders of ``data``; raise ValueError with a clear message when the layout is wrong.

    ``classes`` fixes the class order (a trained model's); test classes outside it are an error.
    """
    root = Path(data)
    if not root.is_dir():
        raise ValueError(f"{root}: data folder not found")
    train_dir = root / "train" if (root / "train").is_dir() else root
    test_dir = root / "test" if (root / "test").is_dir() else None
    train_classes = {k: v for k, v in _class_dirs(train_dir).items()
                     if not (train_dir is root and k in ("test", UNLABELLED))}
    if classes is None:
        classes = [c for c, d in train_classes.items() if _images_in(d)]
        if len(classes) < 2:
            raise ValueError(f"{train_dir}: expected one sub-folder of images per class (at least two classes), "
                             f"found {len(classes)} ({', '.join(classes) or 'none'})")
    index = {c: i for i, c in enumerate(classes)}
    train = [Sample(p, index[c]) for c, d in train_classes.items() if c in index for p in _images_in(d)]
    test: list[Sample] = []
    if test_dir is not None:
        for c, d in _class_dirs(test_dir).items():
            files = _images_in(d)
            if not files:
                continue
            if c not in index:
                raise ValueError(f"{d}: test class {c!r} is not one of the classes {classes}")
            test += [Sample(p, index[c]) for p in files]
    unl_dir = root / UNLABELLED
    unlabelled = sorted(p for p in unl_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS) \
        if unl_dir.is_dir() else []
    return ClassFolders(root, list(classes), train, test, test_dir is not None and bool(test), unlabelled)


def stratified_split(labels: list[int] | np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: (kept indices, held-out indices), ``fraction`` of each class held out.

    Every class with at least two images keeps at least one and holds out at least one.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            n = min(max(n, 1), len(idx) - 1)
        else:
            n = 0
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def test_samples(folders: ClassFolders, split: dict | None) -> tuple[list[Sample], str]:
    """The images ``loupe eval`` scores: test/ when present, else the trainer's held-out split."""
    if folders.has_test:
        return folders.test, "test folder"
    if split and split.get("test_fraction"):
        _, held = stratified_split([s.label for s in folders.train], split["test_fraction"], split["seed"])
        return [folders.train[i] for i in held], f"held-out {split['test_fraction']:.0%} of train (seed {split['seed']})"
    return folders.train, "all images (no test folder, no held-out split recorded)"
