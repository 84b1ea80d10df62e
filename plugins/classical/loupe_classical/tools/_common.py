"""Helpers shared by the classical tools: gray conversion, 8-bit scaling, binarisation, statuses."""
from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from host import Params

# shape statuses understood by the GUI and the HTML report. VERDICT and ALERT are resolved when drawn, from the
# step's verdict against its limits (which a tool cannot know): VERDICT takes the verdict's colour, ALERT too but
# is not drawn when the step passes (host.overlay_status).
OK, BAD, INFO, REVIEW = "pass", "fail", "info", "review"
VERDICT, ALERT = "verdict", "alert"


def to_gray(image: np.ndarray) -> np.ndarray:
    """Gray view of ``image`` (gray images are returned as they are, BGR and BGRA converted)."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def to_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def to_u8(image: np.ndarray) -> np.ndarray:
    """8-bit version of ``image``: 16-bit is scaled by 1/257, float in [0, 1] by 255 (others clipped)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return cv2.convertScaleAbs(image, alpha=1.0 / 257.0)
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    f = image.astype(np.float32)
    if np.issubdtype(image.dtype, np.floating) and f.size and float(f.max()) <= 1.0:
        f = f * 255.0
    return np.clip(f, 0, 255).astype(np.uint8)


def full_scale(dtype: np.dtype) -> float:
    """The largest gray level of an integer dtype (255, 65535); 1.0 for float images."""
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


class BinarizeParams(Params):
    """How an inspect tool separates objects from background (shared by blob, shape, pixel count)."""

    polarity: Literal["dark", "bright"] = Field(
        "dark", description="objects are darker (dark) or brighter (bright) than the background")
    threshold: Literal["otsu", "fixed", "adaptive", "triangle", "none"] = Field(
        "otsu", description="otsu/triangle: automatic global level; fixed: 'level'; adaptive: local mean; "
                            "none: the input is already binary (non-zero = object)")
    level: float = Field(128, ge=0, le=65535, description="gray level for threshold 'fixed' (in the image's units)")
    block_size: int = Field(51, ge=3, le=1001, description="adaptive: odd neighbourhood size in pixels")
    offset: float = Field(5, ge=-255, le=255, description="adaptive: how far from the local mean a pixel must be")


def binarize(gray: np.ndarray, p: BinarizeParams) -> np.ndarray:
    """A uint8 mask (255 = object) from a gray image following ``p``."""
    dark = p.polarity == "dark"
    if p.threshold == "none":
        mask = (gray > 0).astype(np.uint8) * 255
        return mask
    if p.threshold == "fixed":
        if gray.dtype not in (np.uint8, np.uint16, np.float32):
            gray = gray.astype(np.float32)
        if gray.dtype == np.uint16:
            mask = ((gray <= p.level) if dark else (gray > p.level)).astype(np.uint8) * 255
            return mask
        _, mask = cv2.threshold(gray, p.level, 255, cv2.THRESH_BINARY_INV if dark else cv2.THRESH_BINARY)
        return mask.astype(np.uint8)
    g8 = to_u8(gray)
    if p.threshold == "adaptive":
        block = p.block_size | 1
        # dark objects: pixel below (local mean - offset)
        return cv2.adaptiveThreshold(g8, 255, cv2.ADAPTIVE_THRESH_MEAN_C,
                                     cv2.THRESH_BINARY_INV if dark else cv2.THRESH_BINARY, block,
                                     p.offset if dark else -p.offset)
    flag = cv2.THRESH_OTSU if p.threshold == "otsu" else cv2.THRESH_TRIANGLE
    _, mask = cv2.threshold(g8, 0, 255, (cv2.THRESH_BINARY_INV if dark else cv2.THRESH_BINARY) | flag)
    return mask


def odd(n: int) -> int:
    return n if n % 2 else n + 1
