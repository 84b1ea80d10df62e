"""The ``detect.objects`` inspect tool and the ``detect`` model runtime (ONNX Runtime + numpy, no torch)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from host import Bundle, EvalPlan, InspectTool, ModelRef, ModelRuntime, Params, Progress, Shape, ToolOutput


def measure_name(cls: str) -> str:
    """``count_<class>`` with the class name reduced to letters, digits and underscores."""
    return "count_" + re.sub(r"[^0-9A-Za-z_]+", "_", cls).strip("_")


class Placement(BaseModel):
    cls: str = Field(alias="class", description="class expected in the region")
    region: list[float] = Field(description="[x, y, width, height] in image pixels; the part's centre must lie in it")

    @field_validator("region")
    @classmethod
    def _four(cls, v: list[float]) -> list[float]:
        if len(v) != 4 or v[2] <= 0 or v[3] <= 0:
            raise ValueError("region must be [x, y, width, height] with width and height > 0")
        return v


class DetectParams(Params):
    model: ModelRef = Field(description="the detection bundle: path (relative to the recipe) and the sha256 of "
                                        "its manifest.json")
    min_score: float | None = Field(None, ge=0.0, le=1.0, description="keep detections scoring at least this "
                                                                       "(default: the bundle's, chosen at training; with "
                                                                       "a verifier, on the combined score)")
    nms_iou: float | None = Field(None, gt=0.0, le=1.0, description="NMS IoU (default: the bundle's)")
    agnostic: bool | None = Field(None, description="NMS across classes: one part per place (default: the "
                                                    "bundle's, true); false lets parts of different classes overlap")
    expected: list[Placement] = Field(default_factory=list,
                                      description="optional layout: [{class: screw, region: [x, y, w, h]}, ...]; "
                                                  "each region must hold a part of its class, and parts of those "
                                                  "classes outside every region of their class are misplaced")
    threads: int = Field(2, ge=1, le=64, description="ONNX Runtime intra-op threads")
    verify: bool = Field(True, description="re-score the candidates with the bundle's verifier when it has one "
                                           "(false: the detector alone, at its own threshold; faster)")
    second_look: bool = Field(True, description="with a verifier whose bundle asks for it: candidates near the "
                                                "threshold, or whose class is in doubt, are scored again on their "
                                                "crop's quarter turns and mirror images and on their box moved a "
                                                "little (false: one look; faster on those frames)")

    @field_validator("expected")
    @classmethod
    def _known_classes(cls, expected: list[Placement], info: ValidationInfo) -> list[Placement]:
        model = info.data.get("model")
        classes = model.classes((info.context or {}).get("base_dir")) if expected and model is not None else None
        if classes is None:
            return expected
        unknown = sorted({e.cls for e in expected if e.cls not in classes})
        if unknown:
            raise ValueError(f"{unknown} not among the model's classes {classes}")
        return expected


def placement(expected: list[Placement], boxes: np.ndarray, labels: np.ndarray, classes: list[str]):
    """(missing region indices, misplaced detection indices) for an expected layout."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    inside = np.zeros((len(expected), len(labels)), bool)
    for k, e in enumerate(expected):
        x, y, w, h = e.region
        c = classes.index(e.cls)
        inside[k] = (labels == c) & (cx >= x) & (cx <= x + w) & (cy >= y) & (cy <= y + h)
    missing = [k for k in range(len(expected)) if not inside[k].any()]
    checked = {classes.index(e.cls) for e in expected}
    misplaced = [i for i in range(len(labels)) if int(labels[i]) in checked and not inside[:, i].any()]
    return missing, misplaced


