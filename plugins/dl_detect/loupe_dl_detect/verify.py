"""The optional second stage of a detection bundle: a classifier of each candidate's crop that re-scores and
re-labels the detector's candidates (ONNX Runtime + numpy + OpenCV, no torch).

Bundle contract (written by ``loupe train detect --verify``; ``verifier`` in ``bundle.json``)::

    verifier.onnx  input "crops" float32 [N, 3, S, S]: RGB pixels 0..255 (the normalisation is in the graph);
                   output "probs" [N, K + 1]: softmax over (background, class 1 .. class K)
    verifier       {file, crop S, margin, min_box_px, candidate_score, max_candidates, combine, min_score, ...}

Per frame: the detector's candidates down to ``candidate_score`` (its own decoding and NMS), at most
``max_candidates`` of them (best detector score first), are cropped (``crop_boxes``) and classified in one
batched call; each candidate's score becomes sqrt(s * p[c]) with c the verifier's best part class, which also
becomes its label (``gmean_relabel``); the bundle's ``min_score`` applies to that combined score.

Optional ``verifier.second_look`` ``{looks: 8, band: [lo, hi], doubt: r, shift: d}``: a candidate whose combined
score lies within [lo, hi] x the operating threshold (and whose detector score could reach it) is classified again on
the 8 quarter turns and mirror images of its crop (the verifier trained on all of them), and its probabilities become
the mean over those looks. With ``doubt`` (optional, 0 < r <= 1) a candidate above the band gets them too when its
second most probable part class has at least r x the probability of the first: its count is sure, its class is not.
With ``shift`` (optional, 0 < d <= 0.5) the mean also takes in crops of the box moved by d x its width or height
left, right, up and down, each as it is and mirrored (8 more looks; the verifier trains on jittered boxes).
Only the few candidates in doubt pay for it; bundles without the field get one look.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from host import Bundle, BundleError, create_session, resolve_engine

#: the value outside the image in a crop (mid grey)
GREY = 127
OUTPUT = "probs"
#: a second look: the crop's quarter turns and mirror images (``second_look_meta``)
LOOKS = 8
#: how a candidate's detector score and the verifier's probabilities combine (the one the trainer writes)
COMBINE = ("gmean_relabel",)


def crop_matrix(box, side: int, margin: float, min_px: float = 8.0) -> np.ndarray:
    """The 2 x 3 affine map (image pixels -> crop pixels) of one box's crop: the square of ``margin`` x the box's
    longer side (at least ``min_px``) centred on the box's centre, scaled to ``side`` x ``side`` pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    k = side / max(margin * max(x2 - x1, y2 - y1), min_px)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([[k, 0.0, side / 2 - cx * k], [0.0, k, side / 2 - cy * k]], np.float64)


def crop_boxes(image: np.ndarray, boxes: np.ndarray, side: int, margin: float, min_px: float = 8.0,
               out: np.ndarray | None = None) -> np.ndarray:
    """Square crops [N, side, side, 3] (uint8, the image's channel order) of ``image`` around each box
    (``crop_matrix``; bilinear, grey outside the image). ``out``: a buffer of at least N crops to fill."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if out is None:
        out = np.empty((len(boxes), side, side, 3), np.uint8)
    for i, b in enumerate(boxes):
        cv2.warpAffine(image, crop_matrix(b, side, margin, min_px), (side, side), dst=out[i],
                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(GREY, GREY, GREY))
    return out[:len(boxes)]


def top_candidates(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, n: int):
    """(boxes, scores, labels) of the ``n`` best-scoring candidates, best first (the verifier's cap; the trainer
    applies the same one to its training and held-out candidates)."""
    order = np.argsort(-scores, kind="stable")[:n]
    return boxes[order], scores[order], labels[order]


def as_bgr(image: np.ndarray) -> np.ndarray:
    """A frame as 3-channel BGR (grey and BGRA frames converted; a BGR frame as it is)."""
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def relabel(scores: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``gmean_relabel``: (sqrt(s * p[c]), c) with c the verifier's most probable part class (not background)."""
    c = probs[:, 1:].argmax(1)
    return np.sqrt(scores * probs[np.arange(len(c)), c + 1]).astype(np.float32), c.astype(np.int64)


