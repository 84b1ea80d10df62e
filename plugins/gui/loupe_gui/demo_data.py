"""Small images with a known truth, for the screenshots and the GUI tests.

``parts_images``: a tray of dark washers on a lit background (with an
illumination gradient and sensor noise); some images miss parts, so a blob
count limit fails on them. ``fashion_classes``: a few Fashion-MNIST classes as
class folders (``train/<class>``, ``test/<class>``) from the Debian data set.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_NAMES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def parts_image(rows: int = 3, cols: int = 4, missing: tuple[int, ...] = (), seed: int = 0,
                size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """A BGR image of ``rows * cols`` washers minus ``missing`` (indices); returns uint8 BGR."""
    import cv2

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bg = 185 + 30 * (xx / w) - 15 * (yy / h)
    img = np.dstack([bg * 0.97, bg, bg * 1.02]).astype(np.float32)
    pitch_x, pitch_y = w / (cols + 0.5), h / (rows + 0.5)
    k = 0
    for r in range(rows):
        for c in range(cols):
            if k not in missing:
                cx = int(pitch_x * (c + 0.75) + rng.normal(0, 2))
                cy = int(pitch_y * (r + 0.75) + rng.normal(0, 2))
                cv2.circle(img, (cx, cy), 34, (60, 62, 66), -1, cv2.LINE_AA)
                cv2.circle(img, (cx, cy), 27, (78, 80, 84), 2, cv2.LINE_AA)   # chamfer
                cv2.circle(img, (cx, cy), 13, tuple(float(v) for v in img[cy, cx + 40]), -1, cv2.LINE_AA)
            k += 1
    img += rng.normal(0, 3.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def parts_folder(out: Path, n: int = 6, rows: int = 3, cols: int = 4) -> dict[str, int]:
    """Write ``n`` tray images to ``out``; returns file name -> number of parts (the truth)."""
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n):
        missing = () if i % 3 else ((i * 5) % (rows * cols),)
        name = f"tray_{i:02d}.png"
        cv2.imwrite(str(out / name), parts_image(rows, cols, missing, seed=i))
        truth[name] = rows * cols - len(missing)
    return truth


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_classes(out: Path, classes: tuple[int, ...] = (1, 7, 8), n_train: int = 16, n_test: int = 8,
                    upscale: int = 1) -> Path:
    """Class folders of Fashion-MNIST images (PNG); returns ``out``."""
    import cv2

    out = Path(out)
    xs, ys = _idx(FASHION / "train-images-idx3-ubyte.gz"), _idx(FASHION / "train-labels-idx1-ubyte.gz")
    xt, yt = _idx(FASHION / "t10k-images-idx3-ubyte.gz"), _idx(FASHION / "t10k-labels-idx1-ubyte.gz")
    for split, x, y, n in (("train", xs, ys, n_train), ("test", xt, yt, n_test)):
        for c in classes:
            d = out / split / FASHION_NAMES[c]
            d.mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(np.where(y == c)[0][:n]):
                im = x[i]
                if upscale > 1:
                    im = cv2.resize(im, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
                cv2.imwrite(str(d / f"{FASHION_NAMES[c]}_{k:03d}.png"), im)
    return out


PARTS_RECIPE = {
    "loupe_recipe": 1,
    "name": "washer-tray",
    "description": "count the washers on the tray and check their size",
    "source": "folder:images",
    "preprocess": [{"tool": "classical.gray", "name": "gray"},
                   {"tool": "classical.gaussian", "name": "smooth"}],
    "inspect": [
        {"tool": "classical.blob", "name": "washers",
         "params": {"polarity": "dark", "threshold": "otsu", "min_area": 400},
         "limits": {"count": {"min": 12, "max": 12}, "mean_circularity": {"min": 0.8}}},
        {"tool": "classical.intensity", "name": "lighting", "roi": [20, 20, 120, 80],
         "limits": {"mean": {"min": 150, "max": 240}}},
    ],
    "report": [],
}
