"""``loupe optimize BUNDLE --method fp16``: float16 backbone, written with the ``onnx`` package alone.

(``onnxconverter-common`` is not a dependency.) The backbone's nodes (see
``graph.node_groups``) are converted: their float32 initializers and constants
become float16, ``Cast`` nodes inside the region cast to float16, and a
``Cast`` is inserted on every tensor that crosses the region's border (float32
in, float16 out and back). The graph's inputs and outputs keep float32, so
runtimes and recipes use the bundle unchanged. Everything outside the backbone
stays float32 -- for anomaly bundles that is the nearest-neighbour distance,
where ``|x|^2 - 2 x.b + |b|^2`` in float16 would cancel to noise.

On a CUDA / TensorRT / DirectML execution provider the float16 region runs on
half-precision kernels (about half the memory traffic). On the CPU provider
most of these ops have no float16 kernel: ONNX Runtime inserts casts around
each such node and runs it in float32, so the graph is usually *slower* on CPU
than the float32 original; the file is half the size. The optimiser measures
and records both in the bundle's ``log.json``
(``optimization.cpu_timing``: timings are not hashed).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import Field

from host import Bundle, BundleError, Optimizer, Params, Progress

#: inputs that must stay float32 whatever the data type (op type -> input indices)
_KEEP_F32_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}


class FP16Params(Params):
    data: str | None = Field(None, description="evaluation data for the accuracy check (default: the training "
                                               "data's test split)")
    max_drop: float = Field(1.0, ge=0, description="accuracy / AUROC points the optimised bundle may lose")
    strict: bool = Field(False, description="fail when the accuracy check loses more than --max-drop points")
    threads: int = Field(2, ge=1, le=64, description="CPU threads for the checks")


def convert_fp16(model, nodes: set[str]):
    """Convert the named nodes of ``model`` (an ``onnx.ModelProto``) to float16 in place; returns it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    float_tensors: set[str] = set()  # float32 tensors of the original graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            float_tensors.add(vi.name)
    for i in g.initializer:
        if i.data_type == TensorProto.FLOAT:
            float_tensors.add(i.name)
    # tensor types are needed at the region's border: infer them
    inferred = onnx.shape_inference.infer_shapes(model)
    for vi in inferred.graph.value_info:
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            float_tensors.add(vi.name)
    for n in g.node:  # Constant outputs are not always in value_info
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    float_tensors.add(n.output[0])

    region = [n for n in g.node if n.name in nodes]
    produced_in = {o for n in region for o in n.output}
    consumers_outside = {i for n in g.node if n.name not in nodes for i in n.input}
    graph_outputs = {o.name for o in g.output}
    new_nodes = []
    cast_in: dict[str, str] = {}
    converted_inits: dict[str, str] = {}
    users: dict[str, set[str]] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, set()).add(n.name)

    for n in g.node:
        if n.name not in nodes:
            continue
        keep = _KEEP_F32_INPUTS.get(n.op_type, set())
        for k, name in enumerate(n.input):
            if not name or k in keep or name not in float_tensors or name in produced_in:
                continue
            if name in inits and users.get(name, set()) <= nodes:
                if name not in converted_inits:  # used only inside the region: convert in place
                    arr = numpy_helper.to_array(inits[name]).astype(np.float16)
                    inits[name].CopyFrom(numpy_helper.from_array(arr, name))
                    converted_inits[name] = name
                continue
            if name not in cast_in:  # from outside the region (or a shared initializer): cast at the border
                cast_in[name] = f"{name}__fp16"
                new_nodes.append(helper.make_node("Cast", [name], [cast_in[name]], to=TensorProto.FLOAT16,
                                                  name=f"{name}__to_fp16"))
            n.input[k] = cast_in[name]
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.FLOAT16
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16)))
    # region outputs read outside the region: rename inside, cast back to float32 under the old name
    back = []
    for n in region:
        for k, o in enumerate(n.output):
            if o in float_tensors and (o in consumers_outside or o in graph_outputs):
                n.output[k] = f"{o}__fp16"
                for m in region:
                    for j, i in enumerate(m.input):
                        if i == o:
                            m.input[j] = n.output[k]
                back.append(helper.make_node("Cast", [n.output[k]], [o], to=TensorProto.FLOAT,
                                             name=f"{o}__to_fp32"))
    # rebuild the node list in a valid order: each cast right after the node producing its source
    after: dict[str, list] = {}
    for c in new_nodes + back:
        after.setdefault(c.input[0], []).append(c)
    produced = {o for n in g.node for o in n.output}
    order = [c for src, cs in after.items() if src not in produced for c in cs]  # graph inputs, initializers
    for n in list(g.node):
        order.append(n)
        for o in n.output:
            order.extend(after.get(o, []))
    del g.node[:]
    g.node.extend(order)
    del g.value_info[:]  # stale float32 annotations inside the region
    onnx.checker.check_model(model)
    return model


