"""A detection bundle opened for inference: one ONNX Runtime session, loaded once; decoding and NMS in numpy.

Bundle contract (written by ``loupe train detect``)::

    model.onnx     input "image" float32 [N, 3, H, W] (RGB, stretched to input_size, normalised);
                   outputs at stride ``stride`` (h = H / stride, w = W / stride):
                   "heatmap" [N, C, h, w]  per-class centre scores in 0..1 (sigmoid applied)
                   "size"    [N, 2, h, w]  log of the box width and height in units of ``stride`` input pixels
                   "offset"  [N, 2, h, w]  sub-cell x and y offset of the centre, in cells
    bundle.json    task "detect", classes, input_size [H, W], stride, normalisation, decode {top_k,
                   min_score, nms_iou}

Decoding (CenterNet): a peak is a cell that equals the 3 x 3 maximum of its class map
(``cv2.dilate``, the max-pool of the paper) and scores at least ``min_score``; the
``top_k`` best peaks become boxes centred at ``(cell + offset) * stride`` of size
``exp(size) * stride``, mapped back to the image's own pixels; then NMS. By default the
NMS is class-agnostic (bundle ``decode.agnostic``, true unless a bundle says otherwise):
one part lies in one place, and two classes peaking at the same centre are one part
whose class is uncertain, not two parts (measured on bench/detect.py: the usual cause
of a count one too high).

A bundle may also hold a second stage, ``verifier.onnx`` (``verify.py``): the candidates down to its
``candidate_score`` are then re-scored and re-labelled by a classifier of their crops, and the operating
threshold is the combined score's (``verifier.min_score``); ``Detector(..., verify=False)`` runs the detector
alone at its own ``decode.min_score``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from host import Bundle, BundleError, create_session, resolve_engine
from host import DEFAULT_NORMALISATION, use_opencv
from host import prepare_images as preprocess

use_opencv(cv2)  # the host's model-input preparation resizes with OpenCV

OUTPUTS = ("heatmap", "size", "offset")


@dataclass
class Detections:
    boxes: np.ndarray      # [N, 4] float32 x1, y1, x2, y2 in image pixels
    scores: np.ndarray     # [N] float32
    labels: np.ndarray     # [N] int64 class indices

    def __len__(self) -> int:
        return len(self.scores)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [N, 4] with every box in ``b`` [M, 4] (x1, y1, x2, y2)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy per-class non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    if iou >= 1.0:
        return order
    suppressed = np.zeros(len(scores), bool)
    ious = iou_matrix(boxes[order], boxes[order])
    same = labels[order][:, None] == labels[order][None, :]
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(int(order[i]))
        suppressed |= (ious[i] > iou) & same[i]
    return np.asarray(keep, np.int64)


def decode(heat: np.ndarray, size: np.ndarray, offset: np.ndarray, stride: int, scale_xy: tuple[float, float],
           min_score: float = 0.3, top_k: int = 100, nms_iou: float = 0.5, agnostic: bool = True) -> Detections:
    """One image's raw outputs ([C, h, w], [2, h, w], [2, h, w]) -> detections in image pixels.

    ``scale_xy`` maps model-input pixels to image pixels (image width / input width, height / input height).
    ``agnostic``: the NMS suppresses overlapping boxes of any class (else only of the same class).
    """
    c, h, w = heat.shape
    hwc = np.ascontiguousarray(heat.transpose(1, 2, 0)).astype(np.float32)
    peak = cv2.dilate(hwc, np.ones((3, 3), np.uint8)).reshape(h, w, c)
    hwc = hwc.reshape(h, w, c)
    mask = (hwc >= peak) & (hwc >= min_score)
    ys, xs, cls = np.nonzero(mask)
    sc = hwc[ys, xs, cls]
    if len(sc) > top_k:
        best = np.argpartition(-sc, top_k)[:top_k]
        ys, xs, cls, sc = ys[best], xs[best], cls[best], sc[best]
    cx = (xs + offset[0, ys, xs]) * stride
    cy = (ys + offset[1, ys, xs]) * stride
    bw = np.exp(np.clip(size[0, ys, xs], -10, 10)) * stride
    bh = np.exp(np.clip(size[1, ys, xs], -10, 10)) * stride
    sx, sy = scale_xy
    boxes = np.stack([(cx - bw / 2) * sx, (cy - bh / 2) * sy, (cx + bw / 2) * sx, (cy + bh / 2) * sy], 1)
    boxes = boxes.astype(np.float32).reshape(-1, 4)
    labels = cls.astype(np.int64)
    keep = nms(boxes, sc, np.zeros_like(labels) if agnostic else labels, nms_iou) if len(sc) else \
        np.zeros(0, np.int64)
    return Detections(boxes[keep], sc[keep].astype(np.float32), labels[keep])


class Detector:
    """Loads a ``detect`` bundle once; ``predict`` is the per-image path."""

    def __init__(self, bundle: Bundle, threads: int = 2, engine: str | None = None, verify: bool = True,
                 second_look: bool = True):
        meta = bundle.meta
        if bundle.task != "detect":
            raise BundleError(f"{bundle.path}: bundle task is {bundle.task!r}, not 'detect'")
        try:
            self.classes: list[str] = [str(c) for c in meta["classes"]]
            size = meta["input_size"]
            self.size: tuple[int, int] = (int(size[0]), int(size[1]))
            self.stride = int(meta["stride"])
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise BundleError(f"{bundle.path / 'bundle.json'}: missing or malformed field {exc}") from None
        dec = meta.get("decode") or {}
        self.min_score = float(dec.get("min_score", 0.3))
        self.top_k = int(dec.get("top_k", 100))
        self.nms_iou = float(dec.get("nms_iou", 0.5))
        self.agnostic = bool(dec.get("agnostic", True))
        self.norm = meta.get("normalisation") or DEFAULT_NORMALISATION
        self.bundle = bundle
        self.session = create_session(bundle.model_file, threads, engine=resolve_engine(engine), outputs=OUTPUTS)
        self.input_name = self.session.get_inputs()[0].name
        # the optional second stage (``verify.py``): with it, the operating threshold is the combined score's
        self.verifier = None
        if verify and meta.get("verifier") is not None:
            from .verify import BoxVerifier

            self.verifier = BoxVerifier(bundle, len(self.classes), threads, engine, second_look)
            self.min_score = self.verifier.min_score

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Model input (NCHW float32) -> [heatmap, size, offset]."""
        return self.session.run(list(OUTPUTS), {self.input_name: x})

    def predict(self, image: np.ndarray, min_score: float | None = None, nms_iou: float | None = None,
                agnostic: bool | None = None, operating: float | None = None) -> Detections:
        """Detections of one image (as decoded: BGR) scoring at least ``min_score`` (default: the bundle's).
        With a verifier, the detector's candidates down to its ``candidate_score`` are re-scored and re-labelled
        first, and ``min_score`` applies to the combined score; candidates that cannot reach it whatever the
        verifier says (``candidate_floor``) are not verified. ``operating``: the threshold the results will be
        judged at when it is not ``min_score`` (``loupe eval`` keeps every detection down to a low score for AP
        and counts at the operating threshold): the verifier's second look is placed around it."""
        thr = self.min_score if min_score is None else min_score
        heat, size, off = self.run(preprocess([image], self.size, self.norm))
        h, w = image.shape[:2]
        d = decode(heat[0], size[0], off[0], self.stride, (w / self.size[1], h / self.size[0]),
                   thr if self.verifier is None else self.verifier.candidate_floor(thr), self.top_k,
                   self.nms_iou if nms_iou is None else nms_iou,
                   self.agnostic if agnostic is None else agnostic)
        if self.verifier is None:
            return d
        boxes, scores, labels = self.verifier.rescore(image, d.boxes, d.scores, d.labels,
                                                      thr if operating is None else operating)
        keep = scores >= thr
        order = np.argsort(-scores[keep], kind="stable")
        return Detections(boxes[keep][order], scores[keep][order], labels[keep][order])

    def describe(self) -> dict[str, Any]:
        out = {"classes": self.classes, "input_size": list(self.size), "stride": self.stride}
        if self.verifier is not None:
            out["verifier"] = {k: self.verifier.cfg[k] for k in ("crop", "margin", "candidate_score",
                                                                 "max_candidates", "combine", "min_score",
                                                                 "second_look")}
        return out
