"""A segmentation bundle opened for inference: one ONNX Runtime session, loaded once.

Bundle contract (written by ``loupe train segment``)::

    model.onnx      input "image" float32 [N, 3, H, W]; output "probs" float32 [N, K + 1, h, w]:
                    per-pixel softmax over background (channel 0) and the K defect classes, at the
                    input's size or coarser (h = H / 4 when bundle.json says output_stride 4)
    bundle.json     task "segment", classes (the K defect classes, class k = classes[k - 1]),
                    input_size [H, W], normalisation, threshold, ...

A pixel is defective when its defect probability ``1 - p_background`` is at least the
threshold; its class is then the most probable defect class. Probabilities come out of the
model at its own size and are stretched to the image's own size (bilinear, OpenCV), so masks,
areas and polygons are in the image's pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from host import Bundle, BundleError, create_session, resolve_engine
from host import DEFAULT_NORMALISATION, use_opencv
from host import prepare_images as preprocess

use_opencv(cv2)  # the host's model-input preparation resizes with OpenCV

#: class colours (BGR) for overlays: class k uses PALETTE[(k - 1) % len]
PALETTE_BGR = [(40, 40, 230), (230, 160, 30), (40, 200, 240), (200, 60, 200), (60, 200, 60), (240, 240, 60),
               (30, 120, 240), (160, 100, 240)]


def class_colour_hex(k: int) -> str:
    b, g, r = PALETTE_BGR[(k - 1) % len(PALETTE_BGR)]
    return f"#{r:02x}{g:02x}{b:02x}"


@dataclass
class Region:
    cls: int
    area: int
    bbox: tuple[int, int, int, int]       # x, y, w, h
    max_prob: float


@dataclass
class Segmentation:
    """One image's result, in the image's own pixels."""

    probs: np.ndarray                     # float32 [K + 1, H, W]
    labels: np.ndarray                    # uint8 [H, W]: 0 good, k class k
    classes: list[str]
    regions: list[Region] = field(default_factory=list)

    @property
    def defect_prob(self) -> np.ndarray:
        return 1.0 - self.probs[0]

    @property
    def score(self) -> float:
        """The image's defect score: the largest defect probability of any pixel."""
        return float(self.defect_prob.max()) if self.probs.size else 0.0


def label_map(probs: np.ndarray, threshold: float) -> np.ndarray:
    """[K + 1, H, W] probabilities -> uint8 labels: defective where 1 - p_bg >= threshold, class = best defect
    (the first of equals, as ``argmax``). Whole-plane comparisons, a pass per class: on the per-frame path."""
    if probs.shape[0] == 2:
        return (probs[1] >= threshold).astype(np.uint8) if threshold > 0 else np.ones(probs.shape[1:], np.uint8)
    labels = np.ones(probs.shape[1:], np.uint8)
    top = probs[1].copy()
    mask = np.empty(probs.shape[1:], bool)
    for k in range(2, probs.shape[0]):
        np.greater(probs[k], top, out=mask)
        np.copyto(labels, np.uint8(k), where=mask)
        np.maximum(top, probs[k], out=top)
    np.subtract(np.float32(1.0), probs[0], out=top)
    np.less(top, threshold, out=mask)
    np.copyto(labels, np.uint8(0), where=mask)
    return labels


