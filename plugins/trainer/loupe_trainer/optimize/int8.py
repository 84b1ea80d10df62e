"""``loupe optimize BUNDLE --method int8``: ONNX Runtime static INT8 quantisation of the backbone.

What it does, and why (measured on a 2-core AVX-512 VNNI CPU):

* **Format: QOperator** (``QLinearConv`` / ``QLinearAdd``), **uint8 activations,
  int8 weights, per-channel weights**. int8 *activations* (ORT's default, S8S8)
  have no fast QLinearConv kernel on x86 and run ~3x *slower* than fp32; U8S8
  is the fast path. QDQ with per-channel weights is not fused back into
  QLinearConv for this graph by ORT's CPU provider and ran close to fp32 speed.
  Per-tensor weights triple the feature error (depthwise convolutions have
  very different ranges per channel).
* **Calibration: MinMax** on the bundle's training images (``--calib DATA``
  to use other images). Entropy and Percentile gave no lower error here.
* The graph is pre-processed with ``quant_pre_process`` (shape inference,
  constant folding) before quantisation, and the explicit ``Pad`` of every
  TF-'SAME' convolution is folded into the ``Conv`` (``graph.fold_pads``). For
  anomaly graphs the float32 nearest-neighbour distance is restructured into one
  matrix product and one min (``graph.fuse_nn_distance``; identical values,
  two fewer passes over the patches x bank matrix, which is more than half of
  the fp32 graph's time). Both rewrites are float-only and are recorded under
  ``float_rewrites``; bench/optimize.py times an fp32 graph with the same
  rewrites, so the gain of quantisation itself stays visible.
* **The EfficientNet-Lite0 trunk is quantised, and the anomaly graph's
  nearest-neighbour *search*; the rest stays float32**: for anomaly bundles the
  feature aggregation, the nearest-neighbour *distance* (``|x|^2 - 2 x.b +
  |b|^2`` in int8 would lose everything to cancellation), the position
  normalisation and the smoothing; for classification bundles the pooling and
  the linear head. The search (which bank entry is nearest: more than half of
  the float graph's time once the trunk is fast) runs as an int8 matrix product
  and the distance to the entry it finds is recomputed exactly in float32
  (``graph.quantize_nn_search``); it is a candidate group (``nn_search``) in the
  sensitivity search below, so it too stays float when it hurts.
* **Sensitive parts stay float, chosen by measurement**: each backbone group
  (stem, block0..15, head) is quantised *alone* (calibration is computed once
  and cached) and the relative L2 change of the graph's outputs on held-out
  calibration images is measured; groups whose error is at least
  ``sensitivity_share`` (10%) of the summed errors (at most ``max_float_groups``
  = 3 of them) are kept in float. On EfficientNet-Lite0 this picks the stem and
  the first two blocks (high resolution, wide activation ranges): on the demo
  anomaly model keeping only block0 in float lost 1.6 AUROC points, keeping
  stem+block0+block1 lost none. ``--keep-float`` overrides the search with an
  explicit list (``--keep-float none`` quantises every backbone group).
"""
from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from host import Bundle, BundleError, Optimizer, Params, Progress, UsageError