class DetectTool(InspectTool):
    """Finds, classifies and counts parts with a trained detection bundle.

    Put limits on the counts: ``count: {equals: 6}``, ``count_screw: {equals: 4}``,
    ``min_score: {min: 0.5}``; with an ``expected`` layout, ``placement_ok: {equals: true}``.
    """

    id = "detect.objects"
    title = "Object detector"
    description = "boxes, classes and counts of parts from a trained detection bundle"
    Params = DetectParams
    measurements = {
        "count": "number of detected objects",
        "count_*": "number of detected objects of one class: count_<class> (e.g. count_screw), one per class of "
                   "the model",
        "min_score": "lowest confidence among the detections (1.0 when nothing was found)",
        "positions": "the detections, one row each: [class index, score, centre x, centre y, x1, y1, x2, y2] "
                     "(pixels; the class index counts from 0 in the bundle's classes)",
        "missing": "with an expected layout: regions without a part of their class (0 without a layout)",
        "misplaced": "with an expected layout: parts of a checked class outside every region of their class",
        "placement_ok": "nothing missing and nothing misplaced (true without an expected layout)",
    }

    def __init__(self, params: DetectParams, context=None):
        super().__init__(params, context)
        from host import BundleError

        from .model import Detector

        path = self.context.resolve(params.model.path)
        bundle = Bundle.load(path)
        if bundle.task != "detect":
            raise BundleError(f"{path}: a {bundle.task!r} bundle, but detect.objects needs a 'detect' bundle")
        self.det = Detector(bundle, threads=params.threads, engine=self.context.options.get("engine"),
                            verify=params.verify, second_look=params.second_look)
        self.names = [measure_name(c) for c in self.det.classes]

    def inspect(self, image: np.ndarray) -> ToolOutput:
        d = self.det.predict(image, self.params.min_score, self.params.nms_iou, self.params.agnostic)
        classes = self.det.classes
        counts = np.bincount(d.labels, minlength=len(classes))
        m: dict[str, Any] = {"count": int(len(d)), "min_score": float(d.scores.min()) if len(d) else 1.0}
        for name, n in zip(self.names, counts):
            m[name] = int(n)
        # a list measurement holds numbers (every store keeps it): one row per part
        m["positions"] = [[int(c), round(float(s), 4), round(float((b[0] + b[2]) / 2), 1),
                           round(float((b[1] + b[3]) / 2), 1)] + [round(float(v), 1) for v in b]
                          for b, s, c in zip(d.boxes, d.scores, d.labels)]
        shapes = []
        misplaced: set[int] = set()
        m.update({"missing": 0, "misplaced": 0, "placement_ok": True})
        if self.params.expected:
            missing, bad = placement(self.params.expected, d.boxes, d.labels, classes)
            misplaced = set(bad)
            m.update({"missing": len(missing), "misplaced": len(bad), "placement_ok": not missing and not bad})
            for k, e in enumerate(self.params.expected):
                x, y, w, h = e.region
                shapes.append(Shape("rect", [(x, y), (x + w, y + h)], f"{e.cls}?" if k in missing else "",
                                    status="fail" if k in missing else "info"))
        for i, (b, s, c) in enumerate(zip(d.boxes, d.scores, d.labels)):
            shapes.append(Shape("rect", [(float(b[0]), float(b[1])), (float(b[2]), float(b[3]))],
                                f"{classes[int(c)]} {s:.2f}", status="fail" if i in misplaced else "verdict"))
        return ToolOutput(m, shapes)


class DetectRuntime(ModelRuntime):
    """Opens ``detect`` bundles for ``loupe eval`` / ``loupe bench``.

    ONNX Runtime uses 2 intra-op threads unless ``LOUPE_ORT_THREADS`` says otherwise.
    """

    task = "detect"
    description = "object detection bundles (ONNX Runtime, numpy decoding): boxes, counts, evaluation (mAP)"

    def predictor(self, bundle: Bundle) -> Callable[[np.ndarray], dict[str, Any]]:
        from .model import Detector

        det = Detector(bundle, threads=self.threads)

        def predict(image: np.ndarray) -> dict[str, Any]:
            d = det.predict(image)
            return {"count": len(d), "boxes": d.boxes.tolist(), "scores": d.scores.tolist(),
                    "classes": [det.classes[int(c)] for c in d.labels]}

        return predict

    def evaluate(self, bundle: Bundle, data: Path, out: Path | None, progress: Progress) -> dict[str, Any]:
        from .evaluate import evaluate

        return evaluate(bundle, data, out, progress, threads=self.threads)

    # ``loupe eval --executor``: the same plan, per-image rows and metrics as ``evaluate`` (see evaluate.py)

    def eval_plan(self, bundle: Bundle, data: Path) -> EvalPlan:
        from .evaluate import bundle_info, plan

        return plan(bundle, data, bundle_info(bundle)[0])

    def eval_predictor(self, bundle: Bundle) -> Callable[[Any], dict[str, Any]]:
        from .evaluate import predict_one
        from .model import Detector

        det = Detector(bundle, threads=self.threads)
        return lambda item: predict_one(det, item, det.min_score)

    def eval_metrics(self, bundle: Bundle, data: Path, plan: EvalPlan, rows: list[dict[str, Any]]) -> dict[str, Any]:
        from .evaluate import bundle_info, metrics_of

        classes, thr = bundle_info(bundle)
        return metrics_of(bundle, data, classes, thr, plan, rows, self.threads)[0]
