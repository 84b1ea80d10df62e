"""Caliper: edges along a line or a rotated rectangle, with subpixel positions and pair widths."""
from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
from pydantic import Field, model_validator

from host import InspectTool, LazyShapes, Params, Shape, ToolOutput

from ._common import ALERT, INFO, VERDICT, to_gray


class CaliperParams(Params):
    start: tuple[float, float] = Field(..., description="start point [x, y] of the scan line (tool input pixels)")
    end: tuple[float, float] = Field(..., description="end point [x, y]; edges are reported as distances from start")
    width: float = Field(1.0, ge=1, le=2000, description="width of the scan band across the line (px): the profile "
                                                         "is averaged over this rotated rectangle")
    sigma: float = Field(1.0, ge=0, le=20, description="Gaussian smoothing of the profile before the derivative (px)")
    min_contrast: float = Field(20.0, ge=0, description="smallest gray-level step that counts as an edge")
    polarity: Literal["any", "rising", "falling"] = Field(
        "any", description="rising: dark to light along the scan; falling: light to dark")
    pair: Literal["dark", "bright", "none"] = Field(
        "dark", description="what a pair (a width) is: a dark bar (falling then rising edge), a bright bar, or none")
    expected_width: float | None = Field(None, gt=0, description="keep only pairs within 'tolerance' of this width (px)")
    tolerance: float = Field(0.25, ge=0, le=10, description="relative tolerance for expected_width (0.25 = ±25 %)")
    max_edges: int = Field(64, ge=1, le=10000, description="keep at most this many strongest edges")
    px_per_mm: float | None = Field(None, gt=0, description="calibration: pixels per millimetre (adds *_mm values)")

    @model_validator(mode="after")
    def _length(self) -> "CaliperParams":
        if math.dist(self.start, self.end) < 3:
            raise ValueError("start and end must be at least 3 px apart")
        return self


