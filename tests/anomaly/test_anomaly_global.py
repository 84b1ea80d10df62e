"""The image-level (global) term of the anomaly model (issue 18, session 11): its second view (the input
upsampled in the graph, one more trunk pass to the head), the global bank of all good images with
leave-one-out statistics, and the export of a small-image model through the CLI and the runtime."""
from __future__ import annotations

import numpy as np


def test_knn_distance_leave_one_out_and_second_view():
    import torch

    from loupe_trainer.anomaly.model import PatchFeatures, knn_distance
    from loupe_trainer.backbone import build_backbone

    g = torch.Generator().manual_seed(0)
    cal, rest = torch.randn(6, 8, generator=g), torch.randn(10, 8, generator=g)
    bank = torch.cat([cal, rest])
    got = knn_distance(cal, bank, 3, exclude=torch.eye(6, dtype=torch.bool))
    for i in range(6):   # brute force: the 3 nearest of the bank without the image itself
        others = torch.cat([bank[:i], bank[i + 1:]])
        d = (others - cal[i]).norm(dim=1).sort().values[:3].mean()
        assert abs(float(got[i]) - float(d)) < 1e-5
    # a group (an image's tiles) leaves itself out as a whole
    grp = np.array([0, 0, 1, 1, 2, 2])
    got = knn_distance(cal, bank, 1, exclude=torch.as_tensor(grp[:, None] == grp[None, :]))
    assert abs(float(got[0]) - float(torch.cat([bank[2:]]).sub(cal[0]).norm(dim=1).min())) < 1e-5

    # ImageNet weights: a random trunk's pooled stage-6 map has a norm of ~1e-6, where the descriptor's
    # normalisation floor (1e-12 on the squared norm) makes it shorter than 1 on some draws
    torch.manual_seed(0)
    bb = build_backbone(pretrained=True)
    one = PatchFeatures(bb, ("stage3",), global_stage="stage6").eval()
    two = PatchFeatures(bb, ("stage3",), global_stage="stage6", global_size=96, global_size_stage="head").eval()
    x = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        (f1, g1), (f2, g2) = one.extract(x), two.extract(x)
    assert torch.equal(f1, f2) and g1.shape == (2, 192) and g2.shape == (2, 192 + 1280)
    assert torch.allclose(g2.norm(dim=1), torch.ones(2), atol=1e-5)
    # the first view's part is the one-view descriptor, scaled down (each view is normalised before the concat)
    assert torch.allclose(torch.nn.functional.normalize(g2[:, :192], dim=1), g1, atol=1e-5)
    assert two.global_view_size((1, 3, 64, 48)) == (96, 64) and two.global_view_size((1, 3, 96, 96)) is None


def test_small_image_model_with_global_views_exports(tmp_path):
    """48 px images: auto input 96 px and the global term on; its second view at 128 px (the default) is in the
    exported graph, which passes the export parity and runs in the torch-free runtime."""
    from anomaly_helpers import ENV, bundle_meta

    from host import Bundle
    from host.testing import run_loupe
    from loupe_dl_anomaly.data import read_image
    from loupe_dl_anomaly.runtime import AnomalyRuntime
    from loupe_trainer.samples import make_texture_dataset

    data = make_texture_dataset(tmp_path, "fabric", n_train=12, n_test_good=1, n_test_defect=1, size=48, seed=2)
    out = tmp_path / "b"
    r = run_loupe("train", "anomaly", data, "--out", out, "--max-bank", "256", "-q", env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = bundle_meta(out)
    gl = meta["feature"]["global"]
    assert meta["input_size"] == [96, 96]
    assert gl["view2"] == {"size": [128, 128], "stage": "head"} and gl["dim"] == 192 + 1280
    assert gl["bank"] == "all" and gl["n_images"] == 12 and gl["weight"] == 2.0
    assert max(meta["parity"]["max_abs_diff"].values()) < 2e-3
    res = AnomalyRuntime().predictor(Bundle.load(out))(read_image(data / "test" / "good" / "000.png"))
    assert np.isfinite(res["score"])
