"""The ``classify.cnn`` inspect tool and the ``classify`` model runtime (ONNX Runtime, no torch)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from host import Bundle, EvalPlan, InspectTool, ModelRef, ModelRuntime, Params, Progress, Shape, ToolOutput


class ClassifyParams(Params):
    model: ModelRef = Field(description="the classification bundle: path (relative to the recipe) and the sha256 "
                                        "of its manifest.json")
    allowed: list[str] = Field(default_factory=list,
                               description="classes that pass (e.g. [good]); empty: every class passes")
    min_confidence: float = Field(0.0, ge=0.0, le=1.0,
                                  description="the verdict needs at least this softmax confidence")
    heatmap: bool = Field(True, description="compute the class activation map of the predicted class")
    threads: int = Field(2, ge=1, le=64, description="ONNX Runtime intra-op threads")

    @field_validator("allowed")
    @classmethod
    def _allowed_are_classes(cls, allowed: list[str], info: ValidationInfo) -> list[str]:
        """At recipe load, check ``allowed`` against the bundle's classes (when the bundle can be read)."""
        model = info.data.get("model")
        classes = model.classes((info.context or {}).get("base_dir")) if allowed and model is not None else None
        if classes is None:
            return allowed
        unknown = [c for c in allowed if c not in classes]
        if unknown:
            raise ValueError(f"{unknown} not among the model's classes {classes}")
        return allowed


class ClassifyTool(InspectTool):
    """Classifies the image (or ROI) with a trained bundle.

    The verdict is expressed through measurements, so the recipe's limits decide:
    ``ok`` is true when the class is in ``allowed`` and the confidence is at least
    ``min_confidence`` -- put ``ok: {equals: true}`` in the step's limits. Finer rules
    work too: ``class: {one_of: [good]}``, ``confidence: {min: 0.9, review_min: 0.6}``.
    """

    id = "classify.cnn"
    title = "CNN classifier"
    description = "class, confidence and a class-activation heatmap from a trained classification bundle"
    Params = ClassifyParams
    measurements = {
        "class": "predicted class name",
        "class_index": "index of the predicted class in the model's class list",
        "confidence": "softmax probability of the predicted class (0-1)",
        "margin": "confidence minus the second most likely class's probability",
        "second_class": "the second most likely class",
        "allowed": "true when the predicted class is in the allowed set",
        "ok": "true when allowed and confidence >= min_confidence (limit it with {equals: true})",
    }
    # with no limits in the step, the verdict follows `ok` (class allowed and confident enough)
    default_limits = {"ok": {"equals": True}}

    def __init__(self, params: ClassifyParams, context=None):
        super().__init__(params, context)
        from host import BundleError

        from .model import Classifier

        path = self.context.resolve(params.model.path)
        bundle = Bundle.load(path)
        if bundle.task != "classify":
            raise BundleError(f"{path}: a {bundle.task!r} bundle, but classify.cnn needs a 'classify' bundle")
        self.clf = Classifier(bundle, threads=params.threads, engine=self.context.options.get("engine"))
        self.allowed = set(params.allowed or self.clf.classes)
        self.min_conf = float(params.min_confidence)

    def inspect(self, image: np.ndarray) -> ToolOutput:
        p = self.clf.predict(image, heatmap=self.params.heatmap)
        order = np.argsort(p.probabilities)
        second = int(order[-2]) if len(order) > 1 else p.index
        allowed = p.label in self.allowed
        ok = allowed and p.confidence >= self.min_conf
        m = {"class": p.label, "class_index": p.index, "confidence": p.confidence,
             "margin": p.confidence - float(p.probabilities[second]), "second_class": self.clf.classes[second],
             "allowed": allowed, "ok": ok}
        label = f"{p.label} {p.confidence:.2f}"
        return ToolOutput(m, [Shape("text", [(4.0, 14.0)], label, status="pass" if ok else "fail")], p.heatmap)


class ClassifyRuntime(ModelRuntime):
    """Opens ``classify`` bundles for ``loupe eval`` / ``loupe bench``.

    ONNX Runtime uses 2 intra-op threads unless ``LOUPE_ORT_THREADS`` says otherwise.
    """

    task = "classify"
    description = "image classification bundles (ONNX Runtime): predictions, CAM heatmaps, evaluation"

    def predictor(self, bundle: Bundle) -> Callable[[np.ndarray], dict[str, Any]]:
        from .model import Classifier

        clf = Classifier(bundle, threads=self.threads)

        def predict(image: np.ndarray) -> dict[str, Any]:
            p = clf.predict(image, heatmap=False)
            return {"class": p.label, "index": p.index, "confidence": p.confidence,
                    "probabilities": dict(zip(clf.classes, map(float, p.probabilities)))}

        return predict

    def evaluate(self, bundle: Bundle, data: Path, out: Path | None, progress: Progress) -> dict[str, Any]:
        from .evaluate import evaluate

        return evaluate(bundle, data, out, progress, threads=self.threads)

    # ``loupe eval --executor``: the same plan, per-image rows and metrics as ``evaluate`` (see evaluate.py)

    def eval_plan(self, bundle: Bundle, data: Path) -> EvalPlan:
        from .evaluate import bundle_classes, plan

        return plan(bundle, data, bundle_classes(bundle))

    def eval_predictor(self, bundle: Bundle) -> Callable[[Any], dict[str, Any]]:
        from .evaluate import predict_one
        from .model import Classifier

        clf = Classifier(bundle, threads=self.threads)
        return lambda item: predict_one(clf, item)

    def eval_metrics(self, bundle: Bundle, data: Path, plan: EvalPlan, rows: list[dict[str, Any]]) -> dict[str, Any]:
        from .evaluate import bundle_classes, metrics

        return metrics(bundle, data, bundle_classes(bundle), plan, rows, self.threads)
