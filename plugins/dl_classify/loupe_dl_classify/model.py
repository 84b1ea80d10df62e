"""A classification bundle opened for inference: one ONNX Runtime session, loaded once.

Bundle contract (written by ``loupe train classify``)::

    model.onnx        input "image" float32 [N, 3, H, W]; outputs "logits" [N, C]
                      and "features" [N, K, h, w] (the last feature map)
    cam_weights.npy   [C, K] float32: the linear head on the globally pooled features, or
                      [C, K, h, w] for a head that also pools cells of the map (grid pooling):
                      the head's weight for each feature at each map position
    cam_bias.npy      [C] float32
    bundle.json       task "classify", classes, input_size [H, W], normalisation, ...

Because the head is linear in the feature map, the class activation map of
class c is ``sum_k W[c, k] * F[k] + b[c]`` (W[c, k] a scalar, or a map for grid
pooling), and its mean over the map is exactly the logit of c: the heatmap
explains the score it shows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from host import Bundle, BundleError, create_session, read_bundle_meta, resolve_engine
from host import DEFAULT_NORMALISATION, use_opencv
from host import prepare_images as preprocess

use_opencv(cv2)  # the host's model-input preparation resizes with OpenCV


@dataclass
class Prediction:
    index: int
    label: str
    confidence: float
    probabilities: np.ndarray
    heatmap: np.ndarray | None = None


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Classifier:
    """Loads a ``classify`` bundle once; ``predict`` is the per-image path."""

    def __init__(self, bundle: Bundle, threads: int = 2, engine: str | None = None):
        meta = bundle.meta
        if bundle.task != "classify":
            raise BundleError(f"{bundle.path}: bundle task is {bundle.task!r}, not 'classify'")
        info = bundle.info or read_bundle_meta(meta, bundle.path / "bundle.json")  # checked by Bundle.load
        self.classes: list[str] = list(info.classes or [])
        self.size: tuple[int, int] = info.input_size
        self.norm = meta.get("normalisation") or DEFAULT_NORMALISATION
        self.bundle = bundle
        self.session = create_session(bundle.file(info.model_file), threads, engine=resolve_engine(engine),
                                      outputs=("logits", "features"))
        self.input_name = self.session.get_inputs()[0].name
        self.cam_w = np.load(bundle.file("cam_weights.npy"), allow_pickle=False).astype(np.float32)
        self.cam_b = np.load(bundle.file("cam_bias.npy"), allow_pickle=False).astype(np.float32)
        if self.cam_w.shape[0] != len(self.classes) or self.cam_w.ndim not in (2, 4):
            raise BundleError(f"{bundle.path}: cam_weights.npy has shape {self.cam_w.shape}; expected [C, K] or "
                              f"[C, K, h, w] with C = {len(self.classes)} classes")

    # ---------------------------------------------------------------- raw

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model input (NCHW float32) -> (logits [N, C], features [N, K, h, w])."""
        logits, feats = self.session.run(["logits", "features"], {self.input_name: x})
        return logits, feats

    def cam(self, features: np.ndarray, index: int) -> np.ndarray:
        """The class activation map of class ``index`` for one image's features [K, h, w], in [0, 1]."""
        k, h, w = features.shape
        wc = self.cam_w[index]
        if wc.ndim == 1:
            m = (wc @ features.reshape(k, h * w) + self.cam_b[index]).reshape(h, w)
        else:
            if wc.shape != features.shape:
                raise BundleError(f"cam_weights.npy is for a {wc.shape[1]}x{wc.shape[2]} feature map; the model "
                                  f"gave {h}x{w}")
            m = np.einsum("khw,khw->hw", wc, features) + self.cam_b[index]
        m = np.maximum(m - m.min(), 0.0) if m.max() <= 0 else np.maximum(m, 0.0)
        top = float(m.max())
        m = m / top if top > 0 else m
        return cv2.resize(m.astype(np.float32), (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR)

    # ------------------------------------------------------------ predict

    def predict(self, image: np.ndarray, heatmap: bool = True) -> Prediction:
        logits, feats = self.run(preprocess([image], self.size, self.norm))
        p = softmax(logits[0].astype(np.float64))
        i = int(np.argmax(p))
        return Prediction(i, self.classes[i], float(p[i]), p, self.cam(feats[0], i) if heatmap else None)

    def predict_batch(self, images: list[np.ndarray], batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [N, C] and features of many images (for evaluation and export checks)."""
        probs, feats = [], []
        for s in range(0, len(images), batch):
            lg, ft = self.run(preprocess(images[s:s + batch], self.size, self.norm))
            probs.append(softmax(lg.astype(np.float64)))
            feats.append(ft)
        return np.concatenate(probs), np.concatenate(feats)

    def describe(self) -> dict[str, Any]:
        return {"classes": self.classes, "input_size": list(self.size)}
