"""Synthetic textured-surface images with subtle defects and exact masks, in MVTec AD layout.

``make_texture_dataset(out_dir, category, n_train, n_test_good, n_test_defect, size=256, seed=0)``
writes::

    out_dir/<category>/train/good/000.png
    out_dir/<category>/test/good/000.png
    out_dir/<category>/test/<defect>/000.png           defect in scratch, spot, dent
    out_dir/<category>/ground_truth/<defect>/000_mask.png   255 = defective pixel

Categories (``CATEGORIES``):

``brushed_metal``
    anisotropic streaks along a slightly varying direction, low-frequency
    shading, a faint sheen band; a grey-blue tint.
``fabric``
    a woven plain-weave pattern (warp/weft threads with jittered phase), yarn
    noise and slow illumination changes; a beige tint.

Defects are subtle (contrast of the order of the texture's own variation):
``scratch`` a thin bright or dark curved line, ``spot`` a soft-edged stain,
``dent`` a shallow lit bump (a shading gradient, no colour change). The mask
is the exact footprint where the defect changed the image.

Command line: ``python -m loupe_trainer.samples OUT [--category C ...] [--n-train N] ...``.
Only numpy and OpenCV are used, so the generator is deterministic for a seed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

CATEGORIES = ("brushed_metal", "fabric")
DEFECTS = ("scratch", "spot", "dent")


# ------------------------------------------------------------------ surfaces


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Low-frequency noise in about [-1, 1] (``scale`` = feature size in pixels)."""
    small = max(2, int(round(size / scale)))
    n = rng.standard_normal((small + 2, small + 2)).astype(np.float32)
    n = cv2.resize(n, (size + 2 * int(scale), size + 2 * int(scale)), interpolation=cv2.INTER_CUBIC)
    o = int(scale) // 2
    n = n[o:o + size, o:o + size]
    return n / (np.abs(n).max() + 1e-6)


def _brushed_metal(rng: np.random.Generator, size: int) -> np.ndarray:
    pad = size // 2
    big = size + 2 * pad
    n = rng.standard_normal((big, big)).astype(np.float32)
    streak = cv2.GaussianBlur(n, (0, 0), sigmaX=18.0, sigmaY=0.7)  # long along x
    streak /= streak.std() + 1e-6
    fine = cv2.GaussianBlur(n, (0, 0), sigmaX=3.0, sigmaY=0.5)
    fine /= fine.std() + 1e-6
    angle = rng.uniform(-4, 4)
    m = cv2.getRotationMatrix2D((big / 2, big / 2), angle, 1.0)
    tex = cv2.warpAffine(0.8 * streak + 0.35 * fine, m, (big, big), flags=cv2.INTER_LINEAR)[pad:pad + size,
                                                                                            pad:pad + size]
    yy = np.linspace(-1, 1, size, dtype=np.float32)[:, None]
    sheen = np.exp(-((yy - rng.uniform(-0.6, 0.6)) ** 2) / 0.08) * rng.uniform(8, 16)
    base = rng.uniform(120, 145) + 10 * _smooth_noise(rng, size, size / 2)
    gray = base + 7.0 * tex + sheen
    tint = np.array([1.04, 1.0, 0.95], np.float32)  # BGR: slightly blue
    return gray[..., None] * tint


def _fabric(rng: np.random.Generator, size: int) -> np.ndarray:
    period = rng.uniform(7.5, 8.5)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    jitter_x = 1.2 * _smooth_noise(rng, size, 24)
    jitter_y = 1.2 * _smooth_noise(rng, size, 24)
    ph = rng.uniform(0, 2 * np.pi, 2)
    warp = np.sin(2 * np.pi * (x + jitter_x) / period + ph[0])
    weft = np.sin(2 * np.pi * (y + jitter_y) / period + ph[1])
    checker = np.sign(np.sin(np.pi * (x + jitter_x) / period + ph[0]) * np.sin(np.pi * (y + jitter_y) / period
                                                                                + ph[1]))
    weave = np.where(checker > 0, np.abs(warp), np.abs(weft))
    yarn = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 1.0)
    yarn /= yarn.std() + 1e-6
    base = rng.uniform(150, 170) + 8 * _smooth_noise(rng, size, size / 2)
    gray = base + 22.0 * (weave - 0.6) + 4.0 * yarn
    tint = np.array([0.82, 0.95, 1.05], np.float32)  # BGR: beige
    return gray[..., None] * tint


SURFACES = {"brushed_metal": _brushed_metal, "fabric": _fabric}


# ------------------------------------------------------------------- defects


