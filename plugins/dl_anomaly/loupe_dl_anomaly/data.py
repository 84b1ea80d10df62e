"""Anomaly data: MVTec AD folders, image decoding and the model's input preparation.

Shared by the inference runtime and the trainer (which imports it), so that
training and inference prepare images identically. numpy + OpenCV only.

Layouts accepted as DATA:

* an MVTec AD category: ``train/good/*``, optional ``test/<type>/*`` (``good``
  is normal, every other folder a defect type), optional
  ``ground_truth/<type>/<stem>_mask.png``;
* a plain folder of good images (training only).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from host import IMAGE_EXTENSIONS as IMAGE_EXTS, UsageError, read_image, use_opencv, to_rgb8  # noqa: F401

use_opencv(cv2)


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def prepare(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Decoded image -> the model input: float32 (1, 3, H, W), RGB, 0..255 (the graph normalises).

    ``size`` is (height, width). Shrinking uses area interpolation, enlarging bilinear.
    """
    return prepare_rgb(to_rgb8(image), size)


def prepare_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """As ``prepare`` for an image already converted by ``to_rgb8`` (uint8 RGB, HxWx3)."""
    h, w = size
    if rgb.shape[:2] != (h, w):
        interp = cv2.INTER_AREA if rgb.shape[0] > h or rgb.shape[1] > w else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (w, h), interpolation=interp)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)


@dataclass
class Sample:
    path: Path
    label: int           # 0 good, 1 defective
    kind: str            # "good" or the defect type
    mask: Path | None = None


@dataclass
class AnomalyData:
    root: Path
    train: list[Path]
    test: list[Sample]
    layout: str          # "mvtec" or "folder"

    @property
    def has_masks(self) -> bool:
        return any(s.mask is not None for s in self.test if s.label == 1)

    def summary(self) -> dict:
        kinds: dict[str, int] = {}
        for s in self.test:
            kinds[s.kind] = kinds.get(s.kind, 0) + 1
        return {"root": str(self.root), "layout": self.layout, "n_train": len(self.train),
                "n_test": len(self.test), "test_types": kinds, "masks": self.has_masks}


def _mask_for(root: Path, kind: str, img: Path) -> Path | None:
    gt = root / "ground_truth" / kind
    for cand in (gt / f"{img.stem}_mask.png", gt / f"{img.stem}.png", gt / f"{img.stem}_mask{img.suffix}"):
        if cand.is_file():
            return cand
    return None


def load_test_split(folder: Path, root: Path | None = None) -> list[Sample]:
    """``folder/<type>/*`` (``good`` = normal) with masks from ``root/ground_truth/<type>/``."""
    root = root or folder.parent
    out: list[Sample] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        good = sub.name.lower() in ("good", "ok", "normal")
        for img in list_images(sub):
            out.append(Sample(img, 0 if good else 1, sub.name, None if good else _mask_for(root, sub.name, img)))
    return out


def discover(data: str | Path, need_train: bool = True, need_test: bool = False) -> AnomalyData:
    """Find the train and test images of DATA (MVTec AD category or a plain folder of good images)."""
    root = Path(data)
    if not root.is_dir():
        raise UsageError(f"{root}: data folder not found")
    if (root / "train").is_dir() or (root / "test").is_dir():
        train = list_images(root / "train" / "good")
        if not train and (root / "train").is_dir():
            train = list_images(root / "train")  # train/*.png without a good/ level
        test = load_test_split(root / "test", root) if (root / "test").is_dir() else []
        layout = "mvtec"
    else:
        train, test, layout = list_images(root), [], "folder"
    if need_train and not train:
        raise UsageError(f"{root}: no training images (expected {root}/train/good/*.png in the MVTec AD layout, "
                         f"or a folder of good images)")
    if need_test and not test:
        raise UsageError(f"{root}: no test images (expected {root}/test/<type>/*.png, with test/good for normal "
                         f"images, in the MVTec AD layout)")
    return AnomalyData(root, train, test, layout)


def read_mask(path: Path | None, shape: tuple[int, int]) -> np.ndarray:
    """Bool mask of the given (h, w); all False when ``path`` is None."""
    if path is None:
        return np.zeros(shape, bool)
    m = read_image(path)
    if m.ndim == 3:
        m = m.max(axis=2)
    if m.shape[:2] != shape:
        m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return m > 0
