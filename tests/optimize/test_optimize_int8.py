"""``loupe optimize --method int8`` on real (tiny) bundles: record, parity, eval, recipe, speed."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from host import Bundle, model_sha256
from host.testing import run_loupe

ENV = {"OMP_NUM_THREADS": "2"}


def _optimize(bundle, out, *extra):
    r = run_loupe("optimize", bundle, "--method", "int8", "--out", out, "-q", *extra, env=ENV, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return Bundle.load(out)


@pytest.fixture(scope="module")
def cls_int8(opt_classify_bundle, tmp_path_factory):
    return _optimize(opt_classify_bundle, tmp_path_factory.mktemp("ci8") / "int8")


@pytest.fixture(scope="module")
def ano_int8(opt_anomaly_bundle, tmp_path_factory):
    return _optimize(opt_anomaly_bundle, tmp_path_factory.mktemp("ai8") / "int8")


def _quant_ops(bundle):
    import onnx

    m = onnx.load(str(bundle.path / "model.onnx"))
    return [n.op_type for n in m.graph.node]


def test_int8_classify_record_parity_accuracy(cls_int8, opt_classify_bundle):
    parent = Bundle.load(opt_classify_bundle)
    rec = cls_int8.meta["optimization"]
    assert rec["method"] == "int8" and rec["format"] == "qoperator" and rec["per_channel"] is True
    assert rec["parent"]["sha256"] == parent.sha256
    # the sensitivity search measured every backbone group and kept the worst in float
    sens = rec["sensitivity"]["by_group"]
    assert {"stem", "block0", "block5"} <= set(sens)
    assert rec["float_groups"] and all(sens[g] >= max(sens[q] for q in rec["quantized_groups"])
                                       for g in rec["float_groups"])
    assert rec["excluded_nodes"] and all("_blocks" in n or "stem" in n or "/Clip" in n for n in rec["excluded_nodes"])
    ops = _quant_ops(cls_int8)
    assert ops.count("QLinearConv") >= 30 and "Conv" in ops  # float groups kept as Conv
    logits = rec["parity"]["outputs"]["logits"]
    assert logits["argmax_agreement"] >= 0.9 and logits["rel_l2"] < 0.15
    acc = rec["accuracy"]
    assert acc["checked"] and acc["metric"] == "accuracy"
    assert acc["drop_points"] <= 5.0  # tiny test set (60 images): one image is 1.7 points
    # the other bundle files are carried over unchanged; the graph is smaller
    assert cls_int8.files["cam_weights.npy"] == parent.files["cam_weights.npy"]
    assert (cls_int8.path / "model.onnx").stat().st_size < 0.5 * (parent.path / "model.onnx").stat().st_size


def test_int8_classify_eval_and_recipe(cls_int8, opt_fashion, tmp_path):
    r = run_loupe("eval", cls_int8.path, opt_fashion, "--json", env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["task"] == "classify" and res["accuracy"] >= 0.8
    shutil.copytree(cls_int8.path, tmp_path / "model")
    imgs = tmp_path / "images"
    imgs.mkdir()
    for c in ("tshirt", "trouser", "sneaker"):
        for p in sorted((opt_fashion / "test" / c).glob("*.png"))[:3]:
            shutil.copy(p, imgs / f"{c}_{p.name}")
    (tmp_path / "recipe.yaml").write_text(
        "loupe_recipe: 1\nname: int8\nsource: {spec: \"folder:images\"}\ninspect:\n"
        "  - tool: classify.cnn\n    name: garment\n    params:\n"
        f"      model: {{path: model, sha256: {model_sha256(tmp_path / 'model')}}}\n")
    r = run_loupe("run", tmp_path / "recipe.yaml", "--report", f"jsonl:{tmp_path / 'out.jsonl'}", "-q",
                  cwd=tmp_path, env=ENV, timeout=300)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 9
    right = sum(row["results"][0]["measurements"]["class"] == row["path"].rsplit("/", 1)[-1].split("_")[0]
                for row in rows)
    assert right >= 7


def test_int8_anomaly_keeps_distance_float(ano_int8, opt_anomaly_bundle, opt_texture):
    import onnx

    rec = ano_int8.meta["optimization"]
    m = onnx.load(str(ano_int8.path / "model.onnx"))
    ops = [n.op_type for n in m.graph.node]
    assert "QLinearConv" in ops
    if Bundle.load(opt_anomaly_bundle).meta["graph"].get("search"):
        # the two-stage search (issue 18; the default): its coarse product is already small, so it is not a
        # candidate group and stays float, like the exact distance to the chosen entries
        assert "nn_search" not in rec["sensitivity"]["by_group"] and "nn_search" not in rec["quantized_groups"]
        assert "DynamicQuantizeMatMul" not in ops and {"ArgMin", "Gather", "MatMul"} <= set(ops)
    else:
        # the exact search was measured like a backbone group; quantised or not, the distance handed on is float32
        assert "nn_search" in rec["sensitivity"]["by_group"]
        if "nn_search" in rec["quantized_groups"]:
            assert ops.count("DynamicQuantizeMatMul") == 1 and "ArgMin" in ops and "Gather" in ops
            assert rec["nn_search"]["distance"].startswith("float32")
        else:
            assert {"MatMul", "Gemm"} & set(ops) and "ReduceMin" in ops
    assert not {"QLinearMatMul", "QGemm", "MatMulInteger"} & set(ops)
    assert rec["accuracy"]["checked"] and rec["accuracy"]["metric"] == "image_auroc"
    assert rec["parity"]["outputs"]["score"]["rel_l2"] < 0.1
    r = run_loupe("eval", ano_int8.path, opt_texture, "--json", env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["image_auroc"] >= 0.8 and abs(res["image_auroc"] - rec["accuracy"]["optimized"]["image_auroc"]) < 1e-9


@pytest.mark.parametrize("fused", [False, True])
def test_int8_search_finds_the_float_neighbour(fused):
    """The int8 search + float distance against brute force: every value is the exact float distance to a
    real bank entry, never below the true minimum, and equal to it wherever the nearest entry is clear."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from loupe_trainer.optimize.graph import quantize_nn_search

    rng = np.random.default_rng(0)
    n, k, d = 300, 500, 24   # 500: not a multiple of the search's chunk width
    bank = rng.normal(size=(k, d)).astype(np.float32)
    x = (bank[rng.integers(0, k, n)] + 0.2 * rng.normal(size=(n, d))).astype(np.float32)
    inits = [numpy_helper.from_array((-2 * bank).T.copy(), "btn2"),
             numpy_helper.from_array((bank * bank).sum(1), "bsq")]
    if fused:  # MatMul + Add as ONNX Runtime's optimiser leaves them
        nodes = [helper.make_node("Gemm", ["x", "btn2", "bsq"], ["s"], name="gemm")]
    else:       # as the anomaly trainer exports them
        nodes = [helper.make_node("MatMul", ["x", "btn2"], ["mm"], name="mm"),
                 helper.make_node("Add", ["mm", "bsq"], ["s"], name="add")]
    nodes.append(helper.make_node("ReduceMin", ["s"], ["out"], axes=[1], keepdims=0, name="min"))
    graph = helper.make_graph(nodes, "nn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, d])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    done = quantize_nn_search(model)
    assert done and done["bank"] == k and done["dim"] == d
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x})[0] + (x * x).sum(1)                     # |x - b*|^2
    d2 = ((x[:, None, :] - bank[None]) ** 2).sum(-1)                        # brute force, float64 below
    true = d2.min(1)
    assert np.all(got >= true - 1e-3 * (1 + true))
    idx = np.abs(d2 - got[:, None]).argmin(1)                                # the entry it measured to
    np.testing.assert_allclose(got, d2[np.arange(n), idx], rtol=1e-4, atol=1e-4)
    second = np.sort(d2, 1)[:, 1]
    clear = second > 1.05 * true
    assert clear.mean() > 0.9
    np.testing.assert_allclose(got[clear], true[clear], rtol=1e-4, atol=1e-4)


