"""Helpers shared by the trainers: threads, ONNX export, ONNX Runtime sessions, export parity.

``set_threads(n)``                 torch intra-op threads (and OMP) for a job.
``export_onnx(module, example, path, input_names, output_names, dynamic_batch=False, opset=17,
            fold_pads=False)``
                                   TorchScript-based export (``dynamo=False``), warnings silenced,
                                   the file checked with ``onnx.checker``; ``fold_pads`` runs
                                   ``fold_pads_into_convs`` on it.
``fold_pads_into_convs(path)``     zero ``Pad`` nodes (the backbone's TF 'SAME' padding) folded into
                                   the following ``Conv``'s (asymmetric) ``pads``: identical values,
                                   and ONNX Runtime no longer leaves its blocked NCHWc layout around
                                   every padded conv (Pad + the reorders were ~40 % of the anomaly
                                   graph's time at 256 px). Returns the number folded.
``ort_session(path, threads=2)``   ``host.create_session``: the one session factory.
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

from host import create_session


from host import BundleError


class ParityError(BundleError):
    """The exported ONNX graph does not reproduce the torch model (the export fails)."""


def set_threads(n: int) -> None:
    import torch

    n = max(1, int(n))
    torch.set_num_threads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))


def export_onnx(module, example: Any, path: str | Path, input_names: Sequence[str], output_names: Sequence[str],
                dynamic_batch: bool = False, opset: int = 17, fold_pads: bool = False) -> Path:
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
    if fold_pads:
        fold_pads_into_convs(path)
    onnx.checker.check_model(str(path))
    return path


def fold_pads_into_convs(path: str | Path) -> int:
    """Fold constant zero ``Pad`` nodes whose only user is a ``Conv`` into that conv's ``pads``.

    The pad amounts are evaluated once with ONNX Runtime (they are computed from constants and the
    fixed spatial input size in the traced graph); a pad on the batch or channel axis, a non-zero or
    non-constant pad, or a Pad feeding anything but one Conv is left alone. Unused nodes are removed.
    """
    import onnx
    from onnx import helper

    path = Path(path)
    model = onnx.load(str(path))
    g = model.graph
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    inits = {i.name for i in g.initializer}
    outputs = {o.name for o in g.output}
    cands = []
    for n in g.node:
        if n.op_type != "Pad" or len(n.input) < 2 or n.output[0] in outputs:
            continue
        mode = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "mode"), b"constant")
        if mode not in (b"constant", "constant") or (len(n.input) > 2 and n.input[2]) or len(n.input) > 3:
            continue
        us = users.get(n.output[0], [])
        if len(us) != 1 or us[0].op_type != "Conv":
            continue
        if any(a.name == "auto_pad" and helper.get_attribute_value(a) not in (b"NOTSET", "NOTSET")
               for a in us[0].attribute):
            continue
        cands.append((n, us[0]))
    if not cands:
        return 0
    # evaluate the pad amounts: expose them as outputs of a copy and run it once on zeros
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [p.input[1] for p, _ in cands]
    for nm in names:
        if nm not in inits:
            probe.graph.output.append(helper.make_tensor_value_info(nm, onnx.TensorProto.INT64, None))
    sess = create_session(probe.SerializeToString(), 1, optimization="none")
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = np.zeros(shape, np.float32)
    want = [nm for nm in names if nm not in inits]
    vals = dict(zip(want, sess.run(want, feeds))) if want else {}
    from onnx import numpy_helper

    for init in g.initializer:
        if init.name in names:
            vals[init.name] = numpy_helper.to_array(init)
    folded = 0
    for pad, conv in cands:
        if merge_pad_into_conv(pad, conv, vals[pad.input[1]]):
            g.node.remove(pad)
            folded += 1
    # drop what no longer feeds anything (the pad arithmetic)
    while True:
        used = {i for n in g.node for i in n.input} | outputs
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    onnx.save(model, str(path))
    return folded


def merge_pad_into_conv(pad, conv, amounts) -> bool:
    """Move a zero ``Pad`` node's spatial amounts (ONNX order, NCHW begins then ends) into the ``Conv`` it
    feeds: the conv then reads the pad's input. False (nothing changed) when the pad touches the batch or
    channel axis or is negative. The caller removes the ``Pad`` node."""
    from onnx import helper

    pads = np.asarray(amounts).astype(int).reshape(-1).tolist()
    if len(pads) != 8 or pads[0] or pads[1] or pads[4] or pads[5] or min(pads) < 0:
        return False
    old = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
    new = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
    for a in list(conv.attribute):
        if a.name == "pads":
            conv.attribute.remove(a)
    conv.attribute.append(helper.make_attribute("pads", new))
    conv.input[0] = pad.input[0]
    return True


def ort_session(path: str | Path, threads: int = 2):
    """The host's session factory (``host.create_session``), kept under the trainer's old name."""
    return create_session(path, threads)


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
