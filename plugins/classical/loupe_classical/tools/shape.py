"""Contour and shape measurement: circle, ellipse and minimum-area rectangle fits, in px and mm."""
from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from host import InspectTool, LazyShapes, Shape, ToolOutput

from ._common import ALERT, INFO, VERDICT, BinarizeParams, binarize, to_gray

_LENGTHS = ("perimeter", "circle_radius", "diameter", "ellipse_major", "ellipse_minor", "rect_width", "rect_height",
            "feret_max")


class ShapeParams(BinarizeParams):
    select: Literal["largest", "closest_to_centre"] = Field(
        "largest", description="which object is measured when several are found")
    min_area: float = Field(50, ge=0, description="ignore objects smaller than this (px²)")
    circle_fit: Literal["least_squares", "enclosing"] = Field(
        "least_squares", description="least_squares: best-fit circle through the contour (subpixel); "
                                     "enclosing: the smallest circle containing it")
    px_per_mm: float | None = Field(None, gt=0, description="calibration: pixels per millimetre (adds *_mm values)")


class ShapeMeasure(InspectTool):
    id = "classical.shape"
    title = "Contour and shape measurement"
    description = "measure one object's contour: area, perimeter, circle/ellipse/rectangle fits, roundness, in px and mm"
    Params = ShapeParams
    measurements = {
        "found": "true when an object was found",
        "count": "objects above min_area",
        "area": "object area (px²; NaN when none)",
        "perimeter": "contour length (px)",
        "circle_x": "fitted circle centre x (px)",
        "circle_y": "fitted circle centre y (px)",
        "circle_radius": "fitted circle radius (px)",
        "diameter": "fitted circle diameter (px)",
        "roundness": "largest radial deviation of the contour from the fitted circle (px)",
        "ellipse_major": "fitted ellipse full major axis (px)",
        "ellipse_minor": "fitted ellipse full minor axis (px)",
        "ellipse_angle": "fitted ellipse angle (degrees)",
        "rect_width": "minimum-area rectangle: longer side (px)",
        "rect_height": "minimum-area rectangle: shorter side (px)",
        "rect_angle": "minimum-area rectangle angle of the longer side (degrees)",
        "feret_max": "largest caliper diameter (px)",
        "area_mm2": "area in mm² (NaN without px_per_mm)",
        "diameter_mm": "fitted circle diameter in mm (NaN without px_per_mm)",
    }

    def inspect(self, image: np.ndarray) -> ToolOutput:
        p = self.params
        mask = binarize(to_gray(image), p)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        # one pass: the objects that pass the filters, and the largest of them
        objs, area, c = [], -1.0, None
        for cont in contours:
            if len(cont) < 5:
                continue
            a = cv2.contourArea(cont)
            if a >= p.min_area:
                objs.append(cont)
                if a > area:
                    area, c = a, cont
        nan = float("nan")
        meas = {k: nan for k in self.measurements}
        meas.update({"found": False, "count": len(objs)})
        if not objs:
            return ToolOutput(meas, [Shape("text", [(2.0, 12.0)], label="no object", status=ALERT)])
        if p.select != "largest":
            h, w = mask.shape
            c = min(objs, key=lambda o: _dist_to(o, w / 2, h / 2))
            area = cv2.contourArea(c)
        pts = c.reshape(-1, 2).astype(np.float64)
        if p.circle_fit == "least_squares":
            cx, cy, r = fit_circle(pts)
        else:
            (cx, cy), r = cv2.minEnclosingCircle(c)
        dev = float(np.abs(np.hypot(pts[:, 0] - cx, pts[:, 1] - cy) - r).max())
        (ex, ey), (ea, eb), eang = cv2.fitEllipse(c)
        (rx, ry), (rw, rh), rang = cv2.minAreaRect(c)
        if rh > rw:
            rw, rh, rang = rh, rw, rang + 90.0
        hull = cv2.convexHull(c).reshape(-1, 2).astype(np.float64)
        feret = float(np.sqrt(((hull[:, None] - hull[None]) ** 2).sum(-1)).max()) if len(hull) > 1 else 0.0
        meas.update({
            "found": True, "area": float(area), "perimeter": float(cv2.arcLength(c, True)),
            "circle_x": float(cx), "circle_y": float(cy), "circle_radius": float(r), "diameter": 2.0 * float(r),
            "roundness": dev, "ellipse_major": float(max(ea, eb)), "ellipse_minor": float(min(ea, eb)),
            "ellipse_angle": float(eang), "rect_width": float(rw), "rect_height": float(rh),
            "rect_angle": float(((rang + 90.0) % 180.0) - 90.0), "feret_max": feret,
        })
        if p.px_per_mm:
            s = p.px_per_mm
            meas["area_mm2"] = meas["area"] / s ** 2
            meas["diameter_mm"] = meas["diameter"] / s
            for k in _LENGTHS:
                meas[k + "_mm"] = meas[k] / s
        def overlays() -> list[Shape]:  # built only when a reporter or the GUI draws them
            box = cv2.boxPoints(((rx, ry), (rw, rh), rang))
            return [
                Shape("polygon", cv2.approxPolyDP(c, 0.5, True).reshape(-1, 2).tolist(), status=INFO),
                Shape("circle", [(float(cx), float(cy))], radius=float(r), label=f"Ø {2 * r:.2f} px", status=VERDICT),
                Shape("ellipse", [(float(ex), float(ey))], axes=(ea / 2.0, eb / 2.0), angle=float(eang),
                      status=INFO),
                Shape("polygon", box.tolist(), status=INFO),
            ]

        return ToolOutput(meas, LazyShapes(overlays))


def fit_circle(pts: np.ndarray) -> tuple[float, float, float]:
    """Least-squares circle through points (Kasa fit, centred for numerical stability)."""
    mx, my = pts.mean(axis=0)
    x, y = pts[:, 0] - mx, pts[:, 1] - my
    a = np.column_stack([x, y, np.ones_like(x)])
    b = x * x + y * y
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = sol[0] / 2.0, sol[1] / 2.0
    r = math.sqrt(max(0.0, sol[2] + cx * cx + cy * cy))
    return float(cx + mx), float(cy + my), r


def _dist_to(c: np.ndarray, x: float, y: float) -> float:
    m = cv2.moments(c)
    if m["m00"] == 0:
        return float("inf")
    return math.hypot(m["m10"] / m["m00"] - x, m["m01"] / m["m00"] - y)
