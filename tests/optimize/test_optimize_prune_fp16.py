"""``loupe optimize --method prune`` and ``--method fp16`` on real (tiny) bundles."""
from __future__ import annotations

import json

import numpy as np

from host import Bundle
from host.testing import run_loupe

ENV = {"OMP_NUM_THREADS": "2"}


def test_prune_classify(opt_classify_bundle, opt_fashion, tmp_path):
    out = tmp_path / "pruned"
    r = run_loupe("optimize", opt_classify_bundle, "--method", "prune", "--out", out, "--steps", "3",
                  "--batch-size", "8", "--calib-images", "24", "-q", env=ENV, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    b = Bundle.load(out)
    rec = b.meta["optimization"]
    assert rec["method"] == "prune" and rec["parent"]["sha256"] == Bundle.load(opt_classify_bundle).sha256
    macs = rec["backbone_macs"]
    assert macs["reduction"] >= 0.30 and macs["after"] < macs["before"]
    # expanded widths shrank by the ratio, rounded to multiples of 8
    for before, after in rec["widths"].values():
        assert after % 8 == 0 and after < before
    # the trainers' export ran its torch/ONNX parity check on the pruned network
    assert b.meta["parity"]["argmax_agreement"] == 1.0 and b.meta["parity"]["max_abs_logit_diff"] < 2e-3
    assert rec["recovery"]["steps"] == 3
    # the graph really is smaller: fewer weights
    import onnx

    def n_params(p):
        return sum(int(np.prod(i.dims)) for i in onnx.load(str(p / "model.onnx")).graph.initializer)

    assert n_params(out) < 0.85 * n_params(opt_classify_bundle)
    r = run_loupe("eval", out, opt_fashion, "--json", env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["accuracy"] >= 0.7 and res["accuracy"] == rec["accuracy"]["optimized"]["accuracy"]


def test_prune_anomaly_rebuilds_bank(opt_anomaly_bundle, opt_texture, tmp_path):
    out = tmp_path / "pruned"
    r = run_loupe("optimize", opt_anomaly_bundle, "--method", "prune", "--out", out, "--steps", "4",
                  "--batch-size", "4", "--calib-images", "16", "-q", env=ENV, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    b = Bundle.load(out)
    rec = b.meta["optimization"]
    assert rec["parent"]["sha256"] == Bundle.load(opt_anomaly_bundle).sha256
    # when and how long: log.json (unhashed), never in the hashed record
    assert b.log["optimization"]["created"] and b.log["optimization"]["seconds"] > 0
    assert "created" not in rec and "seconds" not in rec and "seconds" not in rec["recovery"]
    assert rec["backbone_macs"]["reduction"] >= 0.30
    assert b.meta["memory_bank"]["bank_size"] > 0 and b.meta["threshold"] > 0  # rebuilt by the trainer
    assert b.meta["parity"]["n_images"] >= 1  # the anomaly trainer's own export parity
    r = run_loupe("eval", out, opt_texture, "--json", env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["image_auroc"] >= 0.7


def test_fp16_valid_graph(opt_anomaly_bundle, tmp_path):
    import onnx
    from onnx import TensorProto

    out = tmp_path / "half"
    r = run_loupe("optimize", opt_anomaly_bundle, "--method", "fp16", "--out", out, "-q", env=ENV)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    b = Bundle.load(out)
    m = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(m, full_check=True)
    types = [i.data_type for i in m.graph.initializer]
    assert types.count(TensorProto.FLOAT16) >= 40
    # inputs / outputs stay float32; the distance part (bank) stays float32
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in list(m.graph.input) + list(m.graph.output))
    inits = {i.name: i for i in m.graph.initializer}
    mm = [i for n in m.graph.node if n.op_type in ("MatMul", "Gemm") for i in n.input if i in inits]  # x . bank
    assert mm and all(inits[i].data_type == TensorProto.FLOAT for i in mm)
    rec = b.meta["optimization"]
    assert rec["parity"]["outputs"]["score"]["rel_l2"] < 0.01
    assert b.log["optimization"]["cpu_timing"]["fp16_ms"] > 0 and rec["accuracy"]["checked"]
    assert "cpu_timing" not in rec
