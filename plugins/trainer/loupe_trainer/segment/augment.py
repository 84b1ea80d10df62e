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


@dataclass
class Piece:
    """One labelled defect cut from a training image: its box's pixels (or its residual), labels, alpha."""
    pixels: np.ndarray     # H x W x 3 float32: the box's pixels ("pixels") or pixels minus background ("residual")
    labels: np.ndarray     # H x W uint8: class of each defect pixel, 0 elsewhere
    alpha: np.ndarray      # H x W float32: 1 on the defect, fading to 0 over the margin


class DefectBank:
    """Copy-paste of labelled defects onto other training images (few-sample augmentation).

    Each connected defect region of a training mask (8-connected, any class) is cut with a
    ``margin``-pixel band around it; its alpha is the dilated region blurred, so the paste has
    no hard seam. ``mode="pixels"`` blends the cut pixels over the target (texture and all);
    ``mode="residual"`` adds only what the defect changed: the image minus an inpainted
    estimate of the surface under the defect (OpenCV Telea), so a scratch cut from brick can
    be laid on brushed metal without carrying the bricks with it. Pastes go to a random
    position with a random flip / 90-degree turn; the target mask takes the piece's labels.
    """

    def __init__(self, images: list[np.ndarray], masks: list[np.ndarray], margin: int = 3, mode: str = "residual"):
        if mode not in ("pixels", "residual"):
            raise ValueError(f"copy-paste mode {mode!r}: expected 'pixels' or 'residual'")
        self.mode = mode
        self.pieces: list[Piece] = []
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
        for img, mask in zip(images, masks):
            fg = (mask > 0).astype(np.uint8)
            if not fg.any():
                continue
            grown = cv2.dilate(fg, kernel)
            src = img.astype(np.float32)
            if mode == "residual":
                bg = cv2.inpaint(img, cv2.dilate(grown, kernel), 5, cv2.INPAINT_TELEA).astype(np.float32)
                src = src - bg
            n, comp = cv2.connectedComponents(grown, connectivity=8)
            h, w = mask.shape
            for c in range(1, n):
                region = comp == c
                ys, xs = np.nonzero(region)
                y0, y1 = max(0, ys.min() - margin), min(h, ys.max() + margin + 1)
                x0, x1 = max(0, xs.min() - margin), min(w, xs.max() + margin + 1)
                reg = region[y0:y1, x0:x1]
                labels = np.where(reg, mask[y0:y1, x0:x1], 0).astype(np.uint8)
                if not labels.any():
                    continue
                core = (labels > 0).astype(np.uint8)
                half = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (margin + 1, margin + 1))
                alpha = cv2.GaussianBlur(cv2.dilate(core, half).astype(np.float32), (0, 0), max(0.5, margin / 3))
                alpha = np.maximum(alpha, core)   # 1 on the defect, fading to 0 over the margin
                self.pieces.append(Piece(np.ascontiguousarray(src[y0:y1, x0:x1]), labels, alpha.astype(np.float32)))

    def __len__(self) -> int:
        return len(self.pieces)

    def paste(self, rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, n: int = 1
              ) -> tuple[np.ndarray, np.ndarray]:
        """Return copies of ``img`` / ``mask`` with ``n`` random pieces pasted (pieces larger than the image skip)."""
        if not self.pieces or n <= 0:
            return img, mask
        out, lab = img.astype(np.float32), mask.copy()
        h, w = mask.shape
        for _ in range(n):
            p = self.pieces[int(rng.integers(len(self.pieces)))]
            px, lb, al = p.pixels, p.labels, p.alpha
            if rng.random() < 0.5:
                px, lb, al = px[:, ::-1], lb[:, ::-1], al[:, ::-1]
            if rng.random() < 0.5:
                px, lb, al = px[::-1], lb[::-1], al[::-1]
            k = int(rng.integers(0, 4))
            if k:
                px, lb, al = np.rot90(px, k), np.rot90(lb, k), np.rot90(al, k)
            ph, pw = lb.shape
            if ph > h or pw > w:
                continue
            y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
            a = al[..., None]
            win = out[y:y + ph, x:x + pw]
            if self.mode == "residual":
                out[y:y + ph, x:x + pw] = win + a * px
            else:
                out[y:y + ph, x:x + pw] = win * (1 - a) + a * px
            sub = lab[y:y + ph, x:x + pw]
            lab[y:y + ph, x:x + pw] = np.where(lb > 0, lb, sub)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8), lab