class Caliper(InspectTool):
    id = "classical.caliper"
    title = "Caliper (edge measurement)"
    description = "edges along a line or rotated rectangle: subpixel positions, edge pairs and widths"
    Params = CaliperParams
    measurements = {
        "edge_count": "number of edges found",
        "first_edge": "distance of the first edge from the start point (px; NaN when none)",
        "last_edge": "distance of the last edge from the start point (px; NaN when none)",
        "span": "distance between the first and last edges (px)",
        "pair_count": "number of edge pairs (bars) found",
        "width": "width of the first pair (px; NaN when none)",
        "mean_width": "mean pair width (px)",
        "min_width": "narrowest pair (px)",
        "max_width": "widest pair (px)",
        "contrast": "strongest edge step (gray levels)",
    }

    def __init__(self, params, context=None):
        super().__init__(params, context)
        p = params
        (x0, y0), (x1, y1) = p.start, p.end
        length = math.hypot(x1 - x0, y1 - y0)
        self._u = ((x1 - x0) / length, (y1 - y0) / length)  # along the line
        self._v = (-self._u[1], self._u[0])  # across
        n = int(math.floor(length)) + 1
        m = max(1, int(round(p.width)))
        t = np.arange(n, dtype=np.float32)
        s = (np.arange(m, dtype=np.float32) - (m - 1) / 2.0)
        # the sampling grid (m rows across, n columns along), computed once
        self._mapx = (x0 + t[None, :] * self._u[0] + s[:, None] * self._v[0]).astype(np.float32)
        self._mapy = (y0 + t[None, :] * self._u[1] + s[:, None] * self._v[1]).astype(np.float32)
        self._n, self._m, self._length = n, m, length
        if p.sigma > 0:
            r = max(1, int(math.ceil(3 * p.sigma)))
            g = np.exp(-0.5 * (np.arange(-r, r + 1) / p.sigma) ** 2)
            self._kernel = (g / g.sum()).astype(np.float64)
        else:
            self._kernel = None

    def profile(self, image: np.ndarray) -> np.ndarray:
        """The gray-level profile along the line, averaged across the band (float64, one sample per px)."""
        gray = to_gray(image)
        if gray.dtype not in (np.uint8, np.uint16, np.float32):
            gray = gray.astype(np.float32)
        band = cv2.remap(gray, self._mapx, self._mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        prof = cv2.reduce(band, 0, cv2.REDUCE_AVG, dtype=cv2.CV_64F)[0] if self._m > 1 else \
            band[0].astype(np.float64)
        if self._kernel is not None:
            r = len(self._kernel) // 2
            prof = np.convolve(np.pad(prof, r, mode="edge"), self._kernel, mode="valid")
        return prof

    def edges(self, prof: np.ndarray) -> list[tuple[float, float]]:
        """Subpixel edges as (position along the line, signed step).

        The derivative is split into runs of one sign; each run is one candidate edge whose step is the
        run's sum (the gray-level change across it) and whose position is the run's strongest derivative
        sample, refined by a parabola through it and its neighbours. Vectorised: no per-sample Python.
        """
        p = self.params
        d = np.zeros_like(prof)
        d[1:-1] = (prof[2:] - prof[:-2]) / 2.0
        sign = np.sign(d)
        nz = np.flatnonzero(sign)
        if nz.size == 0:
            return []
        # runs of equal sign among the non-zero samples (zeros end a run)
        brk = np.flatnonzero((np.diff(nz) != 1) | (sign[nz[1:]] != sign[nz[:-1]])) + 1
        starts = np.concatenate(([0], brk))
        steps = np.add.reduceat(d[nz], starts)
        keep = np.abs(steps) >= p.min_contrast
        if p.polarity == "rising":
            keep &= steps > 0
        elif p.polarity == "falling":
            keep &= steps < 0
        if not keep.any():
            return []
        a = np.abs(d)
        # the strongest sample of each kept run (the first one on ties), refined by a parabola
        av = a[nz]
        run = np.repeat(np.arange(starts.size), np.diff(np.concatenate((starts, [nz.size]))))
        peak = np.maximum.reduceat(av, starts)
        hit = np.flatnonzero(av == peak[run])
        first = hit[np.unique(run[hit], return_index=True)[1]]     # per run, in run order
        k = np.flatnonzero(keep)
        i = nz[first[k]]
        inner = (i > 0) & (i < len(a) - 1)
        y0 = np.where(inner, a[np.maximum(i - 1, 0)], 0.0)
        y1 = a[i]
        y2 = np.where(inner, a[np.minimum(i + 1, len(a) - 1)], 0.0)
        den = y0 - 2 * y1 + y2
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.where(inner & (den != 0), 0.5 * (y0 - y2) / den, 0.0)
        pos = i + np.clip(off, -0.5, 0.5)
        st = steps[k]
        if len(pos) > p.max_edges:
            top = np.sort(np.argsort(-np.abs(st), kind="stable")[:p.max_edges])
            pos, st = pos[top], st[top]
        return list(zip(pos.tolist(), st.tolist()))

    def inspect(self, image: np.ndarray) -> ToolOutput:
        p = self.params
        prof = self.profile(image)
        edges = self.edges(prof)
        pos = [e[0] for e in edges]
        pairs: list[tuple[float, float]] = []
        if p.pair != "none":
            first = -1.0 if p.pair == "dark" else 1.0
            i = 0
            while i < len(edges) - 1:
                a, b = edges[i], edges[i + 1]
                if a[1] * first > 0 > b[1] * first:
                    w = b[0] - a[0]
                    if p.expected_width is None or abs(w - p.expected_width) <= p.tolerance * p.expected_width:
                        pairs.append((a[0], b[0]))
                        i += 2
                        continue
                i += 1
        widths = [b - a for a, b in pairs]
        nan = float("nan")
        meas = {
            "edge_count": len(edges),
            "first_edge": pos[0] if pos else nan,
            "last_edge": pos[-1] if pos else nan,
            "span": (pos[-1] - pos[0]) if len(pos) > 1 else 0.0,
            "pair_count": len(pairs),
            "width": widths[0] if widths else nan,
            "mean_width": float(np.mean(widths)) if widths else nan,
            "min_width": min(widths) if widths else nan,
            "max_width": max(widths) if widths else nan,
            "contrast": max((abs(e[1]) for e in edges), default=0.0),
            "edges": np.round(pos, 4).tolist(),
            "widths": np.round(widths, 4).tolist(),
        }
        if p.px_per_mm:
            for k in ("width", "mean_width", "min_width", "max_width", "span"):
                meas[k + "_mm"] = meas[k] / p.px_per_mm
        return ToolOutput(meas, LazyShapes(lambda: self._overlays(edges, pairs)))  # built when drawn

    def point(self, t: float) -> tuple[float, float]:
        x0, y0 = self.params.start
        return (x0 + t * self._u[0], y0 + t * self._u[1])

    def _overlays(self, edges, pairs) -> list[Shape]:
        p = self.params
        half = max(p.width / 2.0, 4.0)
        vx, vy = self._v
        (x0, y0), (x1, y1) = p.start, p.end
        hw = p.width / 2.0
        shapes = [Shape("polygon", [(x0 + vx * hw, y0 + vy * hw), (x1 + vx * hw, y1 + vy * hw),
                                    (x1 - vx * hw, y1 - vy * hw), (x0 - vx * hw, y0 - vy * hw)],
                        status=INFO if edges else ALERT)]
        for t, step in edges:
            x, y = self.point(t)
            shapes.append(Shape("line", [(x - vx * half, y - vy * half), (x + vx * half, y + vy * half)],
                                status=VERDICT))
        for a, b in pairs:
            xa, ya = self.point(a)
            xb, yb = self.point(b)
            shapes.append(Shape("line", [(xa, ya), (xb, yb)], label=f"{b - a:.2f} px", status=VERDICT))
        return shapes
