"""GenICam pixel formats (PFNC names) to Loupe images: gray ``HxW`` or BGR ``HxWx3``.

Every conversion makes exactly one array that owns its memory, because the GenTL
buffer goes back to the producer as soon as the frame is converted:

- ``Mono8`` and ``BGR8``: one copy out of the buffer, nothing else;
- ``Mono10``/``Mono12``/``Mono16``: ``uint16``, shifted so that full scale is 65535
  for every bit depth (a Mono12 pixel of 4095 becomes 65520), in the same single
  pass that copies it out of the buffer; the frame's ``meta["bit_depth"]`` keeps
  the sensor's depth;
- Bayer (8, 10, 12 and 16 bit): demosaiced by OpenCV into BGR (the demosaic is the copy);
- ``RGB8``, ``RGBa8``, ``BGRa8``: converted by OpenCV into BGR.

Packed formats (``Mono12Packed``, ``RGB10Packed``...) and YUV are refused with a
clear error: set the camera's ``PixelFormat`` to an unpacked one.
"""
from __future__ import annotations

import cv2
import numpy as np

MONO_BITS = {"Mono8": 8, "Mono10": 10, "Mono12": 12, "Mono14": 14, "Mono16": 16}

# GenICam names the colour of the top-left 2x2 cell (BayerRG = R G / G B); OpenCV names
# the pattern by the second row's second and third pixels, so the letters swap.
_BAYER_TO_CV = {"RG": "BG", "BG": "RG", "GR": "GB", "GB": "GR"}
_COLOUR = {"RGB8": cv2.COLOR_RGB2BGR, "RGBa8": cv2.COLOR_RGBA2BGR, "BGRa8": cv2.COLOR_BGRA2BGR}

SUPPORTED = tuple(MONO_BITS) + ("BGR8",) + tuple(_COLOUR) + tuple(
    f"Bayer{p}{b}" for p in _BAYER_TO_CV for b in (8, 10, 12, 16))


def _bayer(fmt: str) -> tuple[int, int] | None:
    """``BayerRG12`` -> (OpenCV demosaic code, bit depth); ``None`` for other formats."""
    if not fmt.startswith("Bayer") or len(fmt) < 8:
        return None
    pattern, bits = fmt[5:7], fmt[7:]
    if pattern not in _BAYER_TO_CV or bits not in ("8", "10", "12", "16"):
        return None
    code = getattr(cv2, f"COLOR_Bayer{_BAYER_TO_CV[pattern]}2BGR")
    return code, int(bits)


def bit_depth(fmt: str) -> int:
    if fmt in MONO_BITS:
        return MONO_BITS[fmt]
    b = _bayer(fmt)
    return b[1] if b else 8


def to_image(data: np.ndarray, fmt: str, width: int, height: int) -> np.ndarray:
    """Turn one buffer component (``data``: the producer's flat array) into an owned image."""
    if fmt in MONO_BITS:
        bits = MONO_BITS[fmt]
        plane = data.reshape(height, width)
        if bits == 8:
            return plane.copy()
        plane = plane.view(np.uint16) if plane.dtype != np.uint16 else plane
        return np.left_shift(plane, 16 - bits) if bits < 16 else plane.copy()
    if fmt == "BGR8":
        return data.reshape(height, width, 3).copy()
    if fmt in _COLOUR:
        return cv2.cvtColor(data.reshape(height, width, 4 if fmt.endswith("a8") else 3), _COLOUR[fmt])
    bayer = _bayer(fmt)
    if bayer is not None:
        code, bits = bayer
        plane = data.reshape(height, width)
        if bits > 8:
            plane = plane.view(np.uint16) if plane.dtype != np.uint16 else plane
            if bits < 16:
                plane = np.left_shift(plane, 16 - bits)
        return cv2.cvtColor(plane, code)
    raise ValueError(f"pixel format {fmt!r} is not supported; set the camera's PixelFormat to one of "
                     f"{', '.join(SUPPORTED)}")
