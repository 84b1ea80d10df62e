"""ONNX export of a trained detector, with a parity check against torch, into a bundle."""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from host import DEFAULT_NORMALISATION, PARITY_IMAGES, Bundle, BundleError, create_session, write_bundle
from host import prepare_images as preprocess
from loupe_dl_detect.model import OUTPUTS, decode

from .net import DetNet, ExportGraph, to_input

OPSET = 17
#: parity tolerances: float rounding only, and the decoded boxes must be the same
HEAT_ATOL = 2e-3
REG_ATOL = 5e-3
TOP_K = 100
NMS_IOU = 0.5


def export_onnx(net: DetNet, size: tuple[int, int], path: Path) -> None:
    net.eval()
    dummy = torch.zeros(1, 3, size[0], size[1])
    with warnings.catch_warnings():  # the TorchScript exporter's notes on constant folding and tracing
        warnings.simplefilter("ignore")
        torch.onnx.export(ExportGraph(net).eval(), (dummy,), str(path), input_names=["image"],
                          output_names=list(OUTPUTS), dynamic_axes={n: {0: "n"} for n in ("image", *OUTPUTS)},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    net.eval()
    from ..common import fold_pads_into_convs

    fold_pads_into_convs(path)


def parity_check(net: DetNet, onnx_path: Path, raw_rgb: list[np.ndarray], resized_rgb: np.ndarray,
                 size: tuple[int, int], stride: int, min_score: float, threads: int = 2) -> dict[str, Any]:
    """torch on the trainer's inputs vs ONNX Runtime on the runtime's own preprocessing of the images;
    raw outputs within float rounding and the same decoded detections. Raises ``BundleError`` otherwise."""
    net.eval()
    with torch.no_grad():
        t = [a.numpy() for a in net.decoded(to_input(resized_rgb))]
    sess = create_session(onnx_path, threads)
    x = preprocess([np.ascontiguousarray(r[:, :, ::-1]) for r in raw_rgb], size, DEFAULT_NORMALISATION)
    r = sess.run(list(OUTPUTS), {"image": x})
    diffs = {n: float(np.abs(a - b).max()) for n, a, b in zip(OUTPUTS, t, r)}
    same = 0
    for k in range(len(raw_rgb)):
        a = decode(t[0][k], t[1][k], t[2][k], stride, (1.0, 1.0), min_score, TOP_K, NMS_IOU)
        b = decode(r[0][k], r[1][k], r[2][k], stride, (1.0, 1.0), min_score, TOP_K, NMS_IOU)
        ok = len(a) == len(b) and np.array_equal(np.sort(a.labels), np.sort(b.labels))
        if ok and len(a):
            ok = bool(np.abs(np.sort(a.boxes, 0) - np.sort(b.boxes, 0)).max() <= 1.0)
        same += int(ok)
    report = {"images": len(raw_rgb), **{f"max_abs_{n}_diff": v for n, v in diffs.items()},
              "same_detections": same / max(1, len(raw_rgb))}
    # a peak right at the score threshold may flip on rounding: allow one image in eight to differ
    if diffs["heatmap"] > HEAT_ATOL or diffs["size"] > REG_ATOL or diffs["offset"] > REG_ATOL or \
            report["same_detections"] < 0.875:
        raise BundleError(f"export parity check failed: ONNX Runtime and torch disagree on {len(raw_rgb)} training "
                          f"images (max differences {diffs}; same detections on {report['same_detections']:.0%}); "
                          f"the bundle was not written")
    return report


def write_detect_bundle(net: DetNet, out: Path, classes: list[str], size: tuple[int, int], stride: int,
                        raw_rgb: list[np.ndarray], resized_rgb: np.ndarray, min_score: float, meta: dict[str, Any],
                        threads: int = 2) -> Bundle:
    """Export, check parity, and write the bundle atomically (nothing is written when parity fails)."""
    with tempfile.TemporaryDirectory(prefix="loupe-export-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_onnx(net, size, onnx_path)
        parity = parity_check(net, onnx_path, raw_rgb, resized_rgb, size, stride, min_score, threads)
        full = {**meta, "task": "detect", "classes": list(classes), "input_size": [int(size[0]), int(size[1])],
                "stride": int(stride), "normalisation": DEFAULT_NORMALISATION, "model_file": "model.onnx",
                "decode": {"min_score": float(min_score), "top_k": TOP_K, "nms_iou": NMS_IOU, "agnostic": True,
                           "method": "3x3 max-pool peaks of the heatmap, top-k, class-agnostic NMS (numpy)"},
                "outputs": {"heatmap": "[N, C, h, w] per-class centre score in 0..1",
                            "size": "[N, 2, h, w] log(width / stride), log(height / stride) in input pixels",
                            "offset": "[N, 2, h, w] sub-cell centre offset x, y (cells)"},
                "onnx_opset": OPSET, "parity": parity}
        x = preprocess([np.ascontiguousarray(r[:, :, ::-1]) for r in raw_rgb[:PARITY_IMAGES]], size,
                       DEFAULT_NORMALISATION)
        return write_bundle(out, full, {"model.onnx": onnx_path}, parity_inputs=x)
