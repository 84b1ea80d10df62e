"""Pattern matching: normalised cross-correlation of a template image, several instances, optional rotation."""
from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from host import InspectTool, Params, Shape, ToolOutput, UsageError

from ._common import ALERT, BAD, OK, to_gray


class PatternParams(Params):
    template: str = Field(..., description="template image file (path relative to the recipe)")
    min_score: float = Field(0.8, ge=-1, le=1, description="smallest correlation score accepted as a match")
    max_matches: int = Field(1, ge=1, le=1000, description="report at most this many instances (best first)")
    min_distance: float | None = Field(None, ge=1, description="smallest distance between two instances' centres "
                                                               "(px; default: half the template's smaller side)")
    method: Literal["ccoeff", "ccorr"] = Field(
        "ccoeff", description="ccoeff: zero-mean NCC (robust to brightness and contrast changes); ccorr: plain NCC")
    angle_range: float = Field(0.0, ge=0, le=180, description="search rotations within ±angle_range degrees (0 = off)")
    angle_step: float = Field(5.0, gt=0, le=90, description="rotation search step in degrees")
    pyramid: int = Field(0, ge=0, le=4, description="coarse-to-fine levels (each halves the search image); "
                                                    "0 = full resolution only")


class PatternMatch(InspectTool):
    id = "classical.pattern"
    title = "Pattern matching"
    description = "find a template by normalised cross-correlation: best location and score, several instances, rotation"
    Params = PatternParams
    measurements = {
        "count": "instances at or above min_score",
        "score": "best correlation score (-1..1; NaN when the image is smaller than the template)",
        "x": "best instance: centre x (px, subpixel)",
        "y": "best instance: centre y (px, subpixel)",
        "left": "best instance: left edge x of the template box (px, subpixel)",
        "top": "best instance: top edge y of the template box (px, subpixel)",
        "angle": "best instance: rotation in degrees (counter-clockwise)",
    }

    def __init__(self, params, context=None):
        super().__init__(params, context)
        from ..sources import read_image

        path = self.context.resolve(params.template)
        try:
            tpl = read_image(path)
        except (ValueError, OSError) as exc:
            raise UsageError(f"step {self.context.step!r}: params.template: {exc}") from None
        self._tpl = to_gray(tpl)
        self._method = cv2.TM_CCOEFF_NORMED if params.method == "ccoeff" else cv2.TM_CCORR_NORMED
        th, tw = self._tpl.shape
        self._size = (tw, th)
        self._mind = params.min_distance or max(1.0, min(tw, th) / 2.0)
        # rotated templates (with masks for the uncovered corners), built once
        self._variants: list[tuple[float, np.ndarray, np.ndarray | None]] = []
        if params.angle_range > 0:
            n = int(math.floor(params.angle_range / params.angle_step))
            angles = [k * params.angle_step for k in range(-n, n + 1)]
        else:
            angles = [0.0]
        for a in angles:
            self._variants.append((a, *self._rotated(self._tpl, a)))

    @staticmethod
    def _rotated(tpl: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray | None]:
        if angle == 0:
            return tpl, None
        h, w = tpl.shape
        m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
        c, s = abs(m[0, 0]), abs(m[0, 1])
        nw, nh = int(math.ceil(h * s + w * c)), int(math.ceil(h * c + w * s))
        m[0, 2] += (nw - w) / 2.0
        m[1, 2] += (nh - h) / 2.0
        rot = cv2.warpAffine(tpl, m, (nw, nh), flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(np.full((h, w), 255, np.uint8), m, (nw, nh), flags=cv2.INTER_NEAREST)
        mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
        return rot, mask

    def _prepare(self, gray: np.ndarray, tpl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if gray.dtype == tpl.dtype and gray.dtype in (np.uint8, np.float32):
            return gray, tpl
        return gray.astype(np.float32), tpl.astype(np.float32)

    def _score_map(self, gray: np.ndarray, tpl: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        g, t = self._prepare(gray, tpl)
        if mask is None:
            res = cv2.matchTemplate(g, t, self._method)
        else:
            res = cv2.matchTemplate(g, t, self._method, mask=mask)
            res[~np.isfinite(res)] = -1.0
        return res

    def inspect(self, image: np.ndarray) -> ToolOutput:
        p = self.params
        gray = to_gray(image)
        cands: list[tuple[float, float, float, float, int, int]] = []  # score, cx, cy, angle, tw, th
        for angle, tpl, mask in self._variants:
            th, tw = tpl.shape
            if gray.shape[0] < th or gray.shape[1] < tw:
                continue
            res = self._search(gray, tpl, mask)
            for score, x, y in _peaks(res, p.max_matches, p.min_score, self._mind):
                cands.append((score, x + (tw - 1) / 2.0, y + (th - 1) / 2.0, angle, tw, th))
        # non-maximum suppression across angles
        cands.sort(key=lambda c: -c[0])
        found: list[tuple[float, float, float, float, int, int]] = []
        for c in cands:
            if all(math.hypot(c[1] - f[1], c[2] - f[2]) >= self._mind for f in found):
                found.append(c)
                if len(found) >= p.max_matches:
                    break
        nan = float("nan")
        tw0, th0 = self._size
        if found:
            s, cx, cy, a, _, _ = found[0]
            meas = {"count": sum(1 for f in found if f[0] >= p.min_score), "score": s, "x": cx, "y": cy,
                    "left": cx - (tw0 - 1) / 2.0, "top": cy - (th0 - 1) / 2.0, "angle": a}
        else:
            meas = {"count": 0, "score": nan if not cands else max(c[0] for c in cands), "x": nan, "y": nan,
                    "left": nan, "top": nan, "angle": nan}
        meas["matches"] = [[round(f[1], 3), round(f[2], 3), round(f[3], 2), round(f[0], 4)] for f in found]
        overlays = []
        for i, (s, cx, cy, a, _, _) in enumerate(found):
            overlays.append(Shape("polygon", _box(cx, cy, tw0, th0, a), label=f"{i + 1}: {s:.3f}",
                                  status=OK if s >= p.min_score else BAD))
            overlays.append(Shape("point", [(cx, cy)], status=OK))
        if not found:
            overlays.append(Shape("text", [(2.0, 12.0)], label="pattern not found", status=ALERT))
        return ToolOutput(meas, overlays)

    def _search(self, gray: np.ndarray, tpl: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """Score map at full resolution; with pyramid levels, only around the coarse candidates."""
        levels = self.params.pyramid
        if levels == 0 or min(tpl.shape) >> levels < 8:
            return self._score_map(gray, tpl, mask)
        f = 1 << levels
        small = cv2.resize(gray, (gray.shape[1] // f, gray.shape[0] // f), interpolation=cv2.INTER_AREA)
        stpl = cv2.resize(tpl, (tpl.shape[1] // f, tpl.shape[0] // f), interpolation=cv2.INTER_AREA)
        smask = None if mask is None else cv2.resize(mask, (stpl.shape[1], stpl.shape[0]),
                                                     interpolation=cv2.INTER_NEAREST)
        coarse = self._score_map(small, stpl, smask)
        full = np.full((gray.shape[0] - tpl.shape[0] + 1, gray.shape[1] - tpl.shape[1] + 1), -1.0, np.float32)
        th, tw = tpl.shape
        rough = max(-1.0, self.params.min_score - 0.3)
        for _, x, y in _peaks(coarse, self.params.max_matches * 2, rough, max(1.0, self._mind / f)):
            x0, y0 = max(0, int(x * f) - f - 2), max(0, int(y * f) - f - 2)
            x1, y1 = min(full.shape[1], int(x * f) + f + 3), min(full.shape[0], int(y * f) + f + 3)
            sub = gray[y0:y1 + th - 1, x0:x1 + tw - 1]
            full[y0:y1, x0:x1] = self._score_map(sub, tpl, mask)
        return full


def _peaks(res: np.ndarray, k: int, min_score: float, min_dist: float) -> list[tuple[float, float, float]]:
    """Up to ``k`` local maxima of a score map (subpixel by parabola fits), at least ``min_dist`` apart."""
    out: list[tuple[float, float, float]] = []
    work = res.copy() if k > 1 else res
    r = max(1, int(min_dist))
    for _ in range(k):
        _, mx, _, (x, y) = cv2.minMaxLoc(work)
        if mx < min_score or not np.isfinite(mx):
            break
        dx = dy = 0.0
        if 0 < x < res.shape[1] - 1:
            a, b, c = res[y, x - 1], res[y, x], res[y, x + 1]
            den = a - 2 * b + c
            dx = 0.5 * (a - c) / den if den < 0 else 0.0
        if 0 < y < res.shape[0] - 1:
            a, b, c = res[y - 1, x], res[y, x], res[y + 1, x]
            den = a - 2 * b + c
            dy = 0.5 * (a - c) / den if den < 0 else 0.0
        out.append((float(mx), x + float(np.clip(dx, -0.5, 0.5)), y + float(np.clip(dy, -0.5, 0.5))))
        if k > 1:
            work[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1] = -2.0
    return out


def _box(cx: float, cy: float, w: float, h: float, angle: float) -> list[tuple[float, float]]:
    pts = cv2.boxPoints(((cx, cy), (w, h), -angle))
    return [(float(x), float(y)) for x, y in pts]