class Int8Params(Params):
    calib: str | None = Field(None, description="folder of calibration images (default: the bundle's training "
                                                 "images, as recorded in its metadata)")
    calib_images: int = Field(64, ge=4, le=2000, description="number of calibration images")
    calibration: Literal["minmax", "entropy", "percentile"] = Field("minmax", description="activation range "
                                                                                          "calibration method")
    per_channel: bool = Field(True, description="per-channel weight scales (per-tensor is ~3x less accurate here)")
    format: Literal["auto", "qoperator", "qdq"] = Field("auto", description="quantised graph format: QOperator "
                                                                        "(the fast one on ONNX Runtime's CPU "
                                                                        "provider), QDQ (the one OpenVINO reads); "
                                                                        "auto: by --engine")
    engine: Literal["cpu", "openvino"] = Field("cpu", description="the engine the bundle is made for: cpu (ONNX "
                                                                  "Runtime: QOperator, int8 nearest-neighbour "
                                                                  "search) or openvino (QDQ, no ONNX Runtime-only "
                                                                  "operators, so OpenVINO can read the graph)")
    keep_float: list[str] | None = Field(None, description="groups to keep in float (stem, block0..block15, head, "
                                                           "and nn_search for anomaly graphs); default: chosen by "
                                                           "the sensitivity search")
    sensitivity_share: float = Field(0.1, gt=0.0, le=1.0, description="keep a group in float when its "
                                                                      "single-group error is at least this share "
                                                                      "of all groups' errors summed")
    max_float_groups: int = Field(3, ge=0, le=18, description="at most this many groups kept in float by the search")
    data: str | None = Field(None, description="evaluation data for the accuracy check (default: the training "
                                               "data's test split)")
    max_drop: float = Field(1.0, ge=0, description="accuracy / AUROC points the optimised bundle may lose; more is "
                                                   "reported (and is an error with --strict)")
    strict: bool = Field(False, description="fail when the accuracy check loses more than --max-drop points")
    threads: int = Field(2, ge=1, le=64, description="CPU threads for calibration and checks")
    seed: int = Field(0, description="random seed (choice of calibration images)")


class _Reader:
    def __init__(self, name: str, xs: list[np.ndarray]):
        self.name, self.xs, self.i = name, xs, 0

    def get_next(self):
        if self.i >= len(self.xs):
            return None
        self.i += 1
        return {self.name: self.xs[self.i - 1]}

    def rewind(self):
        self.i = 0

    def __len__(self):
        return len(self.xs)


