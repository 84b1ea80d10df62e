"""Synthetic defect-segmentation data: faint scratches, stains and dents on textured surfaces, exact masks.

``make_segment_dataset(out, surfaces, n_train_good, n_train_per_class, n_test_good, n_test_per_class,
size=256, seed=0)`` writes the segmentation layout::

    out/classes.txt                    scratch, stain, dent (class 1, 2, 3)
    out/{train,test}/images/<surface>_<kind>_<i>.png
    out/{train,test}/masks/<surface>_<kind>_<i>.png      0 background, k class k
                                                        (good images: an all-zero mask, or none for
                                                        every other one, as the layout allows)

Surfaces: the anomaly sample generator's ``brushed_metal`` and ``fabric`` (procedural,
``loupe_trainer.samples``), and real photographs of surfaces shipped with scikit-image
(``brick``, ``gravel``, ``grass``: random crops, flips and a tint), when scikit-image is
installed. Defects reuse the anomaly generator's subtle ones: ``scratch`` (a thin bright or
dark curved line, 1-2 px), ``stain`` (a soft-edged spot) and ``dent`` (a shading-only bump).
A defective image holds one or two defects of its class; with ``mixed`` > 0 that share of the
defective images also gets a defect of another class.

Command line: ``python -m loupe_trainer.segment.samples OUT [--surface S ...] [--size N] ...``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from ..samples import DEFECT_FUNCS, SURFACES

CLASSES = ("scratch", "stain", "dent")
_DEFECT_OF = {"scratch": "scratch", "stain": "spot", "dent": "dent"}
PHOTO_SURFACES = ("brick", "gravel", "grass")


def _photo(name: str):
    def make(rng: np.random.Generator, size: int) -> np.ndarray:
        from skimage import data as skdata

        g = getattr(skdata, name)().astype(np.float32)
        if g.ndim == 3:
            g = g.mean(axis=2)
        h, w = g.shape
        side = int(min(h, w) * rng.uniform(0.5, 0.8))
        y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = cv2.resize(g[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < 0.5:
            crop = crop[::-1]
        # compress the photo's contrast a little so faint defects stay faint relative to it
        crop = 128 + 0.7 * (crop - crop.mean()) + rng.uniform(-10, 10)
        tint = np.array([0.92, 1.0, 1.06], np.float32) * rng.uniform(0.97, 1.03, 3).astype(np.float32)
        return np.ascontiguousarray(crop)[..., None] * tint
    return make


def surfaces() -> dict:
    out = dict(SURFACES)
    try:
        import skimage.data  # noqa: F401

        out.update({n: _photo(n) for n in PHOTO_SURFACES})
    except ImportError:
        pass
    return out


def sample_image(surface: str, rng: np.random.Generator, size: int = 256,
                 defects: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """One BGR uint8 image and its uint8 class mask (0 good, k = CLASSES[k - 1])."""
    table = surfaces()
    if surface not in table:
        raise ValueError(f"unknown surface {surface!r}; choose from {', '.join(table)}")
    img = table[surface](rng, size).astype(np.float32)
    mask = np.zeros((size, size), np.uint8)
    for d in defects:
        m = DEFECT_FUNCS[_DEFECT_OF[d]](rng, img)
        mask[m] = CLASSES.index(d) + 1
    img += rng.normal(0, 1.5, img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), mask


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"{path}: cannot write image")


def make_segment_dataset(out: str | Path, surfaces_: tuple[str, ...] | list[str] = ("brushed_metal", "fabric"),
                         n_train_good: int = 16, n_train_per_class: int = 8, n_test_good: int = 30,
                         n_test_per_class: int = 30, size: int = 256, seed: int = 0, mixed: float = 0.0) -> Path:
    """Write a segmentation data set; counts are totals over the surfaces (spread round-robin)."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rng = np.random.default_rng(seed)
    surfaces_ = list(surfaces_)
    for split, n_good, n_per in (("train", n_train_good, n_train_per_class), ("test", n_test_good, n_test_per_class)):
        jobs: list[tuple[str, tuple[str, ...]]] = [("good", ())] * n_good
        for c in CLASSES:
            for i in range(n_per):
                ds = (c,) * (1 + int(rng.random() < 0.3))
                if mixed and rng.random() < mixed:
                    ds = ds + (str(rng.choice([o for o in CLASSES if o != c])),)
                jobs.append((c, ds))
        counters: dict[tuple[str, str], int] = {}
        for j, (kind, ds) in enumerate(jobs):
            surface = surfaces_[j % len(surfaces_)]
            i = counters[(surface, kind)] = counters.get((surface, kind), -1) + 1
            name = f"{surface}_{kind}_{i:03d}"
            img, mask = sample_image(surface, rng, size, ds)
            _write(root / split / "images" / f"{name}.png", img)
            if mask.any() or i % 2 == 0:  # every other good image has no mask file at all
                _write(root / split / "masks" / f"{name}.png", mask)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loupe_trainer.segment.samples",
                                description="write a synthetic defect-segmentation data set")
    p.add_argument("out")
    p.add_argument("--surface", nargs="+", default=["brushed_metal", "fabric"], choices=list(surfaces()))
    p.add_argument("--n-train-good", type=int, default=16)
    p.add_argument("--n-train-per-class", type=int, default=8)
    p.add_argument("--n-test-good", type=int, default=30)
    p.add_argument("--n-test-per-class", type=int, default=30)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixed", type=float, default=0.0, help="share of defective images with a second class")
    a = p.parse_args(argv)
    print(make_segment_dataset(a.out, a.surface, a.n_train_good, a.n_train_per_class, a.n_test_good,
                               a.n_test_per_class, a.size, a.seed, a.mixed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