def find_regions(labels: np.ndarray, probs: np.ndarray, n_classes: int, min_area: int) -> tuple[np.ndarray,
                                                                                                list[Region]]:
    """Connected regions per class (8-connected); regions under ``min_area`` pixels are removed from ``labels``."""
    regions: list[Region] = []
    out = labels
    rows, cols = labels.shape
    # 16-bit labels (half the time of 32-bit) whenever the most 8-connected regions an image can hold fit
    ltype = cv2.CV_16U if ((rows + 1) // 2) * ((cols + 1) // 2) < 65535 else cv2.CV_32S
    for k in range(1, n_classes + 1):
        m = (labels == k)
        if not m.any():
            continue
        n, cc, stats, _ = cv2.connectedComponentsWithStats(m.view(np.uint8), connectivity=8, ltype=ltype)
        pk = probs[k]
        for i in range(1, n):
            x, y, w, h, a = (int(v) for v in stats[i])
            if a < min_area:
                if out is labels:
                    out = labels.copy()
                out[y:y + h, x:x + w][cc[y:y + h, x:x + w] == i] = 0
                continue
            sub = cc[y:y + h, x:x + w] == i
            regions.append(Region(k, a, (x, y, w, h), float(pk[y:y + h, x:x + w][sub].max())))
    return out, regions


class Segmenter:
    """Loads a ``segment`` bundle once; ``segment`` is the per-image path."""

    def __init__(self, bundle: Bundle, threads: int = 2, engine: str | None = None):
        meta = bundle.meta
        if bundle.task != "segment":
            raise BundleError(f"{bundle.path}: bundle task is {bundle.task!r}, not 'segment'")
        try:
            self.classes: list[str] = [str(c) for c in meta["classes"]]
            size = meta["input_size"]
            self.size: tuple[int, int] = (int(size[0]), int(size[1]))
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise BundleError(f"{bundle.path / 'bundle.json'}: missing or malformed field {exc}") from None
        self.norm = meta.get("normalisation") or DEFAULT_NORMALISATION
        self.threshold = float(meta.get("threshold", 0.5))
        self.bundle = bundle
        self.session = create_session(bundle.model_file, threads, engine=resolve_engine(engine),
                                      outputs=("probs",))
        self.input_name = self.session.get_inputs()[0].name

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Model input (NCHW float32) -> probabilities [N, K + 1, H, W] at the model's size."""
        return self.session.run(["probs"], {self.input_name: x})[0]

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """[K + 1, H, W] float32 probabilities at the image's own size."""
        p = self.run(preprocess([image], self.size, self.norm))[0]
        h, w = image.shape[:2]
        if (h, w) == p.shape[1:]:
            return p
        out = np.empty((p.shape[0], h, w), np.float32)
        for k in range(p.shape[0]):   # plane by plane: no HWC transposes on the per-frame path
            cv2.resize(p[k], (w, h), dst=out[k], interpolation=cv2.INTER_LINEAR)
        return out

    def segment(self, image: np.ndarray, threshold: float | None = None, min_area: int = 0) -> Segmentation:
        probs = self.probabilities(image)
        labels = label_map(probs, self.threshold if threshold is None else threshold)
        labels, regions = find_regions(labels, probs, self.n_classes, min_area)
        return Segmentation(probs, labels, self.classes, regions)

    def describe(self) -> dict[str, Any]:
        return {"classes": self.classes, "input_size": list(self.size), "threshold": self.threshold}


def measure(seg: Segmentation) -> dict[str, Any]:
    """Measurements of one segmentation: totals, and per class ``<name>.area`` / ``.max_area`` / ``.count`` /
    ``.max_prob``."""
    m: dict[str, Any] = {}
    total = 0
    for k, name in enumerate(seg.classes, 1):
        rs = [r for r in seg.regions if r.cls == k]
        area = sum(r.area for r in rs)
        total += area
        m[f"{name}.area"] = area
        m[f"{name}.max_area"] = max((r.area for r in rs), default=0)
        m[f"{name}.count"] = len(rs)
        m[f"{name}.max_prob"] = round(float(seg.probs[k].max()), 6)
    m["defect_area"] = total
    m["max_region_area"] = max((r.area for r in seg.regions), default=0)
    m["region_count"] = len(seg.regions)
    m["defect_score"] = round(seg.score, 6)
    m["ok"] = not seg.regions
    return m


def region_polygons(seg: Segmentation, max_points: int = 200) -> list[tuple[int, np.ndarray]]:
    """(class, polygon [n, 2] in pixel coordinates) for the outer contour of every region."""
    out = []
    for k in range(1, len(seg.classes) + 1):
        m = (seg.labels == k).astype(np.uint8)
        if not m.any():
            continue
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for c in contours:
            c = c.reshape(-1, 2)
            if len(c) > max_points:
                eps = 0.5
                while len(c) > max_points:
                    c = cv2.approxPolyDP(c.reshape(-1, 1, 2), eps, True).reshape(-1, 2)
                    eps *= 1.6
            out.append((k, c.astype(np.float32)))
    return out
