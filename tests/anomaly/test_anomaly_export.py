"""Export parity and the numpy metrics."""
from __future__ import annotations

import numpy as np
import pytest

from anomaly_helpers import bundle_meta


def test_export_parity_recorded(anomaly_bundle):
    p = bundle_meta(anomaly_bundle)["parity"]
    assert p["n_images"] >= 2
    assert p["max_abs_diff"]["score"] <= p["atol"]
    assert p["max_abs_diff"]["anomaly_map"] <= p["atol"] * 10  # atol + rtol*|value| bound


def test_parity_check_fails_on_disagreement(anomaly_bundle):
    from loupe_trainer.common import ParityError, check_parity, ort_session

    sess = ort_session(anomaly_bundle / "model.onnx")
    h, w = bundle_meta(anomaly_bundle)["input_size"]
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, h, w)).astype(np.float32)
    ref = sess.run(None, {"image": x})
    # the graph agrees with itself ...
    check_parity(lambda _: ref, sess, [x], 1e-6, 0.0)
    # ... and a model whose outputs drift by 0.05 fails the export
    with pytest.raises(ParityError, match="differ"):
        check_parity(lambda _: [ref[0] + 0.05, ref[1]], sess, [x], 2e-3, 1e-3)


def test_numpy_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    from loupe_dl_anomaly.metrics import auroc, f1_threshold, good_threshold

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = rng.normal(0, 1, 500) + y * 0.8
    s[:50] = np.round(s[:50])  # ties
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert good_threshold(np.arange(101.0), 0.99) == pytest.approx(99.0)
    t, f1 = f1_threshold(np.array([0.1, 0.2, 0.3, 0.9, 1.0]), np.array([0, 0, 0, 1, 1]))
    assert 0.3 < t < 0.9 and f1 == 1.0


def test_two_stage_search_against_brute_force(tmp_path):
    """The two-stage search (issue 18): its candidates are the coarse arg-min of each bank part, the distance
    it returns is the exact distance to the best candidate (never below the true nearest one), it finds the
    true nearest entry for most patches, the exported graph gives the same indices and distances, and the
    upsampling matrices are F.interpolate's bilinear weights."""
    import onnxruntime as ort
    import torch
    import torch.nn.functional as F

    from loupe_trainer.anomaly.model import TwoStageSearch, bilinear_matrix
    from loupe_trainer.common import export_onnx

    g = torch.Generator().manual_seed(0)
    # features with a decaying spectrum (as CNN patch features have), bank size not a multiple of the runs
    scale = torch.logspace(1, -1, 60)
    bank = torch.randn(1000, 60, generator=g) * scale
    x = torch.randn(700, 60, generator=g) * scale
    brute = torch.cdist(x.double(), bank.double())                       # (700, 1000)
    for groups in (1, 2, 4):
        s = TwoStageSearch(bank, 16, groups, chunk=128, seed=3)
        assert s.size % (groups * s.width) == 0 and s.size >= 1000
        a = s.candidates(x)
        # the coarse scores in float64: each candidate is the arg-min of its part of the (permuted) bank
        xp = (x.double() @ s.search_proj.double()) - s.search_center.double()
        coarse = (xp @ s.search_bt.double() + s.search_bias.double()).reshape(700, groups, -1)
        best = coarse.min(dim=2).values
        got = torch.gather(coarse, 2, (a - s.search_offsets)[:, :, None])[..., 0]
        assert torch.allclose(got, best, rtol=1e-5, atol=1e-3)
        # the distance is the exact one to the nearest candidate: never below the true minimum
        d = s(x).double()
        cand = torch.cdist(x.double()[:, None, :], s.search_bank.double()[a])[:, 0, :].min(dim=1).values
        assert torch.allclose(d, cand, atol=1e-4)
        assert (d >= brute.min(dim=1).values - 1e-4).all()
        exact = (d - brute.min(dim=1).values).abs() < 1e-4
        assert exact.float().mean() > {1: 0.6, 2: 0.7, 4: 0.8}[groups]
        # the exported graph: same candidates, same distances
        path = export_onnx(s, x[:256], tmp_path / f"s{groups}.onnx", ["x"], ["d"])
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        o = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": x[:256].numpy()})
        assert np.abs(o[0] - s(x[:256]).numpy()).max() < 1e-4
    # search_dim >= the feature dimension: the exact search
    from loupe_trainer.anomaly.model import PatchCore, PatchFeatures
    from loupe_trainer.backbone import build_backbone

    pc = PatchCore(PatchFeatures(build_backbone(pretrained=False)), bank, search_dim=60)
    assert pc.search is None
    d = pc.patch_distances(x.reshape(7, 10, 10, 60)).reshape(-1).double()
    assert torch.allclose(d, brute.min(dim=1).values, atol=1e-3)
    m = torch.randn(1, 1, 7, 9, generator=g)
    up = bilinear_matrix(64, 7) @ m @ bilinear_matrix(72, 9).t()
    assert torch.allclose(up, F.interpolate(m, size=(64, 72), mode="bilinear", align_corners=False), atol=1e-5)
