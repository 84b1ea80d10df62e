"""Intensity and colour statistics, presence/absence, and pixel count in a range."""
from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import Field, model_validator

from host import InspectTool, Params, Shape, ToolOutput

from ._common import INFO, VERDICT, to_gray, to_u8


class IntensityParams(Params):
    percentiles: bool = Field(False, description="also measure the 5th and 95th percentiles (slower on 16-bit)")
    saturation: bool = Field(False, description="measure the mean HSV saturation of colour images (costs a colour "
                                                "conversion; NaN when off)")


class Intensity(InspectTool):
    id = "classical.intensity"
    title = "Intensity and colour statistics"
    description = "mean, standard deviation, minimum, maximum and median gray level, and the mean of each colour channel"
    Params = IntensityParams
    measurements = {"mean": "mean gray level", "std": "standard deviation of gray levels",
                    "min": "darkest gray level", "max": "brightest gray level",
                    "median": "median gray level",
                    "mean_b": "mean of the blue channel (gray images: the gray mean)",
                    "mean_g": "mean of the green channel (gray images: the gray mean)",
                    "mean_r": "mean of the red channel (gray images: the gray mean)",
                    "saturation": "mean HSV saturation (0..255; 0 for gray images; NaN unless params.saturation)"}

    def inspect(self, image: np.ndarray) -> ToolOutput:
        gray = to_gray(image)
        mean, std = cv2.meanStdDev(gray)
        lo, hi, _, _ = cv2.minMaxLoc(gray)
        m = float(mean[0, 0])
        if image.ndim == 3 and image.shape[2] >= 3:
            b, g, r = cv2.mean(image)[:3]
            if not self.params.saturation:
                sat = float("nan")
            elif image.dtype == np.uint8:
                sat = cv2.mean(cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2HSV))[1]
            else:
                f = image[:, :, :3].astype(np.float32)
                mx, mn = f.max(axis=2), f.min(axis=2)
                sat = float(np.mean(np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0))) * 255.0
        else:
            b = g = r = m
            sat = 0.0
        meas = {"mean": m, "std": float(std[0, 0]), "min": float(lo), "max": float(hi),
                "median": _percentile(gray, 50), "mean_b": float(b), "mean_g": float(g), "mean_r": float(r),
                "saturation": float(sat)}
        if self.params.percentiles:
            meas["p05"] = _percentile(gray, 5)
            meas["p95"] = _percentile(gray, 95)
        return ToolOutput(meas)


def _percentile(gray: np.ndarray, q: float) -> float:
    """Percentile via a histogram for 8-bit images (fast), numpy otherwise."""
    if gray.dtype == np.uint8:
        hist = cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel()
        c = np.cumsum(hist)
        return float(np.searchsorted(c, c[-1] * q / 100.0))
    return float(np.percentile(gray, q))


class RangeParams(Params):
    space: Literal["gray", "bgr", "hsv"] = Field(
        "gray", description="where the range applies: gray level (in the image's units), BGR channels or HSV "
                            "(8-bit units, H in 0..179; 16-bit colour images are scaled to 8-bit)")
    low: list[float] = Field([0.0], min_length=1, max_length=3,
                             description="lower bound(s): one value for gray, three for bgr/hsv")
    high: list[float] = Field([127.0], min_length=1, max_length=3, description="upper bound(s), inclusive")

    @model_validator(mode="after")
    def _bounds(self) -> "RangeParams":
        want = 1 if self.space == "gray" else 3
        if len(self.low) != want or len(self.high) != want:
            raise ValueError(f"space {self.space!r} needs {want} value(s) in low and high")
        if any(lo > hi for lo, hi in zip(self.low, self.high)) and self.space != "hsv":
            raise ValueError("each low must be at most its high")
        return self


def in_range(image: np.ndarray, p: RangeParams) -> np.ndarray:
    """uint8 mask (255 = pixel inside the range). HSV hue ranges may wrap (low H > high H)."""
    if p.space == "gray":
        g = to_gray(image)
        return cv2.inRange(g, np.array([p.low[0]]), np.array([p.high[0]]))
    img = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    img = to_u8(img[:, :, :3])  # colour ranges are in 8-bit units
    if p.space == "bgr":
        return cv2.inRange(img, np.array(p.low), np.array(p.high))
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    lo, hi = list(p.low), list(p.high)
    if lo[0] <= hi[0]:
        return cv2.inRange(hsv, np.array(lo), np.array(hi))
    a = cv2.inRange(hsv, np.array([lo[0], lo[1], lo[2]]), np.array([180, hi[1], hi[2]]))
    b = cv2.inRange(hsv, np.array([0, lo[1], lo[2]]), np.array([hi[0], hi[1], hi[2]]))
    return cv2.bitwise_or(a, b)


class PixelCountParams(RangeParams):
    px_per_mm: float | None = Field(None, gt=0, description="calibration: pixels per millimetre (adds area_mm2)")
    outline: bool = Field(True, description="draw the outline of the counted regions (up to 200 regions)")


class PixelCount(InspectTool):
    id = "classical.pixel_count"
    title = "Pixel count in range"
    description = "count the pixels whose gray level or colour lies in a range; area and fraction"
    Params = PixelCountParams
    measurements = {"count": "pixels in range", "fraction": "pixels in range / all pixels (0..1)",
                    "area_mm2": "area in range in mm² (NaN without px_per_mm)"}

    def inspect(self, image: np.ndarray) -> ToolOutput:
        p = self.params
        mask = in_range(image, p)
        n = cv2.countNonZero(mask)
        total = mask.shape[0] * mask.shape[1]
        meas = {"count": int(n), "fraction": n / total if total else 0.0,
                "area_mm2": n / p.px_per_mm ** 2 if p.px_per_mm else float("nan")}
        overlays = []
        if p.outline and n:
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for c in sorted(contours, key=cv2.contourArea, reverse=True)[:200]:
                if len(c) >= 3:
                    overlays.append(Shape("polygon", [(float(x), float(y)) for x, y in c.reshape(-1, 2)],
                                          status=INFO))
        return ToolOutput(meas, overlays)


class PresenceParams(RangeParams):
    min_fraction: float = Field(0.5, ge=0, le=1, description="the part is present when at least this fraction of "
                                                             "the ROI lies in the range")
    max_fraction: float = Field(1.0, ge=0, le=1, description="... and at most this fraction")


class Presence(InspectTool):
    id = "classical.presence"
    title = "Presence / absence"
    description = "present when the fraction of ROI pixels in a gray or colour range is within bounds"
    Params = PresenceParams
    measurements = {"present": "true when the in-range fraction is within [min_fraction, max_fraction]",
                    "fraction": "pixels in range / all pixels (0..1)", "mean": "mean gray level of the ROI"}

    def inspect(self, image: np.ndarray) -> ToolOutput:
        p = self.params
        mask = in_range(image, p)
        total = mask.shape[0] * mask.shape[1]
        frac = cv2.countNonZero(mask) / total if total else 0.0
        present = bool(p.min_fraction <= frac <= p.max_fraction)
        h, w = mask.shape
        shape = Shape("rect", [(0.0, 0.0), (float(w), float(h))],
                      label=f"{'present' if present else 'absent'} {frac:.0%}", status=VERDICT)
        return ToolOutput({"present": present, "fraction": frac, "mean": float(cv2.mean(to_gray(image))[0])}, [shape])
