"""ONNX export of a trained classifier, with a parity check against torch, into a bundle."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from host import DEFAULT_NORMALISATION, PARITY_IMAGES, Bundle, BundleError, create_session, write_bundle
from host import prepare_images as preprocess

from ..backbone import to_tensor
from .engine import ClassNet

OPSET = 17
#: parity tolerances: logits may differ by float rounding only; the predicted class never
LOGIT_ATOL = 2e-3
FEATURE_ATOL = 2e-3


class _Graph(nn.Module):
    def __init__(self, net: ClassNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        logits, fmap = self.net(x)
        return logits, fmap


def export_onnx(net: ClassNet, size: tuple[int, int], path: Path) -> None:
    net.eval()
    dummy = torch.zeros(1, 3, size[0], size[1])
    # the exporter restores the wrapper's training flag on exit (recursively): keep everything in eval
    import warnings

    with warnings.catch_warnings():  # the TorchScript exporter's notes on constant folding and tracing
        warnings.simplefilter("ignore")
        torch.onnx.export(_Graph(net).eval(), (dummy,), str(path), input_names=["image"],
                          output_names=["logits", "features"],
                          dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}, "features": {0: "n"}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    net.eval()
    # TF-'SAME' Pad nodes into their Conv: identical outputs, and the trunk runs ~1.7x faster on ORT's CPU
    # provider (no layout reorder around each padded convolution); the parity check below still applies
    from ..common import fold_pads_into_convs

    fold_pads_into_convs(path)


def parity_check(net: ClassNet, onnx_path: Path, raw_images: list[np.ndarray], resized_rgb: np.ndarray,
                 size: tuple[int, int], threads: int = 2) -> dict[str, Any]:
    """Compare torch (on the trainer's inputs) with ONNX Runtime (on the runtime's own preprocessing of the
    decoded images). Raises ``BundleError`` when they disagree."""
    net.eval()
    with torch.no_grad():
        t_logits, t_feats = (a.numpy() for a in net(to_tensor(resized_rgb)))
    sess = create_session(onnx_path, threads)
    o_logits, o_feats = sess.run(["logits", "features"], {"image": preprocess(raw_images, size)})
    d_logits = float(np.abs(t_logits - o_logits).max())
    d_feats = float(np.abs(t_feats - o_feats).max())
    agree = float((t_logits.argmax(1) == o_logits.argmax(1)).mean())
    report = {"images": len(raw_images), "max_abs_logit_diff": d_logits, "max_abs_feature_diff": d_feats,
              "argmax_agreement": agree}
    if d_logits > LOGIT_ATOL or d_feats > FEATURE_ATOL or agree < 1.0:
        raise BundleError(f"export parity check failed: ONNX Runtime and torch disagree on {len(raw_images)} "
                          f"training images (max |logit diff| {d_logits:.2e} > {LOGIT_ATOL:g}, or max |feature "
                          f"diff| {d_feats:.2e} > {FEATURE_ATOL:g}, or predicted classes agree on only "
                          f"{agree:.1%}); the bundle was not written")
    return report


def write_classifier_bundle(net: ClassNet, out: Path, classes: list[str], size: tuple[int, int],
                            raw_images: list[np.ndarray], resized_rgb: np.ndarray, meta: dict[str, Any],
                            threads: int = 2, log: dict[str, Any] | None = None) -> Bundle:
    """Export, check parity, and write the bundle atomically (nothing is written when parity fails)."""
    with tempfile.TemporaryDirectory(prefix="loupe-export-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_onnx(net, size, onnx_path)
        parity = parity_check(net, onnx_path, raw_images, resized_rgb, size, threads)
        with torch.no_grad():
            h, wd = (int(d) for d in net.features(torch.zeros(1, 3, *size)).shape[-2:])
        w, b = net.cam_weights(h, wd)
        full = {**meta, "task": "classify", "classes": list(classes), "input_size": [int(size[0]), int(size[1])],
                "normalisation": DEFAULT_NORMALISATION, "model_file": "model.onnx",
                "outputs": {"logits": "[N, C] class scores (softmax gives probabilities)",
                            "features": "[N, K, h, w] last feature map (stages 4-6 concatenated at stride 16); "
                                        "CAM_c = sum over k of cam_weights[c, k] * F[k] + cam_bias[c] "
                                        "(cam_weights [C, K] or, for grid pooling, [C, K, h, w]); "
                                        "the mean of CAM_c over the map is the logit"},
                "onnx_opset": OPSET, "parity": parity}
        return write_bundle(out, full, {"model.onnx": onnx_path, "cam_weights.npy": _npy(w),
                                        "cam_bias.npy": _npy(b)}, log=log,
                            parity_inputs=preprocess(raw_images[:PARITY_IMAGES], size))


def _npy(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()