def verifier_meta(bundle: Bundle, n_classes: int) -> dict[str, Any] | None:
    """The bundle's ``verifier`` settings checked, or None when it has no verifier; ``BundleError`` naming the
    file and the field otherwise."""
    v = bundle.meta.get("verifier")
    if v is None:
        return None
    where = bundle.path / "bundle.json"
    if not isinstance(v, dict):
        raise BundleError(f"{where}: field 'verifier' must be an object")
    try:
        out = {"file": str(v["file"]), "crop": int(v["crop"]), "margin": float(v["margin"]),
               "min_box_px": float(v.get("min_box_px", 8.0)), "candidate_score": float(v["candidate_score"]),
               "max_candidates": int(v["max_candidates"]), "combine": str(v["combine"]),
               "min_score": float(v["min_score"])}
    except KeyError as exc:
        raise BundleError(f"{where}: field 'verifier.{exc.args[0]}' is missing") from None
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{where}: a field of 'verifier' is malformed: {exc}") from None
    checks = {"crop": 8 <= out["crop"] <= 512, "margin": 0 < out["margin"] <= 10,
              "candidate_score": 0 <= out["candidate_score"] <= 1, "max_candidates": 1 <= out["max_candidates"] <= 1024,
              "combine": out["combine"] in COMBINE, "min_score": 0 <= out["min_score"] <= 1,
              "min_box_px": out["min_box_px"] > 0}
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise BundleError(f"{where}: field 'verifier.{bad[0]}' has a value out of range: {v.get(bad[0])!r}")
    out["second_look"] = second_look_meta(v.get("second_look"), where)
    labels = v.get("labels")
    if labels is not None and (not isinstance(labels, list) or len(labels) != n_classes + 1):
        raise BundleError(f"{where}: field 'verifier.labels' must list background and the {n_classes} classes")
    if out["file"] not in bundle.files:
        raise BundleError(f"{where}: field 'verifier.file' names {out['file']!r}, which is not in the manifest")
    return out


def second_look_meta(look: Any, where) -> dict[str, Any] | None:
    """``verifier.second_look`` checked: None (one look), or {looks: 8, band: [lo, hi], doubt: r or None, shift: d or
    None} with 0 <= lo <= 1 <= hi, 0 < r <= 1 and 0 < d <= 0.5."""
    if look is None:
        return None
    try:
        looks, (lo, hi) = int(look["looks"]), (float(x) for x in look["band"])
        doubt, shift = (None if look.get(k) is None else float(look[k]) for k in ("doubt", "shift"))
    except (AttributeError, KeyError, TypeError, ValueError):
        raise BundleError(f"{where}: field 'verifier.second_look' must be {{looks: 8, band: [lo, hi]}} (and "
                          f"optionally doubt: r, shift: d), not {look!r}") from None
    if (looks not in (1, LOOKS) or not 0 <= lo <= 1 <= hi or not (doubt is None or 0 < doubt <= 1)
            or not (shift is None or 0 < shift <= 0.5)):
        raise BundleError(f"{where}: field 'verifier.second_look' has a value out of range: {look!r} (looks: 1 "
                          f"or {LOOKS}; band: 0 <= lo <= 1 <= hi; doubt: 0 < r <= 1; shift: 0 < d <= 0.5)")
    return {"looks": looks, "band": [lo, hi], "doubt": doubt, "shift": shift}


def shifted_boxes(boxes: np.ndarray, d: float) -> np.ndarray:
    """Each box [N, 4] moved by d x its width right and left, then by d x its height down and up: [4 N, 4], move by
    move."""
    boxes = np.asarray(boxes, np.float32)
    wh = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, 1)
    moves = np.array([[d, 0, d, 0], [-d, 0, -d, 0], [0, d, 0, d], [0, -d, 0, -d]], np.float32)
    return np.concatenate([boxes + wh * m for m in moves])


def dihedral_looks(x: np.ndarray) -> np.ndarray:
    """The 7 other quarter turns and mirror images of crops [N, 3, S, S] (square), look by look: [7 N, 3, S, S]."""
    turns = [np.rot90(x, k, axes=(2, 3)) for k in range(4)]
    return np.ascontiguousarray(np.concatenate(turns[1:] + [t[..., ::-1] for t in turns]))


