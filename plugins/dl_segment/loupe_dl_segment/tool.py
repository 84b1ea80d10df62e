"""The ``segment.defects`` inspect tool and the ``segment`` model runtime (ONNX Runtime, no torch)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import Field

from host import Bundle, EvalPlan, InspectTool, LazyShapes, ModelRef, ModelRuntime, Params, Progress, Shape, ToolOutput


class SegmentParams(Params):
    model: ModelRef = Field(description="the segmentation bundle: path (relative to the recipe) and the sha256 of "
                                        "its manifest.json")
    threshold: float | None = Field(None, ge=0.0, le=1.0,
                                    description="a pixel is defective when 1 - p(background) reaches this; "
                                                "default: the bundle's threshold (0.5)")
    min_area: int = Field(0, ge=0, description="ignore regions smaller than this many pixels")
    heatmap: bool = Field(True, description="return the defect-probability heatmap")
    overlays: bool = Field(True, description="outline every region as a polygon coloured by class")
    threads: int = Field(2, ge=1, le=64, description="ONNX Runtime intra-op threads")


class SegmentTool(InspectTool):
    """Segments defects with a trained bundle and measures them per class.

    Per defect class ``<name>`` (from the bundle's classes.txt): ``<name>.area`` (pixels),
    ``<name>.max_area`` (largest region), ``<name>.count`` (regions), ``<name>.max_prob``
    (largest probability of the class anywhere). Totals: ``defect_area``,
    ``max_region_area``, ``region_count``, ``defect_score`` and ``ok`` (no region).
    Limits work on each, e.g. ``scratch.max_area: {max: 40}`` accepts small scratches,
    ``stain.count: {max: 0}`` rejects any stain. Without limits the step fails on any region.
    """

    id = "segment.defects"
    title = "Defect segmentation"
    description = "per-class defect masks, areas, region counts and probabilities from a segmentation bundle"
    Params = SegmentParams
    measurements = {
        "*.area": "defect pixels of class * (a class name of the bundle)",
        "*.max_area": "pixels of the largest region of class *",
        "*.count": "number of regions of class *",
        "*.max_prob": "largest probability of class * in the image (0-1)",
        "defect_area": "defect pixels of all classes",
        "max_region_area": "pixels of the largest region of any class",
        "region_count": "number of defect regions of any class",
        "defect_score": "largest defect probability (1 - p(background)) in the image (0-1)",
        "ok": "true when no defect region was found (limit it with {equals: true})",
    }
    default_limits = {"ok": {"equals": True}}

    def __init__(self, params: SegmentParams, context=None):
        super().__init__(params, context)
        from host import BundleError

        from .model import Segmenter

        path = self.context.resolve(params.model.path)
        bundle = Bundle.load(path)
        if bundle.task != "segment":
            raise BundleError(f"{path}: a {bundle.task!r} bundle, but segment.defects needs a 'segment' bundle")
        self.seg = Segmenter(bundle, threads=params.threads, engine=self.context.options.get("engine"))

    def inspect(self, image: np.ndarray) -> ToolOutput:
        from .model import class_colour_hex, measure, region_polygons

        s = self.seg.segment(image, self.params.threshold, self.params.min_area)
        m = measure(s)
        overlays: Any = []
        if self.params.overlays and s.regions:
            def make(s=s):
                return [Shape("polygon", [(float(x), float(y)) for x, y in poly], s.classes[k - 1], status="fail",
                              color=class_colour_hex(k)) for k, poly in region_polygons(s)]
            overlays = LazyShapes(make)
        return ToolOutput(m, overlays, s.defect_prob if self.params.heatmap else None)


class SegmentRuntime(ModelRuntime):
    """Opens ``segment`` bundles for ``loupe eval`` / ``loupe bench``.

    ONNX Runtime uses 2 intra-op threads unless ``LOUPE_ORT_THREADS`` says otherwise.
    """

    task = "segment"
    description = "defect segmentation bundles (ONNX Runtime): per-class masks, regions, evaluation"

    def predictor(self, bundle: Bundle) -> Callable[[np.ndarray], dict[str, Any]]:
        from .model import Segmenter, measure

        seg = Segmenter(bundle, threads=self.threads)

        def predict(image: np.ndarray) -> dict[str, Any]:
            return measure(seg.segment(image))

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
        from .model import Segmenter

        seg = Segmenter(bundle, threads=self.threads)
        return lambda item: predict_one(seg, item)

    def eval_metrics(self, bundle: Bundle, data: Path, plan: EvalPlan, rows: list[dict[str, Any]]) -> dict[str, Any]:
        from .evaluate import bundle_classes, metrics_of

        return metrics_of(bundle, data, bundle_classes(bundle), plan, rows, self.threads)[0]