def _median_ms(sess, x: np.ndarray, n: int = 20) -> float:
    name = sess.get_inputs()[0].name
    for _ in range(3):
        sess.run(None, {name: x})
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t)


class FP16Optimizer(Optimizer):
    method = "fp16"
    description = ("float16 backbone for GPU execution providers (inputs/outputs and the distance part stay float32; "
                   "on CPU it is usually slower, only smaller)")
    Params = FP16Params

    def optimize(self, bundle: Bundle, out: Path, params: FP16Params, progress: Progress) -> Bundle:
        import onnx

        from . import common
        from .graph import backbone_groups, compare_outputs, ensure_node_names, nodes_in, run_all, session

        common.require_float(bundle, "fp16")
        t0 = time.perf_counter()
        src = bundle.file(common.model_file(bundle))
        common.prepare(bundle)  # task check
        from onnxruntime.quantization.shape_inference import quant_pre_process

        from .graph import fold_pads, fuse_nn_distance

        model = onnx.load(str(src))
        ensure_node_names(model)
        folded, nn_fused = 0, None
        with tempfile.TemporaryDirectory(prefix="loupe-fp16-pre-") as tmpd:
            try:  # constant-fold the pad amounts, then fold Pad + Conv (as int8 does)
                onnx.save(model, str(Path(tmpd) / "named.onnx"))
                quant_pre_process(str(Path(tmpd) / "named.onnx"), str(Path(tmpd) / "pre.onnx"),
                                  skip_symbolic_shape=True)
                pre = onnx.load(str(Path(tmpd) / "pre.onnx"))
                folded = fold_pads(pre)
                nn_fused = fuse_nn_distance(pre)
                model = pre
            except Exception as exc:  # noqa: BLE001 - an optimisation only
                progress.log(f"graph pre-processing failed ({exc}); converting the graph as exported")
        groups = backbone_groups(model)
        if not groups:
            raise BundleError(f"{src}: no EfficientNet-Lite0 backbone nodes found in the graph")
        nodes = set(nodes_in(model, groups))
        progress.update("convert", 0, 1)
        same_fp32 = model.SerializeToString()  # fp32 with the same float rewrites: the fair CPU reference
        convert_fp16(model, nodes)
        progress.update("convert", 1, 1)
        data = common.eval_data(bundle, params.data)
        check = common.held_out_images(bundle, data, 16)
        if not check:
            try:
                check, _ = common.calibration_images(bundle, None, 8)
            except Exception:  # noqa: BLE001 - no images at all: check on a synthetic input
                h, w = common.input_size(bundle)
                check = [np.random.default_rng(0).uniform(0, 255, (1, 3, h, w)).astype(np.float32)]
        with tempfile.TemporaryDirectory(prefix="loupe-fp16-") as tmpd:
            dst = Path(tmpd) / "model_fp16.onnx"
            onnx.save(model, str(dst))
            same = Path(tmpd) / "model_fp32_rewritten.onnx"
            same.write_bytes(same_fp32)
            ref_s, new_s = session(src, params.threads), session(dst, params.threads)
            names = [o.name for o in ref_s.get_outputs()]
            cmp = compare_outputs(run_all(ref_s, check), run_all(new_s, check), names)
            # one session timed at a time (idle ORT threads spin and would skew the others)
            t_parent = _median_ms(ref_s, check[0])
            t_fp16 = _median_ms(new_s, check[0])
            del ref_s
            t_same = _median_ms(session(same, params.threads), check[0])
            timing = {"fp32_ms": round(t_parent, 3), "fp32_same_rewrites_ms": round(t_same, 3),
                      "fp16_ms": round(t_fp16, 3), "threads": params.threads, "provider": "CPUExecutionProvider",
                      "speedup": round(t_parent / t_fp16, 3) if t_fp16 else 0.0,
                      "speedup_from_fp16_itself": round(t_same / t_fp16, 3) if t_fp16 else 0.0}
            progress.log(f"CPU: fp32 bundle {t_parent:.2f} ms, fp32 with the same graph rewrites {t_same:.2f} ms, "
                         f"fp16 {t_fp16:.2f} ms per image: float16 is meant for GPU execution providers")
            record = {"method": "fp16", "tool": "loupe_trainer.optimize.fp16 (onnx package)",
                      "converted_groups": groups,
                      "float_rewrites": {"folded_pads": folded, "nn_distance": nn_fused or "not present"}, "n_converted_nodes": len(nodes),
                      "float32_rest": "graph inputs/outputs and everything after the backbone",
                      "parity": {"images": len(check), "reference": "the parent's float32 graph", "outputs": cmp}}
            # timings vary from run to run: log.json (not hashed), not the record
            child = common.finish(bundle, Path(out), dst, record, log=common.run_log(cpu_timing=timing))
        return common.record_accuracy(bundle, child, data, params, progress, t0)
