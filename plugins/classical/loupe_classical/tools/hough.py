"""Line and circle finding with Hough transforms."""
from __future__ import annotations

import math

import cv2
import numpy as np
from pydantic import Field, model_validator

from host import InspectTool, Params, Shape, ToolOutput

from ._common import ALERT, VERDICT, to_gray, to_u8


class LinesParams(Params):
    canny_low: float = Field(50, ge=0, le=1000, description="Canny edge detector: lower hysteresis threshold")
    canny_high: float = Field(150, ge=0, le=1000, description="Canny edge detector: upper hysteresis threshold")
    votes: int = Field(50, ge=1, description="accumulator votes a line needs")
    min_length: float = Field(30, ge=1, description="shortest segment kept (px)")
    max_gap: float = Field(5, ge=0, description="largest gap bridged inside a segment (px)")
    angle_min: float = Field(-90, ge=-90, le=90, description="keep segments whose angle (degrees, -90..90, "
                                                            "0 = horizontal, image y down) is at least this")
    angle_max: float = Field(90, ge=-90, le=90, description="... and at most this")
    max_lines: int = Field(100, ge=1, le=10000, description="report at most this many (longest first)")

    @model_validator(mode="after")
    def _order(self) -> "LinesParams":
        if self.canny_low > self.canny_high:
            raise ValueError("canny_low must be at most canny_high")
        if self.angle_min > self.angle_max:
            raise ValueError("angle_min must be at most angle_max")
        return self


class HoughLines(InspectTool):
    id = "classical.lines"
    title = "Line finding (Hough)"
    description = "find straight segments (probabilistic Hough on Canny edges): count, longest length and angle"
    Params = LinesParams
    measurements = {"count": "segments found", "longest": "length of the longest segment (px; 0 when none)",
                    "angle": "angle of the longest segment (degrees, -90..90; NaN when none)",
                    "total_length": "sum of segment lengths (px)"}

    def inspect(self, image: np.ndarray) -> ToolOutput:
        p = self.params
        edges = cv2.Canny(to_u8(to_gray(image)), p.canny_low, p.canny_high)
        raw = cv2.HoughLinesP(edges, 1, np.pi / 180, p.votes, minLineLength=p.min_length, maxLineGap=p.max_gap)
        segs = []
        if raw is not None:
            for x1, y1, x2, y2 in raw.reshape(-1, 4).astype(float):
                ang = math.degrees(math.atan2(y2 - y1, x2 - x1))
                ang = (ang + 90.0) % 180.0 - 90.0
                if p.angle_min <= ang <= p.angle_max:
                    segs.append((math.hypot(x2 - x1, y2 - y1), ang, (x1, y1, x2, y2)))
        segs.sort(key=lambda s: -s[0])
        segs = segs[:p.max_lines]
        meas = {"count": len(segs), "longest": segs[0][0] if segs else 0.0,
                "angle": segs[0][1] if segs else float("nan"), "total_length": float(sum(s[0] for s in segs)),
                "lines": [[round(v, 1) for v in s[2]] for s in segs]}
        overlays = [Shape("line", [(s[2][0], s[2][1]), (s[2][2], s[2][3])], label=f"{s[1]:.1f}°" if i == 0 else "",
                          status=VERDICT) for i, s in enumerate(segs)]
        return ToolOutput(meas, overlays)


class CirclesParams(Params):
    min_radius: int = Field(5, ge=0, description="smallest radius searched (px)")
    max_radius: int = Field(100, ge=1, description="largest radius searched (px)")
    min_distance: float = Field(20, ge=1, description="smallest distance between centres (px)")
    canny_high: float = Field(150, ge=1, le=1000, description="upper Canny threshold used by the detector")
    accumulator: float = Field(0.8, gt=0, le=1, description="circle 'perfectness' needed (0..1; 1 = perfect circle)")
    blur: int = Field(5, ge=0, le=31, description="median blur before detection (odd px; 0 = none)")
    max_circles: int = Field(100, ge=1, le=10000, description="report at most this many")

    @model_validator(mode="after")
    def _order(self) -> "CirclesParams":
        if self.min_radius > self.max_radius:
            raise ValueError("min_radius must be at most max_radius")
        return self


class HoughCircles(InspectTool):
    id = "classical.circles"
    title = "Circle finding (Hough)"
    description = "find circles (OpenCV's gradient Hough transform): count, radii, centres"
    Params = CirclesParams
    measurements = {"count": "circles found", "mean_radius": "mean radius (px; NaN when none)",
                    "min_radius": "smallest radius (px)", "max_radius": "largest radius (px)"}

    def inspect(self, image: np.ndarray) -> ToolOutput:
        p = self.params
        g = to_u8(to_gray(image))
        if p.blur > 1:
            g = cv2.medianBlur(g, p.blur | 1)
        res = cv2.HoughCircles(g, cv2.HOUGH_GRADIENT_ALT, 1.5, p.min_distance, param1=p.canny_high * 2,
                               param2=p.accumulator, minRadius=p.min_radius, maxRadius=p.max_radius)
        circles = [] if res is None else [tuple(map(float, c)) for c in res.reshape(-1, 3)[:p.max_circles]]
        radii = [c[2] for c in circles]
        nan = float("nan")
        meas = {"count": len(circles), "mean_radius": float(np.mean(radii)) if radii else nan,
                "min_radius": min(radii) if radii else nan, "max_radius": max(radii) if radii else nan,
                "circles": [[round(v, 2) for v in c] for c in circles]}
        overlays = [Shape("circle", [(c[0], c[1])], radius=c[2], status=VERDICT) for c in circles]
        if not circles:
            overlays.append(Shape("text", [(2.0, 12.0)], label="no circle", status=ALERT))
        return ToolOutput(meas, overlays)
