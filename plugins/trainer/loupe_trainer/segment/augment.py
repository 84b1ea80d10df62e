"""Few-sample augmentation of (image, mask) pairs (numpy + OpenCV).

Every transform moves the image and its class mask together (the mask with nearest
neighbour, so labels never blend): random crop (biased towards defect pixels, so tiny
defects are seen often), horizontal / vertical flips, 90-degree rotations, a small affine
(rotation, scale, shift; reflected borders) and colour jitter on the image only
(brightness, contrast, gamma, a small per-channel gain, sensor noise).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class SegAugment:
    crop: int | None = None        # side of the square training crop (None: whole image)
    defect_bias: float = 0.7       # share of crops centred on a random defect pixel (when the image has any)
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    rotate: float = 10.0           # degrees
    scale: float = 0.1             # +- relative
    shift: float = 0.05            # +- share of the side
    brightness: float = 0.15       # +- share of 255
    contrast: float = 0.15         # +- relative
    gamma: float = 0.15            # +- relative
    channel_gain: float = 0.04     # +- relative, per channel
    noise: float = 3.0             # sigma of the added Gaussian noise (grey levels), up to
    enabled: bool = True

    def __call__(self, rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        img, mask = self._crop(rng, img, mask)
        if not self.enabled:
            return img, mask
        if self.hflip and rng.random() < 0.5:
            img, mask = img[:, ::-1], mask[:, ::-1]
        if self.vflip and rng.random() < 0.5:
            img, mask = img[::-1], mask[::-1]
        if self.rot90 and img.shape[0] == img.shape[1]:
            k = int(rng.integers(0, 4))
            if k:
                img, mask = np.rot90(img, k), np.rot90(mask, k)
        img, mask = np.ascontiguousarray(img), np.ascontiguousarray(mask)
        if self.rotate or self.scale or self.shift:
            h, w = mask.shape
            ang = rng.uniform(-self.rotate, self.rotate)
            sc = 1.0 + rng.uniform(-self.scale, self.scale)
            m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, sc)
            m[:, 2] += rng.uniform(-self.shift, self.shift, 2) * (w, h)
            img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
        return self._colour(rng, img), mask

    def _crop(self, rng, img, mask):
        c = self.crop
        h, w = mask.shape
        if c is None or (c >= h and c >= w):
            return img, mask
        ch, cw = min(c, h), min(c, w)
        ys, xs = np.nonzero(mask)
        if len(ys) and self.enabled and rng.random() < self.defect_bias:
            i = int(rng.integers(len(ys)))
            cy = int(ys[i]) + int(rng.integers(-ch // 3, ch // 3 + 1))
            cx = int(xs[i]) + int(rng.integers(-cw // 3, cw // 3 + 1))
            y0, x0 = np.clip(cy - ch // 2, 0, h - ch), np.clip(cx - cw // 2, 0, w - cw)
        else:
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return img[y0:y0 + ch, x0:x0 + cw], mask[y0:y0 + ch, x0:x0 + cw]

    def _colour(self, rng, img):
        x = img.astype(np.float32)
        if self.contrast:
            mean = x.mean()
            x = (x - mean) * (1 + rng.uniform(-self.contrast, self.contrast)) + mean
        if self.brightness:
            x = x + 255.0 * rng.uniform(-self.brightness, self.brightness)
        if self.channel_gain:
            x = x * (1 + rng.uniform(-self.channel_gain, self.channel_gain, 3)).astype(np.float32)
        if self.gamma:
            g = 1 + rng.uniform(-self.gamma, self.gamma)
            x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** g
        if self.noise:
            x = x + rng.normal(0, rng.uniform(0, self.noise), x.shape).astype(np.float32)
        return np.clip(x, 0, 255).astype(np.uint8)
