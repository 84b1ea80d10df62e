"""Data loading and augmentation for small classification sets (numpy + OpenCV, no torchvision).

Images are decoded, converted to RGB and resized to the model's input size once
(``load_images``); augmentation then works on those small uint8 arrays, so an
epoch costs little besides the network itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from host import read_image, resize_to, to_rgb8, use_opencv
from loupe_dl_classify.data import Sample

use_opencv(cv2)


def load_images(samples: list[Sample], size: tuple[int, int], on_error=None) -> tuple[np.ndarray, np.ndarray, list]:
    """Decode ``samples`` into an [N, H, W, 3] uint8 RGB array at ``size``; unreadable files are skipped.

    Returns (images, labels, skipped) where skipped lists (path, reason).
    """
    images, labels, skipped = [], [], []
    for s in samples:
        try:
            images.append(resize_to(to_rgb8(read_image(s.path)), size))
            labels.append(s.label)
        except (ValueError, OSError, cv2.error) as exc:
            skipped.append((str(s.path), str(exc)))
            if on_error is not None:
                on_error(s.path, exc)
    if not images:
        return np.zeros((0, size[0], size[1], 3), np.uint8), np.zeros((0,), np.int64), skipped
    return np.stack(images), np.asarray(labels, np.int64), skipped


class UnlabelledImages:
    """Images without a class (``DATA/unlabelled/``), decoded batch by batch at ``size``; unreadable files are
    skipped (``on_error``). At most ``limit`` of them, in an order shuffled by ``seed``, so that any first part
    (what a time budget leaves room for) is an even choice. ``read_s_per_image`` estimates the decoding time
    (from the labelled images of the same data set)."""

    def __init__(self, paths: list, size: tuple[int, int], limit: int, seed: int = 0, on_error=None,
                 read_s_per_image: float = 0.0):
        paths = list(paths)
        order = np.random.default_rng(seed).permutation(len(paths))[:limit]
        self.paths, self.size, self.on_error = [paths[i] for i in order], size, on_error
        self.read_s_per_image = read_s_per_image
        self.skipped: list[tuple[str, str]] = []
        self.not_read = 0

    def __len__(self) -> int:
        return len(self.paths)

    def batches(self, size: int, deadline: float = float("inf")):
        """Decoded images, ``size`` files at a time; after ``deadline`` (``time.perf_counter``) no further batch
        is read, and ``not_read`` counts the files left."""
        import time

        from ..common import iter_batches

        self.not_read = 0
        for i, paths in enumerate(iter_batches(self.paths, size)):
            if i and time.perf_counter() > deadline:
                self.not_read = len(self.paths) - i * size
                return
            images, _, skipped = load_images([Sample(p, -1) for p in paths], self.size, self.on_error)
            self.skipped += skipped
            if len(images):
                yield images


@dataclass
class Augment:
    """Random geometric and photometric changes suited to small inspection data sets.

    Each image gets: a random affine (rotation up to ``rotate`` degrees, scale
    by 1 +/- ``scale``, shift up to ``shift`` of the size), optional flips,
    and brightness / contrast jitter of up to ``jitter``. Borders are filled by
    replicating the edge pixels.
    """

    rotate: float = 10.0
    scale: float = 0.10
    shift: float = 0.08
    hflip: bool = True
    vflip: bool = False
    jitter: float = 0.2

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, h, w = batch.shape[:3]
        out = np.empty_like(batch)
        for i in range(n):
            img = batch[i]
            if self.rotate or self.scale or self.shift:
                a = rng.uniform(-self.rotate, self.rotate)
                s = 1.0 + rng.uniform(-self.scale, self.scale)
                m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), a, s)
                m[0, 2] += rng.uniform(-self.shift, self.shift) * w
                m[1, 2] += rng.uniform(-self.shift, self.shift) * h
                img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            if self.hflip and rng.random() < 0.5:
                img = img[:, ::-1]
            if self.vflip and rng.random() < 0.5:
                img = img[::-1]
            if self.jitter:
                c = 1.0 + rng.uniform(-self.jitter, self.jitter)
                b = 255.0 * rng.uniform(-self.jitter, self.jitter) * 0.5
                mean = float(img.mean())
                img = np.clip((img.astype(np.float32) - mean) * c + mean + b, 0, 255).astype(np.uint8)
            out[i] = img
        return out
