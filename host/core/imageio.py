"""The one image reader: extension list, header budget check, decoding, 8-bit RGB conversion.

numpy only. The decoding itself is done by a callable that a plugin registers
(``register_image_decoder``; the classical, dl_* and desktop plugins register
OpenCV's ``imdecode``), so the host needs no OpenCV. Before anything is decoded,
the file's header is read (PNG, JPEG, TIFF, BMP, PNM, WebP) and the image is refused
when its declared width × height × bytes per pixel exceeds the budget
(``MAX_IMAGE_BYTES``, 1 GiB by default): a small file that declares 30000² 16-bit
pixels is an error, not a 5 GB allocation.
"""
from __future__ import annotations

import functools
import os
import struct
from pathlib import Path
from typing import Callable

import numpy as np

#: File name extensions of the images Loupe reads (lower case), everywhere: sources,
#: data sets, training, evaluation and the desktop app.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".pnm", ".webp")

#: The default budget for one decoded image, in bytes (width × height × bytes per pixel).
MAX_IMAGE_BYTES = 1 << 30

_decoder: Callable[[np.ndarray], np.ndarray | None] | None = None
_to_rgb: Callable[[np.ndarray], np.ndarray] | None = None  # a fast uint8 gray/BGR/BGRA -> RGB, if registered
_resizer: Callable[[np.ndarray, int, int, str], np.ndarray] | None = None  # see register_resizer


def register_image_decoder(decode: Callable[[np.ndarray], "np.ndarray | None"]) -> None:
    """Install the decoder ``read_image`` uses: ``decode(buffer)`` takes the file's bytes as a
    uint8 array and returns the image as stored (gray, BGR or BGRA; 8 or 16 bit) or None.

    OpenCV's is ``lambda buf: cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)``. The last one
    registered wins; registering the same behaviour twice is harmless.
    """
    global _decoder
    _decoder = decode


def register_rgb_converter(to_rgb: Callable[[np.ndarray], np.ndarray] | None) -> None:
    """Install a fast channel converter for ``to_rgb8``: uint8 gray (H, W), BGR or BGRA -> RGB.
    Without one, numpy does it (the same pixels, slower)."""
    global _to_rgb
    _to_rgb = to_rgb


def register_resizer(resize: Callable[[np.ndarray, int, int, str], np.ndarray] | None) -> None:
    """Install the resizer of ``resize_to`` / ``resize_mask``: ``resize(image, width, height, mode)``
    with ``mode`` one of ``area``, ``linear``, ``nearest`` (``use_opencv`` installs ``cv2.resize``)."""
    global _resizer
    _resizer = resize