class BoxVerifier:
    """The verifier graph of a bundle, opened once; ``rescore`` re-scores one frame's candidates in one batched
    ONNX Runtime call (and a second for the few near the threshold, ``look_again``). Buffers for ``max_candidates``
    crops are allocated here, not per frame."""

    def __init__(self, bundle: Bundle, n_classes: int, threads: int = 2, engine: str | None = None,
                 second_look: bool = True):
        cfg = verifier_meta(bundle, n_classes)
        if cfg is None:
            raise BundleError(f"{bundle.path / 'bundle.json'}: the bundle has no verifier")
        self.cfg = cfg
        self.side, self.margin, self.min_px = cfg["crop"], cfg["margin"], cfg["min_box_px"]
        self.candidate_score = cfg["candidate_score"]
        self.max_candidates = cfg["max_candidates"]
        self.min_score = cfg["min_score"]
        look = cfg["second_look"]
        self.second_look = look if second_look and look and look["looks"] > 1 else None
        # the graph's bytes, not its path: the bundle's stored engine parity set belongs to model.onnx
        self.session = create_session(bundle.file(cfg["file"]).read_bytes(), threads, engine=resolve_engine(engine),
                                      outputs=(OUTPUT,))
        self.input_name = self.session.get_inputs()[0].name
        shape = self.session.get_outputs()[0].shape
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != n_classes + 1):
            raise BundleError(f"{bundle.path / cfg['file']}: output {OUTPUT!r} has shape {shape}; expected "
                              f"[N, {n_classes + 1}] (background and {n_classes} classes)")
        n, s = self.max_candidates, self.side
        self._crops = np.empty((n, s, s, 3), np.uint8)
        self._x = np.empty((n, 3, s, s), np.float32)

    def _input(self, image_bgr: np.ndarray, boxes: np.ndarray, crops: np.ndarray | None = None,
               x: np.ndarray | None = None) -> np.ndarray:
        """The graph's input [N, 3, S, S] (RGB, float) of the boxes' crops (into the given buffers if any)."""
        crops = crop_boxes(as_bgr(image_bgr), boxes, self.side, self.margin, self.min_px, out=crops)
        x = np.empty((len(crops), 3, self.side, self.side), np.float32) if x is None else x[:len(crops)]
        np.copyto(x, crops[:, :, :, ::-1].transpose(0, 3, 1, 2))    # BGR HWC -> RGB CHW, float
        return x

    def probabilities(self, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """[N, K + 1] probabilities of at most ``max_candidates`` boxes (in image pixels) of a BGR image."""
        n = len(boxes)
        if n == 0:
            return np.zeros((0, 1), np.float32)
        if n > self.max_candidates:
            raise ValueError(f"{n} boxes; at most {self.max_candidates} per call")
        return self.session.run([OUTPUT], {self.input_name: self._input(image_bgr, boxes, self._crops, self._x)})[0]

    def look_again(self, probs: np.ndarray, near: np.ndarray, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """``probs`` with the rows ``near`` (indices into the last ``probabilities`` call's boxes) replaced by the
        mean over the 8 quarter turns and mirror images of their crops, and with the bundle's ``shift`` over the
        crops of their moved boxes (``shifted_boxes`` of ``boxes[near]`` in ``image_bgr``), each as it is and
        mirrored (one batched call)."""
        if not len(near):
            return probs
        x = [dihedral_looks(self._x[near])]
        shift = self.second_look["shift"]
        if shift:
            moved = self._input(image_bgr, shifted_boxes(boxes[near], shift))
            x += [moved, moved[..., ::-1]]
        more = self.session.run([OUTPUT], {self.input_name: np.ascontiguousarray(np.concatenate(x))})[0]
        probs = probs.copy()
        probs[near] = (probs[near] + more.reshape(-1, len(near), more.shape[-1]).sum(0)) / (1 + len(more) // len(near))
        return probs

    def candidate_floor(self, min_score: float) -> float:
        """The lowest detector score worth verifying when the combined score must reach ``min_score``: the
        combined score sqrt(s * p) is at most sqrt(s), so a candidate under ``min_score ** 2`` can never pass,
        whatever the verifier says (never below the bundle's ``candidate_score``)."""
        return max(self.candidate_score, float(min_score) ** 2)

    def rescore(self, image_bgr: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                around: float | None = None):
        """(boxes, combined scores, labels) of the best ``max_candidates`` candidates, best detector score first.
        ``around``: the operating threshold the bundle's second look (if any) is placed around (default: the
        bundle's ``min_score``)."""
        boxes, scores, labels = top_candidates(boxes, scores, labels, self.max_candidates)
        if not len(scores):
            return boxes, scores, labels
        probs = self.probabilities(image_bgr, boxes)
        if self.second_look is not None:
            thr = self.min_score if around is None else float(around)
            lo, hi = self.second_look["band"]
            s, _c = relabel(scores, probs)
            near = s <= hi * thr
            if self.second_look["doubt"] is not None and probs.shape[1] > 2:
                parts = np.sort(probs[:, 1:], 1)    # column 0: the background
                near |= parts[:, -2] >= self.second_look["doubt"] * parts[:, -1]
            probs = self.look_again(probs, np.flatnonzero(near & (s >= lo * thr)
                                                           & (scores >= self.candidate_floor(thr))),
                                    image_bgr, boxes)
        s, c = relabel(scores, probs)
        return boxes, s, c