def test_int8_usage_errors(opt_classify_bundle, cls_int8, tmp_path):
    r = run_loupe("optimize", opt_classify_bundle, "--method", "int8", "--out", tmp_path / "x",
                  "--keep-float", "block99", env=ENV)
    assert r.returncode != 0 and "block99" in r.stderr and "Traceback" not in r.stderr
    r = run_loupe("optimize", opt_classify_bundle, "--method", "int8", "--out", tmp_path / "x",
                  "--calib", tmp_path / "nowhere", env=ENV)
    assert r.returncode != 0 and "nowhere" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()
    r = run_loupe("optimize", cls_int8.path, "--method", "int8", "--out", tmp_path / "x", env=ENV)
    assert r.returncode != 0 and "already int8" in r.stderr and "Traceback" not in r.stderr


def test_int8_same_optimisation_same_hash(opt_anomaly_bundle, tmp_path):
    """Optimising the same bundle the same way twice (into two folders) gives the same sha256: wall times
    (when, how long, ms per image) are in log.json, which the manifest does not hash. The cheapest int8 run
    (no sensitivity search, 4 calibration images): a few seconds of CPU each."""
    cheap = ("--keep-float", "none", "--calib-images", "4")
    first = _optimize(opt_anomaly_bundle, tmp_path / "first", *cheap)
    again = _optimize(opt_anomaly_bundle, tmp_path / "again", *cheap)
    assert again.files == first.files, {k: (v, again.files.get(k)) for k, v in first.files.items()
                                        if again.files.get(k) != v}
    assert again.sha256 == first.sha256
    assert "log.json" not in again.files
    log = again.log["optimization"]
    assert log["seconds"] > 0 and log["created"] and log["ms_per_image"]["optimized"] > 0
    rec = again.meta["optimization"]
    assert "seconds" not in rec and "created" not in rec and "ms_per_image" not in rec["accuracy"]["optimized"]