def use_opencv(cv2) -> None:
    """Decode and convert with OpenCV: the ``cv2`` module is passed in by a plugin that depends on
    it (the host itself never imports OpenCV). Registering it again is harmless."""
    codes = {2: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
    flag = cv2.IMREAD_UNCHANGED

    def to_rgb(a: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(a, codes[a.shape[2] if a.ndim == 3 else 2])

    register_image_decoder(lambda buf: cv2.imdecode(buf, flag))
    register_rgb_converter(to_rgb)
    modes = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}
    register_resizer(lambda a, width, height, mode: cv2.resize(a, (width, height), interpolation=modes[mode]))


def is_image_file(name: str | os.PathLike) -> bool:
    """True when ``name`` has one of ``IMAGE_EXTENSIONS`` (case-insensitive)."""
    return os.fspath(name).lower().endswith(IMAGE_EXTENSIONS)


class ImageTooLarge(ValueError):
    pass


# ------------------------------------------------------------------ headers


def image_header(head: bytes | memoryview) -> tuple[str, int, int, int, int] | None:
    """``(format, width, height, channels, bytes_per_sample)`` from a file's bytes (the whole file,
    or enough of it to reach the header), or None when the format or header is not understood
    (the decoder then decides, within its own limits)."""
    try:
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            return _png(head)
        if head[:2] == b"\xff\xd8":
            return _jpeg(head)
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff(head)
        if head[:2] == b"BM":
            return _bmp(head)
        if head[:1] == b"P" and head[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6"):
            return _pnm(head)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp(head)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _png(h: bytes):
    w, ht, depth, color = struct.unpack(">IIBB", h[16:26])
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(color, 4)
    return ("PNG", w, ht, channels, 2 if depth == 16 else 1)


def _jpeg(h: bytes):
    i = 2
    while i + 9 < len(h):
        if h[i] != 0xFF:
            i += 1
            continue
        marker = h[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", h[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            precision, ht, w, comps = struct.unpack(">BHHB", h[i + 4:i + 10])
            return ("JPEG", w, ht, comps, 2 if precision > 8 else 1)
        i += 2 + length
    return None  # the frame header lies beyond what was read: left to the decoder's own limit


def _tiff(h: bytes):
    le = h[:2] == b"II"
    e = "<" if le else ">"
    big = h[2:4] in (b"+\x00", b"\x00+")
    if big:
        off = struct.unpack(e + "Q", h[8:16])[0]
        n = struct.unpack(e + "Q", h[off:off + 8])[0]
        base, size, fmt = off + 8, 20, "HHQ"
    else:
        off = struct.unpack(e + "I", h[4:8])[0]
        n = struct.unpack(e + "H", h[off:off + 2])[0]
        base, size, fmt = off + 2, 12, "HHI"
    tags: dict[int, int] = {}
    for k in range(min(n, 512)):
        entry = h[base + k * size:base + (k + 1) * size]
        if len(entry) < size:
            break
        tag, typ, _count = struct.unpack(e + fmt, entry[:4 + struct.calcsize(fmt[2])])
        val = entry[4 + struct.calcsize(fmt[2]):]
        if typ == 3:
            tags[tag] = struct.unpack(e + "H", val[:2])[0]
        elif typ == 4:
            tags[tag] = struct.unpack(e + "I", val[:4])[0]
        elif typ == 16:
            tags[tag] = struct.unpack(e + "Q", val[:8])[0]
    if 256 not in tags or 257 not in tags:
        return None
    bits = tags.get(258, 8)  # the first sample's bits when there are several (an offset otherwise)
    if bits > 64:
        bits = 16
    return ("TIFF", tags[256], tags[257], max(1, tags.get(277, 1)), max(1, (bits + 7) // 8))


def _bmp(h: bytes):
    w, ht = struct.unpack("<ii", h[18:26])
    bpp = struct.unpack("<H", h[28:30])[0]
    return ("BMP", abs(w), abs(ht), 4 if bpp == 32 else 3, 1)


def _pnm(h: bytes):
    fields: list[bytes] = []
    magic = h[1:2]
    need = 2 if magic in (b"1", b"4") else 3
    for line in bytes(h[2:512]).split(b"\n"):
        line = line.split(b"#", 1)[0]
        fields += line.split()
        if len(fields) >= need:
            break
    w, ht = int(fields[0]), int(fields[1])
    maxval = int(fields[2]) if need == 3 else 1
    return ("PNM", w, ht, 3 if magic in (b"3", b"6") else 1, 2 if maxval > 255 else 1)


def _webp(h: bytes):
    chunk = h[12:16]
    if chunk == b"VP8X":
        w = 1 + int.from_bytes(h[24:27], "little")
        ht = 1 + int.from_bytes(h[27:30], "little")
        return ("WebP", w, ht, 4, 1)
    if chunk == b"VP8L":
        b = int.from_bytes(h[21:25], "little")
        return ("WebP", 1 + (b & 0x3FFF), 1 + ((b >> 14) & 0x3FFF), 4, 1)
    if chunk == b"VP8 ":
        w, ht = struct.unpack("<HH", h[26:30])
        return ("WebP", w & 0x3FFF, ht & 0x3FFF, 3, 1)
    return None


def check_budget(path: str | os.PathLike, data: bytes | np.ndarray, max_bytes: int | None = None) -> None:
    """Raise ``ImageTooLarge`` (a ValueError naming the file) when the header of ``data`` declares an
    image larger than ``max_bytes`` once decoded."""
    limit = MAX_IMAGE_BYTES if max_bytes is None else max_bytes
    info = image_header(memoryview(data).cast("B") if isinstance(data, np.ndarray) else data)
    if info is None:
        return
    fmt, w, h, c, b = info
    need = w * h * c * b
    if need > limit:
        raise ImageTooLarge(f"{path}: the {fmt} header declares {w}x{h} pixels x {c} channel(s) x {8 * b} bit "
                            f"= {need / 2**20:.0f} MiB decoded, over the {limit / 2**20:.0f} MiB image budget; "
                            f"not decoded")


# ------------------------------------------------------------------ reading


def decode_image(data: np.ndarray, name: str = "<bytes>", max_bytes: int | None = None) -> np.ndarray:
    """Decode an encoded image held in memory (uint8 array) after the header budget check."""
    if data.size == 0:
        raise ValueError(f"{name}: empty file")
    check_budget(name, data, max_bytes)
    decode = _decoder
    if decode is None:
        raise RuntimeError("no image decoder is registered (install loupe-classical, or call "
                           "host.register_image_decoder)")
    image = decode(data)
    if image is None:
        raise ValueError(f"{name}: cannot decode image (corrupt, truncated or not an image)")
    if image.ndim == 3 and image.shape[2] == 4:
        image = np.ascontiguousarray(image[:, :, :3])  # BGRA -> BGR: alpha is not inspected
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return image


def read_image(path: str | Path, max_bytes: int | None = None) -> np.ndarray:
    """Decode an image file as stored: gray (H, W) or BGR (H, W, 3), 8 or 16 bit (alpha dropped).

    Raises ValueError naming the file when it is empty, corrupt, not a regular file, or
    declares more than ``max_bytes`` (default ``MAX_IMAGE_BYTES``) of pixels.
    """
    p = os.fspath(path)
    import stat as _stat

    st = os.stat(p)
    if not _stat.S_ISREG(st.st_mode):
        raise ValueError(f"{p}: not a regular file")
    data = np.fromfile(p, dtype=np.uint8)
    return decode_image(data, p, max_bytes)


def read_data_image(path: str | Path) -> np.ndarray:
    """``read_image`` for a data set's files: a missing, unreadable or corrupt file is a ``DataError``
    naming it (the trainers and evaluations report it and exit 2)."""
    from .errors import DataError

    try:
        return read_image(path)
    except (OSError, ValueError) as exc:
        raise DataError(str(exc) if os.fspath(path) in str(exc) else f"{path}: {exc}") from None


# ------------------------------------------------------------------ conversion


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any image (gray, BGR, BGRA; uint8, uint16, bool or float) as contiguous uint8 RGB (H, W, 3).

    16 bit -> 8 bit is ``round(v / 257)`` (0 -> 0, 65535 -> 255), the one rule everywhere;
    floats in [0, 1] are scaled by 255, other floats clipped to [0, 255].
    """
    a = np.asarray(image)
    if a.dtype == np.uint16:
        a = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        f = a.astype(np.float32)
        if f.size and float(np.nanmax(f)) <= 1.0:
            f = f * 255.0
        a = np.clip(np.nan_to_num(f), 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    fast = _to_rgb
    if a.ndim == 2:
        return fast(a) if fast is not None else np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3:
        raise ValueError(f"expected a 2-D or 3-D image array, got shape {a.shape}")
    c = a.shape[2]
    if c in (3, 4):
        return fast(a) if fast is not None else np.ascontiguousarray(a[:, :, 2::-1])
    raise ValueError(f"images with {c} channels are not supported")


# ------------------------------------------------------------------ model input (the dl_* runtimes and the trainer)

#: The normalisation of the EfficientNet-Lite0 backbone: RGB, (x / 255 - 0.5) / 0.5.
DEFAULT_NORMALISATION = {"color": "RGB", "scale": 1.0 / 255.0, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def _resize(a: np.ndarray, width: int, height: int, mode: str) -> np.ndarray:
    fn = _resizer
    if fn is not None:
        return fn(a, width, height, mode)
    if mode != "nearest":
        raise RuntimeError(f"resizing with {mode} interpolation needs a resizer: call host.use_opencv(cv2) "
                           "(or host.register_resizer) first")
    ih, iw = a.shape[:2]
    ys = np.minimum((np.arange(height) * (ih / height)).astype(np.intp), ih - 1)
    xs = np.minimum((np.arange(width) * (iw / width)).astype(np.intp), iw - 1)
    return a[ys[:, None], xs[None, :]]


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Stretch to ``size`` = (height, width): area averaging when shrinking, bilinear when enlarging.
    The same array when it already has that size."""
    h, w = size
    if image.shape[0] == h and image.shape[1] == w:
        return image
    shrink = image.shape[0] > h or image.shape[1] > w
    return _resize(image, w, h, "area" if shrink else "linear")


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Class-index mask to ``size`` = (height, width), nearest neighbour (labels never blend)."""
    h, w = size
    if mask.shape[0] == h and mask.shape[1] == w:
        return mask
    return _resize(mask, w, h, "nearest")


def normalise(rgb_batch: np.ndarray, norm: dict | None = None) -> np.ndarray:
    """uint8 NHWC RGB -> float32 NCHW with the bundle's normalisation (``DEFAULT_NORMALISATION`` if None):
    ``(x * scale - mean) / std`` per channel.

    A uint8 batch goes through a per-channel table of the 256 values (computed once per normalisation),
    which writes the NCHW planes directly: the same float32 values as the arithmetic, at a fifth of its
    time on the per-frame path. Other dtypes take the arithmetic."""
    norm = norm or DEFAULT_NORMALISATION
    scale = float(norm.get("scale", 1.0 / 255.0))
    a = np.asarray(rgb_batch)
    if a.dtype == np.uint8 and a.ndim == 4 and a.shape[3] == 3:
        lut = _normalisation_table(scale, tuple(map(float, norm["mean"])), tuple(map(float, norm["std"])))
        out = np.empty((a.shape[0], 3, a.shape[1], a.shape[2]), np.float32)
        for i in range(a.shape[0]):
            for c in range(3):
                np.take(lut[c], a[i, :, :, c], out=out[i, c])
        return out
    mean = np.asarray(norm["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(norm["std"], np.float32).reshape(1, 3, 1, 1)
    x = a.astype(np.float32).transpose(0, 3, 1, 2) * np.float32(scale)
    return np.ascontiguousarray((x - mean) / std)


@functools.lru_cache(maxsize=32)
def _normalisation_table(scale: float, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """[3, 256] float32: ``(v * scale - mean[c]) / std[c]`` for every uint8 value v, in float32 as ``normalise``
    computes it."""
    v = np.arange(256, dtype=np.float32) * np.float32(scale)
    table = (v[None, :] - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]
    table.setflags(write=False)
    return table


def prepare_images(images: list[np.ndarray], size: tuple[int, int], norm: dict | None = None) -> np.ndarray:
    """A list of images as decoded (any depth / channels) -> a model's float32 NCHW RGB input:
    ``to_rgb8``, ``resize_to(size)`` (stretched), ``normalise(norm)``."""
    return normalise(np.stack([resize_to(to_rgb8(im), size) for im in images]), norm)
