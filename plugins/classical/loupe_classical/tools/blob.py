"""Blob analysis: connected regions of a binarised image, measured and filtered."""
from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from host import InspectTool, Shape, ToolOutput

from ._common import BAD, INFO, OK, BinarizeParams, binarize, to_gray


class BlobParams(BinarizeParams):
    min_area: float = Field(20, ge=0, description="smallest blob kept, in px² (filter)")
    max_area: float | None = Field(None, ge=0, description="largest blob kept, in px² (filter; none = no limit)")
    min_circularity: float = Field(0.0, ge=0, le=1,
                                   description="4·π·area/perimeter² (1 = disc); blobs below are dropped")
    exclude_border: bool = Field(False, description="drop blobs touching the image (ROI) border")
    fill_holes: bool = Field(True, description="measure blobs with their inner holes filled")
    open_size: int = Field(0, ge=0, le=99, description="morphological opening of the mask before labelling (px); "
                                                       "0 = none. Separates lightly touching objects")
    connectivity: Literal[4, 8] = Field(8, description="pixel connectivity")
    px_per_mm: float | None = Field(None, gt=0, description="calibration: pixels per millimetre (adds *_mm values)")
    max_overlays: int = Field(500, ge=0, le=100000, description="draw at most this many blobs")


class Blob(InspectTool):
    id = "classical.blob"
    title = "Blob analysis"
    description = "count blobs; area, centroid, bounding box and circularity, with area/circularity/border filters"
    Params = BlobParams
    measurements = {
        "count": "number of blobs that passed the filters",
        "total_area": "sum of blob areas (px²)",
        "mean_area": "mean blob area (px²; 0 without blobs)",
        "min_area": "smallest blob area (px²; 0 without blobs)",
        "max_area": "largest blob area (px²; 0 without blobs)",
        "mean_circularity": "mean circularity 4·π·A/P² (1 = disc)",
        "min_circularity": "least circular blob",
        "pitch": "median distance from each blob centroid to its nearest neighbour (px; 0 below 2 blobs)",
        "rejected": "blobs dropped by the filters",
    }

    def __init__(self, params, context=None):
        super().__init__(params, context)
        k = params.open_size
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)) if k > 1 else None

    def inspect(self, image: np.ndarray) -> ToolOutput:
        p = self.params
        mask = binarize(to_gray(image), p)
        if self._open is not None:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._open)
        # outer contours: one per blob; holes are filled by drawing the outer contour when asked
        mode = cv2.RETR_EXTERNAL if p.fill_holes else cv2.RETR_CCOMP
        contours, hierarchy = cv2.findContours(mask, mode, cv2.CHAIN_APPROX_SIMPLE)
        h, w = mask.shape
        areas, circs, cents, boxes, kept = [], [], [], [], []
        rejected = 0
        for i, c in enumerate(contours):
            if not p.fill_holes and hierarchy is not None and hierarchy[0][i][3] >= 0:
                continue  # a hole: measured with its parent
            m = cv2.moments(c)
            area = m["m00"]
            if not p.fill_holes and hierarchy is not None:
                child = hierarchy[0][i][2]
                while child >= 0:
                    area -= cv2.contourArea(contours[child])
                    child = hierarchy[0][child][0]
            if area <= 0 and len(c) < 3:
                area = float(len(c))  # a 1-2 px speck
            per = cv2.arcLength(c, True)
            circ = min(1.0, 4.0 * math.pi * m["m00"] / (per * per)) if per > 0 else 0.0
            x, y, bw, bh = cv2.boundingRect(c)
            if (area < p.min_area or (p.max_area is not None and area > p.max_area) or circ < p.min_circularity
                    or (p.exclude_border and (x <= 0 or y <= 0 or x + bw >= w or y + bh >= h))):
                rejected += 1
                continue
            cx, cy = (m["m10"] / m["m00"], m["m01"] / m["m00"]) if m["m00"] > 0 else (x + bw / 2, y + bh / 2)
            areas.append(float(area))
            circs.append(float(circ))
            cents.append((float(cx), float(cy)))
            boxes.append((x, y, bw, bh))
            kept.append(c)
        # sort blobs top-to-bottom, left-to-right (stable reading order for reports)
        order = sorted(range(len(areas)), key=lambda j: (round(cents[j][1] / 8), cents[j][0]))
        areas = [areas[j] for j in order]
        circs = [circs[j] for j in order]
        cents = [cents[j] for j in order]
        boxes = [boxes[j] for j in order]
        kept = [kept[j] for j in order]
        n = len(areas)
        pitch = _nn_pitch(cents)
        meas = {
            "count": n,
            "total_area": float(sum(areas)),
            "mean_area": float(np.mean(areas)) if n else 0.0,
            "min_area": float(min(areas)) if n else 0.0,
            "max_area": float(max(areas)) if n else 0.0,
            "mean_circularity": float(np.mean(circs)) if n else 0.0,
            "min_circularity": float(min(circs)) if n else 0.0,
            "pitch": pitch,
            "rejected": rejected,
            # per-blob details (not limit targets; stored in reports as JSON)
            "areas": np.round(areas, 2).tolist(),
            "centroids": np.round(np.asarray(cents, np.float64).reshape(-1, 2), 3).tolist(),
            "bboxes": [list(b) for b in boxes],
            "circularities": np.round(circs, 4).tolist(),
        }
        if p.px_per_mm:
            s = p.px_per_mm
            meas.update({"total_area_mm2": meas["total_area"] / s ** 2, "mean_area_mm2": meas["mean_area"] / s ** 2,
                         "pitch_mm": pitch / s})
        overlays: list[Shape] = []
        for j in range(min(n, p.max_overlays)):
            pts = kept[j]
            if len(pts) > 24:  # a simplified outline (within 1 px) keeps reports small and drawing fast
                pts = cv2.approxPolyDP(pts, 1.0, True)
            overlays.append(Shape("polygon", pts.reshape(-1, 2).tolist(), status=OK))
            overlays.append(Shape("point", [cents[j]], label=str(j + 1), status=INFO))
        if n == 0:
            overlays.append(Shape("text", [(2.0, 12.0)], label="no blob", status=BAD))
        return ToolOutput(meas, overlays)


def _nn_pitch(cents: list[tuple[float, float]]) -> float:
    """Median distance from each centroid to its nearest other centroid (OpenCV's brute-force 2-NN)."""
    if len(cents) < 2:
        return 0.0
    pts = np.asarray(cents, dtype=np.float32)
    d, _ = cv2.batchDistance(pts, pts, cv2.CV_32F, normType=cv2.NORM_L2, K=2)  # column 0: the point itself
    return float(np.median(d[:, 1]))