def quantize(pre: Path, dst: Path, reader, nodes: list[str], params: Int8Params, cache: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
        quantize_static

    class R(CalibrationDataReader):  # the quantiser checks the base class
        def get_next(self):
            return reader.get_next()

    reader.rewind()
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[params.calibration]
    quantize_static(str(pre), str(dst), R(), calibrate_method=method,
                    quant_format=QuantFormat.QOperator if graph_format(params) == "qoperator" else QuantFormat.QDQ,
                    per_channel=params.per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_quantize=nodes, calibration_cache_path=str(cache))


def int8_engine_rtol(bundle: Bundle, dst: Path, threads: int) -> dict | None:
    """The engine parity tolerance of an int8 bundle. Two engines run the same int8 graph with different
    int8 kernels (rounding, requantisation, which operators they fuse), so they differ by quantisation
    noise, not float rounding: an engine may differ from ONNX Runtime CPU's int8 outputs by at most twice
    what int8 itself changed against the float32 parent, on the bundle's stored parity images (at least
    the float tolerance, at most 0.5 of each output's scale). ``None`` for bundles without stored images."""
    from .graph import session

    ep = bundle.info.engine_parity if bundle.info is not None else None
    if ep is None:
        return None
    x = np.load(bundle.file(ep.inputs), allow_pickle=False)
    sess = session(dst, threads)
    names = list(ep.outputs)
    got = [sess.run(names, {ep.input: x[i:i + 1]}) for i in range(len(x))]
    worst = 0.0
    for k, name in enumerate(names):
        a = np.load(bundle.file(ep.outputs[name]), allow_pickle=False).astype(np.float64)
        b = np.concatenate([g[k] for g in got]).astype(np.float64)
        worst = max(worst, float(np.abs(a - b).max()) / max(1e-6, float(np.abs(a).max())))
    return {"int8_vs_float": round(worst, 5), "rtol": round(min(0.5, max(ep.rtol, 2 * worst)), 5)}


def graph_format(params: Int8Params) -> str:
    """QOperator for ONNX Runtime's CPU provider, QDQ for OpenVINO (it converts QuantizeLinear /
    DequantizeLinear pairs into its own int8 kernels, but not ``com.microsoft.QLinear*``)."""
    if params.format != "auto":
        return params.format
    return "qdq" if params.engine == "openvino" else "qoperator"


#: the pseudo-group of the anomaly graph's nearest-neighbour search (see graph.quantize_nn_search)
SEARCH = "nn_search"


def quantize_search(src: Path, dst: Path) -> dict | None:
    """Copy the graph at ``src`` to ``dst`` with its nearest-neighbour search in int8 (distance kept float)."""
    import onnx

    from .graph import quantize_nn_search

    model = onnx.load(str(src))
    done = quantize_nn_search(model)
    onnx.save(model, str(dst))
    return done


def sensitivity(pre: Path, tmp: Path, reader, groups: list[str], model, check: list[np.ndarray],
                ref: list, names: list[str], params: Int8Params, cache: Path, progress: Progress) -> dict[str, float]:
    """Relative L2 change of the outputs when only one group is quantised (the rest float)."""
    from .graph import compare_outputs, mean_rel_l2, nodes_in, run_all, session

    out: dict[str, float] = {}
    for i, g in enumerate(groups):
        q = tmp / f"sens_{g}.onnx"
        if g == SEARCH:
            quantize_search(pre, q)
        else:
            quantize(pre, q, reader, nodes_in(model, [g]), params, cache)
        out[g] = round(mean_rel_l2(compare_outputs(ref, run_all(session(q, params.threads), check), names)), 5)
        q.unlink()
        progress.update("sensitivity", i + 1, len(groups), **{g: out[g]})
    return out


def pick_float_groups(sens: dict[str, float], share: float, cap: int) -> list[str]:
    """The groups whose error, quantised alone, is at least ``share`` of the summed errors (worst first, at
    most ``cap``): those that dominate the int8 graph's error."""
    if not sens:
        return []
    total = sum(sens.values())
    worst = sorted(sens, key=sens.get, reverse=True)
    return [g for g in worst[:cap] if total > 0 and sens[g] >= share * total]


class Int8Optimizer(Optimizer):
    method = "int8"
    description = ("static INT8 quantisation of the backbone (ONNX Runtime, QOperator U8S8 per-channel, "
                   "calibrated on training images; sensitive layers and the distance part stay float)")
    Params = Int8Params

    def optimize(self, bundle: Bundle, out: Path, params: Int8Params, progress: Progress) -> Bundle:
        import onnx
        from onnxruntime.quantization.shape_inference import quant_pre_process

        from . import common
        from .graph import backbone_groups, compare_outputs, ensure_node_names, fold_pads, fuse_nn_distance, \
            mean_rel_l2, nodes_in, quantize_nn_search, run_all, session

        common.require_float(bundle, "int8")
        t0 = time.perf_counter()
        src = bundle.file(common.model_file(bundle))
        calib, calib_source = common.calibration_images(bundle, params.calib, params.calib_images, params.seed)
        if len(calib) < 4:
            raise UsageError(f"{calib_source}: only {len(calib)} readable calibration images; give at least 4")
        data = common.eval_data(bundle, params.data)
        check = common.held_out_images(bundle, data, 16) or calib[-min(8, len(calib) // 2):]
        progress.log(f"calibrating on {len(calib)} images from {calib_source}")
        with tempfile.TemporaryDirectory(prefix="loupe-int8-") as tmpd:
            tmp = Path(tmpd)
            named = tmp / "named.onnx"
            model = onnx.load(str(src))
            ensure_node_names(model)
            onnx.save(model, str(named))
            pre = tmp / "pre.onnx"
            try:
                quant_pre_process(str(named), str(pre), skip_symbolic_shape=True)
            except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation; fall back to the graph
                progress.log(f"quant_pre_process failed ({exc}); quantising the graph as exported")
                pre = named
            model = onnx.load(str(pre))
            folded = fold_pads(model)  # TF-SAME Pad + Conv -> one Conv (no layout reorder per conv)
            nn_fused = fuse_nn_distance(model)  # anomaly: float32 distance as one GEMM + min
            if folded or nn_fused:
                pre = tmp / "pre_folded.onnx"
                onnx.save(model, str(pre))
            groups = backbone_groups(model)
            if not groups:
                raise BundleError(f"{src}: no EfficientNet-Lite0 backbone nodes found in the graph (node names "
                                  f"like /.../_blocks.N/...); int8 only knows the Loupe trainers' graphs")
            if params.engine == "openvino":
                pass  # the int8 search is ONNX Runtime's DynamicQuantizeMatMul, which OpenVINO cannot read
            elif quantize_nn_search(copy.deepcopy(model)) is not None:
                groups = groups + [SEARCH]   # anomaly graphs: the search is a candidate like any backbone group
            ref_sess = session(pre, params.threads)
            names = [o.name for o in ref_sess.get_outputs()]
            ref = run_all(ref_sess, check)
            reader = _Reader(ref_sess.get_inputs()[0].name, calib)
            cache = tmp / "calibration.json"
            sens: dict[str, float] = {}
            if params.keep_float is None:
                sens = sensitivity(pre, tmp, reader, groups, model, check, ref, names, params, cache, progress)
                keep = pick_float_groups(sens, params.sensitivity_share, params.max_float_groups)
            elif [g.lower() for g in params.keep_float] == ["none"]:
                keep = []
            else:
                unknown = [g for g in params.keep_float if g not in groups]
                if unknown:
                    raise UsageError(f"--keep-float: unknown group(s) {unknown}; the graph has {groups}")
                keep = list(params.keep_float)
            quant_groups = [g for g in groups if g not in keep]
            nodes = nodes_in(model, [g for g in quant_groups if g != SEARCH])
            progress.update("quantise", 0, 1)
            dst = tmp / "model_int8.onnx"
            quantize(pre, dst, reader, nodes, params, cache)
            search = quantize_search(dst, dst) if SEARCH in quant_groups else None
            onnx.checker.check_model(str(dst))
            progress.update("quantise", 1, 1)
            cmp = compare_outputs(ref, run_all(session(dst, params.threads), check), names)
            parity = {"images": len(check), "reference": "the parent's float graph", "outputs": cmp}
            progress.log(f"int8 vs float: mean relative L2 {mean_rel_l2(cmp):.4f}")
            excluded = [n for n in nodes_in(model, groups) if n not in set(nodes)]
            record = {
                "method": "int8",
                "tool": "onnxruntime.quantization.quantize_static",
                "format": graph_format(params), "engine": params.engine,
                "activations": "uint8", "weights": "int8",
                "per_channel": params.per_channel, "calibration": params.calibration,
                "calibration_images": len(calib), "calibration_source": calib_source,
                "quantized_groups": quant_groups, "float_groups": keep,
                "float_rest": "everything after the backbone (pooling/head, or aggregation, nearest-neighbour "
                              "distance, normalisation, smoothing)",
                "nn_search": search or ("kept float (by measurement or --keep-float)" if SEARCH in groups
                                        else "not present"),
                "excluded_nodes": excluded,
                "sensitivity": {"metric": "mean relative L2 change of the outputs with only that group quantised",
                                "by_group": sens, "share": params.sensitivity_share,
                                "max_float_groups": params.max_float_groups} if sens else
                               {"by_group": {}, "note": "groups given with --keep-float"},
                "n_quantized_nodes": len(nodes),
                "float_rewrites": {"folded_pads": folded, "nn_distance": nn_fused or "not present"},
                "parity": parity,
            }
            engine_rtol = int8_engine_rtol(bundle, dst, params.threads)
            if engine_rtol is not None:
                record["engine_parity_rtol"] = engine_rtol
            child = common.finish(bundle, Path(out), dst, record,
                                  meta_update={"engine_parity": {**bundle.meta["engine_parity"],
                                                                 "rtol": engine_rtol["rtol"]}}
                                  if engine_rtol is not None else None,
                                  log=common.run_log(quantise_seconds=round(time.perf_counter() - t0, 1)))
        return common.record_accuracy(bundle, child, data, params, progress, t0)

