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