def _scratch(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    size = img.shape[0]
    length = rng.uniform(0.15, 0.35) * size
    c = rng.uniform(0.2, 0.8, 2) * size
    ang = rng.uniform(0, np.pi)
    bend = rng.uniform(-0.4, 0.4)
    t = np.linspace(-0.5, 0.5, 40)
    pts = np.stack([c[0] + t * length * np.cos(ang + bend * t), c[1] + t * length * np.sin(ang + bend * t)], 1)
    width = int(rng.integers(1, 3))
    canvas = np.zeros(img.shape[:2], np.uint8)
    cv2.polylines(canvas, [np.round(pts * 16).astype(np.int32)], False, 255, width, cv2.LINE_AA, shift=4)
    alpha = canvas.astype(np.float32) / 255.0
    delta = rng.choice([-1, 1]) * rng.uniform(28, 45)
    img += (alpha * delta)[..., None]
    return alpha > 0.25


def _spot(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    size = img.shape[0]
    c = rng.uniform(0.15, 0.85, 2) * size
    axes = rng.uniform(0.02, 0.05, 2) * size
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    dx, dy = x - c[0], y - c[1]
    u = (dx * np.cos(ang) + dy * np.sin(ang)) / axes[0]
    v = (-dx * np.sin(ang) + dy * np.cos(ang)) / axes[1]
    r2 = u * u + v * v
    alpha = np.clip(1.3 - r2, 0, 1) ** 0.7  # soft edge, exact footprint r2 < 1.3
    delta = rng.choice([-1, 1]) * rng.uniform(22, 35)
    stain = np.array([1.0, 0.85, 0.7], np.float32) if delta < 0 else np.ones(3, np.float32)
    img += (alpha * delta)[..., None] * stain
    return alpha > 0.15


def _dent(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    size = img.shape[0]
    c = rng.uniform(0.15, 0.85, 2) * size
    r = rng.uniform(0.04, 0.07) * size
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = (x - c[0]) / r, (y - c[1]) / r
    h = np.exp(-(dx * dx + dy * dy) * 2.0)  # bump height
    light = rng.uniform(0, 2 * np.pi)
    shade = -(np.cos(light) * dx + np.sin(light) * dy) * h * 4.0  # directional derivative: lit/shadowed sides
    amp = rng.uniform(9, 14)
    img += (amp * shade)[..., None]
    return h > 0.12  # the bump's footprint (its centre line is unshaded but still deformed)


DEFECT_FUNCS = {"scratch": _scratch, "spot": _spot, "dent": _dent}


# ------------------------------------------------------------------- dataset


def texture_image(category: str, rng: np.random.Generator, size: int = 256,
                  defect: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """One BGR uint8 image of ``category``, and the defect's bool mask (``None`` when good)."""
    if category not in SURFACES:
        raise ValueError(f"unknown category {category!r}; choose from {', '.join(CATEGORIES)}")
    img = SURFACES[category](rng, size).astype(np.float32)
    mask = None
    if defect is not None:
        mask = DEFECT_FUNCS[defect](rng, img)
    img += rng.normal(0, 1.5, img.shape).astype(np.float32)  # sensor noise
    return np.clip(np.round(img), 0, 255).astype(np.uint8), mask


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"{path}: cannot write image")


def make_texture_dataset(out_dir: str | Path, category: str = "brushed_metal", n_train: int = 60,
                         n_test_good: int = 20, n_test_defect: int = 10, size: int = 256,
                         seed: int = 0) -> Path:
    """Write one MVTec-AD style category; ``n_test_defect`` images per defect type. Returns the category folder."""
    root = Path(out_dir) / category
    rng = np.random.default_rng([seed, CATEGORIES.index(category) if category in CATEGORIES else 99])
    for i in range(n_train):
        _write(root / "train" / "good" / f"{i:03d}.png", texture_image(category, rng, size)[0])
    for i in range(n_test_good):
        _write(root / "test" / "good" / f"{i:03d}.png", texture_image(category, rng, size)[0])
    for defect in DEFECTS:
        for i in range(n_test_defect):
            img, mask = texture_image(category, rng, size, defect)
            _write(root / "test" / defect / f"{i:03d}.png", img)
            _write(root / "ground_truth" / defect / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loupe_trainer.samples",
                                description="write synthetic textured-surface datasets in MVTec AD layout")
    p.add_argument("out", help="output folder (one sub-folder per category)")
    p.add_argument("--category", nargs="+", default=list(CATEGORIES), choices=CATEGORIES)
    p.add_argument("--n-train", type=int, default=60)
    p.add_argument("--n-test-good", type=int, default=20)
    p.add_argument("--n-test-defect", type=int, default=10, help="per defect type")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for c in a.category:
        root = make_texture_dataset(a.out, c, a.n_train, a.n_test_good, a.n_test_defect, a.size, a.seed)
        print(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
