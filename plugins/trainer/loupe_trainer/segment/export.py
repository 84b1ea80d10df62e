"""ONNX export of a trained segmenter, with a parity check against torch, into a bundle."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from host import DEFAULT_NORMALISATION, PARITY_IMAGES, Bundle, BundleError, create_session, write_bundle
from host import prepare_images as preprocess
from loupe_dl_segment.model import label_map

from ..backbone import to_tensor
from .net import ProbGraph, SegNet

OPSET = 17
#: parity: probabilities may differ by float rounding only, and (almost) no pixel may change its label
PROB_ATOL = 2e-3
LABEL_AGREEMENT = 0.999


def export_onnx(net: SegNet, size: tuple[int, int], path: Path, stride: int = 1) -> None:
    import warnings

    from ..common import fold_pads_into_convs

    net.eval()
    dummy = torch.zeros(1, 3, size[0], size[1])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(ProbGraph(net, stride).eval(), (dummy,), str(path), input_names=["image"],
                          output_names=["probs"],
                          dynamic_axes={"image": {0: "n"}, "probs": {0: "n"}}, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)
    net.eval()
    fold_pads_into_convs(path)  # TF-'SAME' Pad nodes into their Conv: identical values, faster on ORT's CPU provider


def parity_check(net: SegNet, onnx_path: Path, raw_images: list[np.ndarray], resized_rgb: np.ndarray,
                 size: tuple[int, int], threshold: float, threads: int = 2, stride: int = 1) -> dict[str, Any]:
    """torch (on the trainer's inputs) against ONNX Runtime (on the runtime's own preprocessing of the decoded
    images); raises ``BundleError`` when they disagree."""
    net.eval()
    with torch.no_grad():
        t = ProbGraph(net, stride)(to_tensor(resized_rgb)).numpy()
    sess = create_session(onnx_path, threads)
    o = np.concatenate([sess.run(["probs"], {"image": preprocess([im], size)})[0] for im in raw_images])
    diff = float(np.abs(t - o).max())
    agree = float(np.mean([np.mean(label_map(a, threshold) == label_map(b, threshold)) for a, b in zip(t, o)]))
    report = {"images": len(raw_images), "max_abs_prob_diff": diff, "label_agreement": agree}
    if diff > PROB_ATOL or agree < LABEL_AGREEMENT:
        raise BundleError(f"export parity check failed: ONNX Runtime and torch disagree on {len(raw_images)} "
                          f"training images (max |probability diff| {diff:.2e} > {PROB_ATOL:g}, or pixel labels "
                          f"agree on only {agree:.3%}); the bundle was not written")
    return report


def write_segment_bundle(net: SegNet, out: Path, classes: list[str], size: tuple[int, int],
                         raw_images: list[np.ndarray], resized_rgb: np.ndarray, threshold: float,
                         meta: dict[str, Any], threads: int = 2, stride: int = 1) -> Bundle:
    """Export, check parity, and write the bundle atomically (nothing is written when parity fails)."""
    with tempfile.TemporaryDirectory(prefix="loupe-export-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_onnx(net, size, onnx_path, stride)
        parity = parity_check(net, onnx_path, raw_images, resized_rgb, size, threshold, threads, stride)
        full = {**meta, "task": "segment", "classes": list(classes), "input_size": [int(size[0]), int(size[1])],
                "normalisation": DEFAULT_NORMALISATION, "model_file": "model.onnx", "threshold": float(threshold),
                "outputs": {"probs": f"[N, K + 1, H{'' if stride == 1 else f' / {stride}'}, W"
                                     f"{'' if stride == 1 else f' / {stride}'}] per-pixel softmax: channel 0 "
                                     "background, channel k the class on line k of classes.txt"
                                     + ("" if stride == 1 else "; the runtime upsamples it bilinearly to the image")},
                "output_stride": int(stride),
                "onnx_opset": OPSET, "parity": parity}
        x = np.concatenate([preprocess([im], size) for im in raw_images[:PARITY_IMAGES]])
        return write_bundle(out, full, {"model.onnx": onnx_path}, parity_inputs=x)
