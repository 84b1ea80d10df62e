"""The float-only graph rewrites the optimisers apply are exact: same outputs, fewer nodes."""
from __future__ import annotations

import numpy as np
import onnx

from host import Bundle


def _run(model, x):
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})


def test_fold_pads_and_fuse_distance_are_exact(opt_anomaly_bundle, tmp_path):
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from loupe_trainer.optimize.graph import fold_pads, fuse_nn_distance, node_groups

    b = Bundle.load(opt_anomaly_bundle)
    quant_pre_process(str(b.path / "model.onnx"), str(tmp_path / "pre.onnx"), skip_symbolic_shape=True)
    ref = onnx.load(str(tmp_path / "pre.onnx"))
    m = onnx.load(str(tmp_path / "pre.onnx"))
    n_pad = sum(n.op_type == "Pad" for n in m.graph.node)
    folded = fold_pads(m)
    if b.meta.get("graph", {}).get("pads_folded"):  # the trainer already folded them at export
        assert folded == 0  # nothing left to fold into a Conv
    else:
        assert folded >= 5 and sum(n.op_type == "Pad" for n in m.graph.node) < n_pad
    info = fuse_nn_distance(m)
    if info is not None:  # bundles exported before the trainer computed the distance this way itself
        assert info["bank"] == b.meta["memory_bank"]["bank_size"]
    rm = [n for n in m.graph.node if n.op_type == "ReduceMin"]
    prod = {o: n for n in m.graph.node for o in n.output}
    if b.meta["graph"].get("search"):
        # the two-stage search (issue 18): nothing to fuse; each (chunk x bank) block of coarse scores is one
        # product (+ the bank norms, Gemm after quant_pre_process) and one min over runs of entries
        assert info is None
        assert rm and all(prod[n.input[0]].op_type == "Reshape" and prod[prod[n.input[0]].input[0]].op_type
                          in ("Gemm", "Add") for n in rm if prod[n.input[0]].op_type != "ReduceSum")
        assert any(n.op_type == "ArgMin" for n in m.graph.node)
    else:
        # either way the (patches x bank) block is now touched by one product and one min only
        assert rm and all(prod[n.input[0]].op_type in ("MatMul", "Gemm") for n in rm)
    onnx.checker.check_model(m)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.uniform(0, 255, (1, 3, 128, 128)).astype(np.float32)
        for r, g in zip(_run(ref, x), _run(m, x)):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
    # the backbone groups are all found (stem, blocks of stages 1-4) and nothing else is called backbone
    groups = set(node_groups(m).values())
    assert {"stem", "block0", "block7"} <= groups and "head" not in groups and "block8" not in groups


def test_prune_rebuilds_the_exact_network(opt_classify_bundle):
    """The torch network rebuilt from the ONNX graph (BN folded) reproduces the bundle's logits."""
    import torch

    from loupe_trainer.optimize.prune import backbone_from_onnx

    b = Bundle.load(opt_classify_bundle)
    bb, found = backbone_from_onnx(b.path / "model.onnx")
    assert "_conv_stem" in found and "_blocks.14/_project_conv" in found
    from loupe_trainer.optimize.graph import session

    s = session(b.path / "model.onnx")
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    logits, feats = s.run(["logits", "features"], {"image": x})
    w = np.load(b.path / "cam_weights.npy")
    bias = np.load(b.path / "cam_bias.npy")
    with torch.no_grad():
        st = bb.stages(torch.from_numpy(x), ["stage4", "stage5", "stage6"])
    f6 = torch.nn.functional.interpolate(st["stage6"], size=st["stage4"].shape[-2:], mode="nearest")
    fmap = torch.cat([st["stage4"], st["stage5"], f6], 1).numpy()
    np.testing.assert_allclose(fmap, feats, rtol=1e-3, atol=1e-3)
    cams = np.einsum("ck,nkhw->nchw" if w.ndim == 2 else "ckhw,nkhw->nchw", w, fmap) + bias[None, :, None, None]
    np.testing.assert_allclose(cams.mean(axis=(2, 3)), logits, rtol=1e-3, atol=1e-3)
