"""Public data sets used by the benchmarks and tests: Fashion-MNIST from Debian's
``dataset-fashion-mnist`` (IDX files, gzipped or not, under /usr/share/datasets/fashion-mnist)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) of unsigned bytes into an array of its stored shape."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    nd = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * nd).reshape(dims)


def fashion_mnist_file(stem: str, root: Path = FASHION_MNIST) -> Path:
    """``train-images-idx3-ubyte`` etc. as installed (with or without ``.gz``); FileNotFoundError if absent."""
    for p in (root / f"{stem}.gz", root / stem):
        if p.exists():
            return p
    raise FileNotFoundError(f"Fashion-MNIST not found: {root}/{stem}[.gz] (apt install dataset-fashion-mnist)")


def fashion_mnist(split: str = "t10k", root: Path = FASHION_MNIST) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) and labels (N,) of the ``train`` or ``t10k`` split."""
    return (read_idx(fashion_mnist_file(f"{split}-images-idx3-ubyte", root)),
            read_idx(fashion_mnist_file(f"{split}-labels-idx1-ubyte", root)))


def write_class_folders(root: str | Path, x: np.ndarray, y: np.ndarray, classes: dict[int, str],
                        splits: dict[str, slice]) -> Path:
    """Write ``root/<split>/<class>/<index>.png`` for each label in ``classes`` (label -> folder name),
    taking, per class, the images at ``splits[split]`` among that class's indices (deterministic)."""
    import cv2

    root = Path(root)
    for label, name in classes.items():
        ids = np.flatnonzero(y == label)
        for split, chosen in splits.items():
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in ids[chosen]:
                if not cv2.imwrite(str(d / f"{i:05d}.png"), x[i]):
                    raise OSError(f"{d}: cannot write images")
    return root
