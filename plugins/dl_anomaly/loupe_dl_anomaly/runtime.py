"""Anomaly inference with ONNX Runtime (no torch): the model, the inspect tool, the runtime.

Scores. The graph gives a *raw* score (the maximum of the position-normalised
nearest-neighbour distance map). Everything user-facing is normalised by the
bundle's threshold: ``score = raw_score / threshold``, so **1.0 is the stored
threshold**, good parts score below 1, defective ones above. A recipe limit
``score: {max: 1.0}`` uses the trained threshold; ``score: {max: 1.0,
review_max: 1.3}`` adds a review band between 1.0 and 1.3.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from pydantic import Field

from host import Bundle, BundleError, EvalPlan, InspectTool, create_session, eval_batch, resolve_engine, read_bundle_meta, ModelRef, ModelRuntime, Params, Progress, LazyShapes, Shape, ToolOutput

from .data import discover, prepare, prepare_rgb, read_image, read_mask, to_rgb8


class AnomalyModel:
    """A loaded anomaly bundle: one ONNX Runtime session, created once."""

    def __init__(self, bundle: Bundle, threads: int = 2, engine: str | None = None):
        if bundle.task != "anomaly":
            raise BundleError(f"{bundle.path}: task is {bundle.task!r}, not 'anomaly'")
        meta = bundle.meta
        info = bundle.info or read_bundle_meta(meta, bundle.path / "bundle.json")  # checked by Bundle.load
        self.size = info.input_size
        self.threshold = float(info.threshold)
        model_file = bundle.file(info.model_file)
        try:
            self.pixel_low = float(meta.get("pixel_low", 0.0))
        except (TypeError, ValueError):
            raise BundleError(f"{bundle.path}/bundle.json: pixel_low: not a number") from None
        self.tile = info.tiling.tile if info.tiling else None
        self.overlap = float(info.tiling.overlap) if info.tiling else 0.0
        self.bundle = bundle
        self.session = create_session(model_file, threads, engine=resolve_engine(engine))
        self.input_name = self.session.get_inputs()[0].name

    def raw(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """(anomaly map float32, raw score). The map is at the model's input size (H, W), or for a tiled
        model at the image's own size (tiles stitched, the maximum where they overlap)."""
        if self.tile is not None:
            from .tiling import score_tiled

            amap, score, _ = score_tiled(self._run_rgb, to_rgb8(image), self.tile, self.overlap)
            return amap, score
        amap, score = self.session.run(None, {self.input_name: prepare(image, self.size)})
        return amap[0, 0], float(score[0])

    def _run_rgb(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        amap, score = self.session.run(None, {self.input_name: prepare_rgb(rgb, self.size)})
        return amap[0, 0], float(score[0])

    def predict(self, image: np.ndarray) -> dict[str, Any]:
        amap, raw = self.raw(image)
        score = raw / self.threshold
        return {"score": score, "raw_score": raw, "is_anomalous": bool(score > 1.0), "threshold": self.threshold,
                "anomaly_map": amap}

    @property
    def low(self) -> float:
        """The typical anomaly-map level of a good part (the bottom of the heatmap's colour scale)."""
        return min(self.pixel_low, 0.5 * self.threshold)

    def heatmap(self, amap: np.ndarray, full_scale: float = 1.5) -> np.ndarray:
        """Anomaly map -> float32 [0, 1]: 0 at the typical good level, ``1/full_scale`` at the threshold."""
        lo = self.low
        hi = self.threshold * full_scale
        return np.clip((amap - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def regions(amap: np.ndarray, threshold: float, image_shape: tuple[int, int], min_area: float = 0.0
            ) -> list[tuple[np.ndarray, float, float]]:
    """Connected regions of ``amap > threshold``: (contour in image pixels, area in image px, peak value)."""
    mask = (amap > threshold).astype(np.uint8)
    if not mask.any():
        return []
    sy, sx = image_shape[0] / amap.shape[0], image_shape[1] / amap.shape[1]
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in contours:
        area = max(cv2.contourArea(c), 1.0) * sx * sy
        if area < min_area:
            continue
        m = np.zeros_like(mask)
        cv2.drawContours(m, [c], -1, 1, -1)
        peak = float(amap[m > 0].max()) if m.any() else float(threshold)
        pts = c[:, 0, :].astype(np.float64) * (sx, sy)
        out.append((pts, float(area), peak))
    out.sort(key=lambda r: -r[2])
    return out


def peak_region(amap: np.ndarray, image_shape: tuple[int, int], low: float = 0.0
                ) -> tuple[np.ndarray, float, float]:
    """The region around the map's maximum: the connected pixels above 80 % of the way from ``low`` to the
    peak, as (contour in image pixels, area in image px, peak value). Shown when a frame is judged anomalous
    but no pixel of the (smoothed, or tile-blended) map exceeds the threshold, so that the verdict always
    points at a place."""
    peak = float(amap.max())
    py, px = np.unravel_index(int(np.argmax(amap)), amap.shape)
    level = low + 0.8 * (peak - low) if peak > low else peak
    mask = (amap >= level).astype(np.uint8)
    _, labels = cv2.connectedComponents(mask)
    comp = (labels == labels[py, px]).astype(np.uint8)
    sy, sx = image_shape[0] / amap.shape[0], image_shape[1] / amap.shape[1]
    contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    c = max(contours, key=cv2.contourArea)
    pts = c[:, 0, :].astype(np.float64)
    if len(pts) < 3:  # one or two pixels: a small square around them
        x0, y0 = pts.min(axis=0) - 0.5
        x1, y1 = pts.max(axis=0) + 0.5
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    pts = pts * (sx, sy)
    # at least ~2 % of the image's side, so that a single hot pixel is still visible
    centre = pts.mean(axis=0)
    half = 0.02 * max(image_shape)
    span = pts.max(axis=0) - pts.min(axis=0)
    if float(span.max()) < 2 * half:
        pts = centre + np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    return pts, float(max(cv2.contourArea(c), 1.0) * sx * sy), peak


def region_overlays(amap: np.ndarray, threshold: float, image_shape: tuple[int, int], low: float,
                    min_area: float = 0.0, max_regions: int = 10) -> tuple[list[Shape], list]:
    """Overlays for an anomaly map (``region_shapes``) and its regions above the threshold. Returns (shapes,
    regions)."""
    regs = regions(amap, threshold, image_shape, min_area)
    return region_shapes(amap, threshold, image_shape, low, regs, max_regions), regs


def region_shapes(amap: np.ndarray, threshold: float, image_shape: tuple[int, int], low: float, regs: list,
                  max_regions: int = 10) -> list[Shape]:
    """One polygon per region above the threshold (status ``verdict``: drawn in the step's verdict colour),
    labelled with its peak score; when there is none, the peak region (status ``alert``: drawn only when the
    step did not pass)."""
    shapes = [Shape("polygon", [(float(x), float(y)) for x, y in pts], label=f"{peak / threshold:.2f}",
                    status="verdict") for pts, _area, peak in regs[:max_regions]]
    if not regs and amap.size:
        pts, _area, peak = peak_region(amap, image_shape, low)
        shapes.append(Shape("polygon", [(float(x), float(y)) for x, y in pts],
                            label=f"peak {peak / threshold:.2f}", status="alert"))
    return shapes


# ------------------------------------------------------------------ the tool


class PatchCoreParams(Params):
    model: ModelRef = Field(description="the anomaly bundle (path relative to the recipe, and its sha256)")
    threads: int = Field(2, ge=1, le=64, description="ONNX Runtime intra-op threads")
    min_region_area: float = Field(0.0, ge=0, description="ignore anomalous regions smaller than this (pixels of "
                                                          "the tool's input image) in the overlays and counts")
    heatmap_scale: float = Field(1.5, gt=0, description="normalised score shown as full heat (the threshold is "
                                                        "at 1/heatmap_scale of the colour scale)")
    max_regions: int = Field(10, ge=0, le=1000, description="at most this many region contours in the overlays")


class PatchCoreTool(InspectTool):
    id = "anomaly.patchcore"
    title = "Anomaly detection (PatchCore)"
    description = ("scores an image against a model trained on good parts only; heatmap of where it differs; "
                   "score is normalised so that 1.0 is the model's threshold")
    Params = PatchCoreParams
    measurements = {
        "score": "anomaly score / the model's threshold (1.0 = threshold; above is anomalous)",
        "raw_score": "the model's raw score (position-normalised nearest-neighbour distance)",
        "is_anomalous": "true when score > 1.0",
        "n_regions": "connected regions where the anomaly map exceeds the threshold",
        "anomalous_area": "area of those regions, in pixels of the tool's input image",
        "max_region_area": "area of the largest region, in pixels",
    }
    # with no limits in the step, a part passes up to the model's stored threshold (score 1.0)
    default_limits = {"score": {"max": 1.0}}

    def __init__(self, params: PatchCoreParams, context=None):
        super().__init__(params, context)
        path = self.context.resolve(params.model.path)
        self.model = AnomalyModel(Bundle.load(path), threads=params.threads, engine=self.context.options.get("engine"))

    def inspect(self, image: np.ndarray) -> ToolOutput:
        p = self.params
        amap, raw = self.model.raw(image)
        thr = self.model.threshold
        score = raw / thr
        shape = image.shape[:2]
        regs = regions(amap, thr, shape, p.min_region_area)
        # the outlines (and a good part's peak region) only when a reporter or the GUI draws them
        overlays = LazyShapes(lambda: region_shapes(amap, thr, shape, self.model.low, regs, p.max_regions))
        areas = [r[1] for r in regs]
        meas = {"score": float(score), "raw_score": float(raw), "is_anomalous": bool(score > 1.0),
                "n_regions": len(regs), "anomalous_area": float(sum(areas)),
                "max_region_area": float(max(areas) if areas else 0.0)}
        return ToolOutput(meas, overlays, self.model.heatmap(amap, p.heatmap_scale))


# ---------------------------------------------------------------- the runtime


class AnomalyRuntime(ModelRuntime):
    task = "anomaly"
    description = "PatchCore-class anomaly bundles (ONNX Runtime): score, verdict, anomaly map"

    def __init__(self, threads: int | None = None):
        self._threads = threads  # None: ModelRuntime.threads reads LOUPE_ORT_THREADS

    def predictor(self, bundle: Bundle) -> Callable[[np.ndarray], dict[str, Any]]:
        return AnomalyModel(bundle, self.threads).predict

    # Evaluation, in three parts so that ``loupe eval --executor`` predicts on workers and computes the
    # metrics here with the same code: the plan (the test images), one prediction per image, the metrics.

    def eval_plan(self, bundle: Bundle, data: Path) -> EvalPlan:
        ds = discover(data, need_train=False, need_test=True)
        return EvalPlan([(s, ds.has_masks) for s in ds.test], {"has_masks": ds.has_masks})

    def eval_predictor(self, bundle: Bundle) -> Callable[[Any], dict[str, Any]]:
        model = AnomalyModel(bundle, self.threads)
        model.raw(np.zeros((*model.size, 3), np.uint8))  # warm-up
        return lambda item: _predict_one(model, item)[0]

    def eval_metrics(self, bundle: Bundle, data: Path, plan: EvalPlan, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return _metrics(bundle, plan, rows)[0]

    def evaluate(self, bundle: Bundle, data: Path, out: Path | None, progress: Progress) -> dict[str, Any]:
        model = AnomalyModel(bundle, self.threads)  # first: an engine that fails its parity check is the error
        plan = self.eval_plan(bundle, data)
        if out is not None:
            (out / "heatmaps").mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = []
        report_rows: list[dict[str, Any]] = []
        model.raw(np.zeros((*model.size, 3), np.uint8))  # warm-up
        for i, item in enumerate(plan.items):
            row, img, amap = _predict_one(model, item)
            rows.append(row)
            if out is not None and img is not None:
                report_rows.append(_eval_row(model, item[0], img, amap, row["raw"], out, data))
            progress.update("eval", i + 1, len(plan.items))
        result, sc, lb = _metrics(bundle, plan, rows)
        if eval_batch(1) != 1:
            progress.log(f"--batch {eval_batch(1)}: the anomaly graph has a fixed batch of 1; evaluated at batch 1")
        if out is not None:
            from .report import write_report

            result["report"] = str(write_report(out, result, report_rows, sc / result["threshold"], lb, bundle,
                                                data))
        return result


def _predict_one(model: AnomalyModel, item) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """One test image: (its row for the metrics, the image, the anomaly map). The row is small: the raw score,
    the label, the time; with pixel masks in the data also the map and the mask (bits) that pixel AUROC needs."""
    s, has_masks = item
    try:
        img = read_image(s.path)
    except ValueError as exc:
        return {"unreadable": str(exc)}, None, None
    t0 = time.perf_counter()
    amap, raw = model.raw(img)
    row: dict[str, Any] = {"raw": raw, "label": s.label, "kind": s.kind, "ms": (time.perf_counter() - t0) * 1e3}
    if has_masks:
        mask = read_mask(s.mask, amap.shape) if s.label else np.zeros(amap.shape, bool)
        row["map"] = amap
        row["mask"] = np.packbits(mask.ravel())
    return row, img, amap


def _threshold(bundle: Bundle) -> float:
    info = bundle.info or read_bundle_meta(bundle.meta, bundle.path / "bundle.json")
    return float(info.threshold)


def _metrics(bundle: Bundle, plan: EvalPlan, rows: list[dict[str, Any]]
             ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The evaluation's result from the rows, in the plan's order; also the scores and labels."""
    from .metrics import auroc, f1_at, pixel_auroc

    ok = [r for r in rows if "unreadable" not in r]
    failed = [r["unreadable"] for r in rows if "unreadable" in r]
    sc = np.array([r["raw"] for r in ok])
    lb = np.array([r["label"] for r in ok])
    kinds = [r["kind"] for r in ok]
    times = [r["ms"] for r in ok]
    thr = _threshold(bundle)
    f1 = f1_at(sc, lb, thr)
    result: dict[str, Any] = {
        "task": "anomaly", "batch": 1,
        "image_auroc": auroc(sc, lb),
        "threshold": thr,
        "f1": f1["f1"], "precision": f1["precision"], "recall": f1["recall"], "accuracy": f1["accuracy"],
        "confusion": {"tp": f1["tp"], "fp": f1["fp"], "fn": f1["fn"], "tn": f1["tn"]},
        "n_images": int(sc.size), "n_good": int((lb == 0).sum()), "n_defective": int((lb == 1).sum()),
        "ms_per_image": float(np.median(times)) if times else float("nan"),
        "threshold_method": bundle.meta.get("thresholds", {}).get("method", ""),
    }
    if plan.state.get("has_masks"):
        maps = [r["map"] for r in ok]
        masks = [np.unpackbits(r["mask"], count=r["map"].size).reshape(r["map"].shape).astype(bool) for r in ok]
        result["pixel_auroc"] = pixel_auroc(maps, masks)
    per_type = {}
    ka = np.array(kinds)
    for k in sorted(set(kinds) - {"good"}):
        sel = (ka == k) | (lb == 0)
        per_type[k] = auroc(sc[sel], lb[sel])
    if per_type:
        result["per_type_auroc"] = per_type
    if failed:
        result["unreadable"] = failed
    return result, sc, lb


def _eval_row(model: AnomalyModel, s, img: np.ndarray, amap: np.ndarray, raw: float, out: Path,
              data: Path) -> dict[str, Any]:
    """Score one test image for the evaluation report: its panel PNG and its scores.csv row."""
    from . import plots

    score = raw / model.threshold
    verdict = "fail" if score > 1.0 else "pass"
    shapes, _ = region_overlays(amap, model.threshold, img.shape[:2], model.low)
    gt = read_mask(s.mask, img.shape[:2]) if s.mask is not None else None
    try:
        rel = s.path.relative_to(data / "test")
    except ValueError:
        rel = Path(s.kind) / s.path.name
    name = re.sub(r"[^\w.-]", "_", f"{s.kind}_{s.path.stem}") + ".png"  # also for undecodable file names
    correct = (verdict == "fail") == bool(s.label)
    flag = "" if correct else ("missed defect" if s.label else "false reject")
    title = f"{rel.as_posix()}  score {score:.2f}  {verdict.upper()}" + (f": {flag.upper()}" if flag else "")
    cv2.imwrite(str(out / "heatmaps" / name),
                plots.panel(img, model.heatmap(amap), shapes, verdict, gt, title,
                            gt_note="good part" if not s.label else "no ground-truth mask"))
    return {"file": rel.as_posix(), "type": s.kind, "score": float(score), "verdict": verdict,
            "correct": correct, "defective": bool(s.label), "heatmap": f"heatmaps/{name}",
            "flag": flag}
