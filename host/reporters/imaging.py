"""Small numpy-only image helpers for reports (the host does not depend on OpenCV)."""
from __future__ import annotations

import struct
import zlib

import numpy as np


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Any image (bool, uint8, uint16, float, 1/3/4 channels) as 8-bit gray or RGB.

    Colour images are assumed BGR (OpenCV's order) and returned RGB.
    """
    a = np.asarray(image)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = a.astype(np.float32)
        hi = float(np.nanmax(a)) if a.size else 1.0
        if hi <= 1.0:
            a = a * 255.0
        a = np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)
    if a.ndim == 3:
        if a.shape[2] == 1:
            a = a[:, :, 0]
        elif a.shape[2] >= 3:
            a = a[:, :, 2::-1]
    return np.ascontiguousarray(a)


def thumbnail(image: np.ndarray, max_side: int = 320) -> tuple[np.ndarray, float]:
    """Downscale by block averaging to at most ``max_side``; returns (image, scale)."""
    h, w = image.shape[:2]
    f = max(1, int(np.ceil(max(h, w) / max_side)))
    if f == 1:
        return image, 1.0
    hh, ww = (h // f) * f, (w // f) * f
    a = image[:hh, :ww].astype(np.float32)
    shape = (hh // f, f, ww // f, f) + a.shape[2:]
    return a.reshape(shape).mean(axis=(1, 3)).astype(np.uint8), 1.0 / f


def colormap(values: np.ndarray) -> np.ndarray:
    """Map [0, 1] floats to RGB with a perceptually ordered blue-to-red ramp (turbo-like)."""
    v = np.clip(np.nan_to_num(values.astype(np.float32)), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0, 1)
    g = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0, 1)
    b = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def resize_nearest(a: np.ndarray, h: int, w: int) -> np.ndarray:
    ys = (np.arange(h) * a.shape[0] / h).astype(int)
    xs = (np.arange(w) * a.shape[1] / w).astype(int)
    return a[ys][:, xs]


def blend_heatmap(rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.65) -> np.ndarray:
    """Overlay a [0, 1] heatmap; cool (low) values fade out so the part stays visible under them."""
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    h = resize_nearest(np.nan_to_num(heat.astype(np.float32)), rgb.shape[0], rgb.shape[1])
    hm = colormap(h).astype(np.float32)
    w = (alpha * np.clip((h - 0.15) / 0.45, 0.0, 1.0))[:, :, None]
    return (rgb.astype(np.float32) * (1 - w) + hm * w).astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    """Encode an 8-bit gray or RGB array as PNG (numpy + zlib)."""
    a = np.ascontiguousarray(image)
    if a.dtype != np.uint8:
        a = to_uint8(a)
    h, w = a.shape[:2]
    colour = 0 if a.ndim == 2 else 2
    raw = np.zeros((h, 1 + a[0].size), dtype=np.uint8)  # filter byte 0 on every row
    raw[:, 1:] = a.reshape(h, -1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))
