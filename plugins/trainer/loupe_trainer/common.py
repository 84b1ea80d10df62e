"""Helpers shared by the trainers: threads, ONNX export, ONNX Runtime sessions, export parity.

``set_threads(n)``                 torch intra-op threads (and OMP) for a job.
``export_onnx(module, example, path, input_names, output_names, dynamic_batch=False, opset=17)``
                                   TorchScript-based export (``dynamo=False``), warnings silenced,
                                   the file checked with ``onnx.checker``.
``ort_session(path, threads=2)``   a CPU ``onnxruntime.InferenceSession`` with the given intra-op threads.
``check_parity(torch_fn, session, inputs, atol, rtol, names)``
                                   runs both on every input (numpy arrays, one feed each) and returns
                                   ``{output: max abs diff, ...}``; raises ``ParityError`` (naming the
                                   output, the input index and the difference) when any output differs
                                   by more than ``atol + rtol * |torch value|``.
``iter_batches(items, n)``         consecutive slices of length ``n``.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np


from host import BundleError


class ParityError(BundleError):
    """The exported ONNX graph does not reproduce the torch model (the export fails)."""


def set_threads(n: int) -> None:
    import torch

    n = max(1, int(n))
    torch.set_num_threads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))


def export_onnx(module, example: Any, path: str | Path, input_names: Sequence[str], output_names: Sequence[str],
                dynamic_batch: bool = False, opset: int = 17) -> Path:
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dyn = None
    if dynamic_batch:
        dyn = {n: {0: "batch"} for n in list(input_names) + list(output_names)}
    args = example if isinstance(example, tuple) else (example,)
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=list(input_names), output_names=list(output_names),
                          opset_version=opset, dynamic_axes=dyn, do_constant_folding=True, dynamo=False)
    onnx.checker.check_model(str(path))
    return path


def ort_session(path: str | Path, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def check_parity(torch_fn: Callable[[np.ndarray], Sequence[np.ndarray]], session, inputs: Iterable[np.ndarray],
                 atol: float, rtol: float, names: Sequence[str] | None = None) -> dict[str, float]:
    in_name = session.get_inputs()[0].name
    out_names = list(names or [o.name for o in session.get_outputs()])
    worst: dict[str, float] = {n: 0.0 for n in out_names}
    for i, x in enumerate(inputs):
        ref = [np.asarray(r, np.float64) for r in torch_fn(x)]
        got = [np.asarray(g, np.float64) for g in session.run(out_names, {in_name: x})]
        for name, r, g in zip(out_names, ref, got):
            if r.shape != g.shape:
                raise ParityError(f"output {name!r}: ONNX shape {g.shape} != torch shape {r.shape}")
            diff = np.abs(r - g)
            worst[name] = max(worst[name], float(diff.max()) if diff.size else 0.0)
            bad = diff > atol + rtol * np.abs(r)
            if bad.any():
                raise ParityError(f"output {name!r} on check image {i}: ONNX and torch differ by "
                                  f"{float(diff.max()):.3g} (tolerance {atol:g} + {rtol:g} x |value|)")
    return worst


def iter_batches(items: Sequence, n: int):
    for i in range(0, len(items), max(1, n)):
        yield items[i:i + n]
