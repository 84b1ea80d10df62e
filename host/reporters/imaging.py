"""Small numpy-only image helpers for reports (the host does not depend on OpenCV), and the colour rules
every drawing of results follows: verdict colours, overlay statuses, confusion-matrix cells.

Overlay statuses. A tool sets ``Shape.status`` to a fixed colour (``pass``, ``fail``, ``review``, ``info``)
when it can judge the shape itself (a code that did not decode, a pattern match under its own minimum score),
or to one of two *deferred* statuses when only the step's limits can judge it:

* ``verdict``: drawn in the colour of the step's verdict (a blob outline is red when the step failed on
  its count, green when it passed);
* ``alert``: drawn in the colour of the step's verdict when the step did not pass, not drawn at all when it
  passed (``no blob``, the peak of an anomaly map that has no region above the threshold).

The tool cannot know its verdict (limits are applied after it returns), so the statuses are resolved by the
code that draws, from the ``ToolResult``'s verdict: :func:`overlay_status` for one shape,
:func:`resolved_overlays` for a tool or frame result. The HTML report, the anomaly evaluation report and the
desktop app all go through them; stored results (jsonl, sqlite) keep the deferred status beside the verdict.
"""
from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

#: One colour per verdict (and ``info``), as hex RGB; every report and chart uses these.
VERDICT_COLOURS = {"pass": "#2ecc71", "review": "#f39c12", "fail": "#e74c3c", "error": "#8e44ad", "info": "#00bcd4"}

#: Deferred overlay statuses, resolved against the step's verdict when drawn (see the module docstring).
DEFERRED_STATUSES = ("verdict", "alert")


def overlay_status(status: str, verdict: str) -> str | None:
    """The colour status to draw a shape of ``status`` with, in a step whose verdict is ``verdict``;
    ``None`` when the shape is not drawn (an ``alert`` shape of a passing step)."""
    if status == "verdict":
        return verdict
    if status == "alert":
        return None if verdict == "pass" else verdict
    return status if status in VERDICT_COLOURS else "info"


def resolved_overlays(result: Any) -> list:
    """The overlays of a ``ToolResult`` (or of every tool result of a ``FrameResult``) with deferred
    statuses resolved against each step's verdict; hidden shapes are left out. Shapes with a fixed status
    are returned as they are, the others as copies."""
    results = getattr(result, "results", None)
    if results is not None:
        return [s for r in results for s in resolved_overlays(r)]
    out = []
    for s in result.overlays:
        st = overlay_status(s.status, result.verdict)
        if st is None:
            continue
        if st != s.status:
            s = type(s)(s.kind, list(s.points), s.label, s.radius, s.axes, s.angle, st, getattr(s, "color", ""))
        out.append(s)
    return out


#: Confusion-matrix rule: a diagonal cell (a class's recall) is ``pass`` (green) at or above
#: ``CONFUSION_PASS_AT``, ``review`` (amber) at or above ``CONFUSION_REVIEW_AT``, ``fail`` (red) below;
#: an off-diagonal cell is ``fail`` shaded by its share of the row, full at ``CONFUSION_FULL_AT``.
CONFUSION_PASS_AT = 0.90
CONFUSION_REVIEW_AT = 0.70
CONFUSION_FULL_AT = 0.30


def confusion_style(matrix) -> list[list[tuple[str, float]]]:
    """The one colour rule for confusion matrices (the ``loupe eval`` PNG and the desktop app).

    ``matrix``: N x N counts, rows = true class. Returns, per cell, ``(status, strength)``: ``status`` is
    ``pass``, ``review``, ``fail`` or ``none`` (an empty off-diagonal cell, drawn as background) and
    ``strength`` in [0, 1] is how far to blend that status's colour (``VERDICT_COLOURS``) over the
    background. Diagonal cells are drawn at full strength; off-diagonal ones grow with their row share.
    """
    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    rate = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    out = []
    for i in range(m.shape[0]):
        row = []
        for j in range(m.shape[1]):
            r = float(rate[i, j])
            if i == j:
                if rows[i, 0] == 0:
                    row.append(("none", 0.0))
                else:
                    row.append(("pass" if r >= CONFUSION_PASS_AT else "review" if r >= CONFUSION_REVIEW_AT
                                else "fail", 1.0))
            elif m[i, j] > 0:
                row.append(("fail", float(min(1.0, 0.2 + 0.8 * r / CONFUSION_FULL_AT))))
            else:
                row.append(("none", 0.0))
        out.append(row)
    return out


def hex_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


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


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes | None:
    """JPEG bytes of an 8-bit gray or RGB array, or ``None`` when Pillow is not installed.

    Pillow is optional for the host (the HTML report then writes PNG thumbnails); every plugin that draws
    charts installs it with matplotlib.
    """
    try:
        from PIL import Image
    except ImportError:
        return None
    import io

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()
