"""The image-level (global) terms of the anomaly model (issue 18): the kNN term's second view (session 11: the
input upsampled in the graph, one more trunk pass to the head), the global bank of all good images with
leave-one-out statistics, the Gaussian term (session 14: the Mahalanobis distance of a pooled, L2-normalised
view under a Ledoit-Wolf Gaussian, in the graph), and the export of a small-image model through the CLI and
the runtime."""
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


def test_gauss_term_matches_sklearn_on_real_descriptors(tmp_path):
    """The Gaussian term's descriptors of real images (generated fabric, 48 px, through the ImageNet trunk), its
    Ledoit-Wolf fit against sklearn's, and its distance as the exported graph computes it (float32, ONNX
    Runtime) against the float64 Mahalanobis distance under sklearn's precision matrix."""
    import onnxruntime as ort
    import torch
    from sklearn.covariance import LedoitWolf

    from loupe_dl_anomaly.data import prepare, read_image
    from loupe_trainer.anomaly.model import GaussTerm, PatchFeatures, ledoit_wolf, mahalanobis64
    from loupe_trainer.backbone import build_backbone
    from loupe_trainer.common import export_onnx
    from loupe_trainer.samples import make_texture_dataset

    data = make_texture_dataset(tmp_path, "fabric", n_train=40, n_test_good=4, n_test_defect=2, size=48, seed=1)
    paths = sorted((data / "train" / "good").glob("*.png")) + sorted((data / "test").rglob("*.png"))
    x = torch.from_numpy(np.concatenate([prepare(read_image(p), (64, 64)) for p in paths]))
    torch.manual_seed(0)
    bb = build_backbone(pretrained=True)
    feats = PatchFeatures(bb, ("stage3",), global_stage="stage6", global_size=96, gauss_size=96).eval()
    with torch.no_grad():
        _, g, h = feats.extract(x)
        alone = PatchFeatures(bb, ("stage3",), global_stage="stage6", global_size=96).eval().extract(x)
    # one shared 96 px pass for both views: the kNN descriptor is unchanged by the Gaussian term's
    assert torch.allclose(alone[1], g, atol=1e-6) and h.shape == (len(paths), 1280)
    assert torch.allclose(h.norm(dim=1), torch.ones(len(paths)), atol=1e-5)
    assert feats.gauss_view_size((1, 3, 64, 64)) == (96, 96) and feats.gauss_view_size((1, 3, 96, 96)) is None
    # the Gaussian view through its own trunk (Lite1, the default since session 15), square-rooted, normalised
    from loupe_trainer.backbone import normalize

    l1 = build_backbone(pretrained=True, variant="lite1")
    own = PatchFeatures(bb, ("stage3",), global_stage="stage6", gauss_size=96, gauss_backbone=l1,
                        gauss_power=0.5).eval()
    with torch.no_grad():
        h1 = own.extract(x[:4])[2]
        up = torch.nn.functional.interpolate(x[:4], size=(96, 96), mode="bilinear", align_corners=False)
        ref1 = l1.stages(normalize(up), ["head"])["head"].mean(dim=(2, 3)).sqrt()
    assert torch.allclose(h1, torch.nn.functional.normalize(ref1, dim=1), atol=1e-5)
    hb, hq = h[:30].double().numpy(), h[30:].double().numpy()
    fit = ledoit_wolf(h[:30])
    lw = LedoitWolf().fit(hb)
    assert abs(fit["shrinkage"] - lw.shrinkage_) < 1e-9 and 0 < fit["shrinkage"] < 1
    d = hq - lw.location_
    ref = np.sqrt(np.einsum("ij,jk,ik->i", d, lw.precision_, d))
    assert np.allclose(mahalanobis64(fit, hq).numpy(), ref, rtol=1e-9)
    term = GaussTerm(fit, mu=float(ref.mean()), scale=0.5).eval()
    assert term.gauss_a.shape == (1280, 30)
    onnx_path = export_onnx(term, h[30:31], tmp_path / "gauss.onnx", ["h"], ["term"], dynamic_batch=True)
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(
        None, {"h": h[30:].numpy()})[0]
    # float32 in the graph: |h - mean|^2 / iso - |(h - mean) A|^2 against the full precision matrix in float64
    assert np.allclose(got, 0.5 * (ref - ref.mean()), atol=2e-4 * ref.mean())
    assert ref.max() / ref.min() > 1.05   # the distances differ: the test images are not all alike

    # the feature graphs: a Gaussian view of the kNN view's size shares its trunk pass; the defaults (kNN view
    # 128 px, Gaussian 224 px) add one pass to the head (a Resize and 49 convolutions: stem, 16 blocks, head)
    import onnx

    from loupe_trainer.anomaly.model import FeatureGraph
    from loupe_trainer.anomaly.trainer import AnomalyParams, feature_outputs, make_features

    def ops(module, name):
        path = export_onnx(FeatureGraph(module), x[:1], tmp_path / f"{name}.onnx", ["image"], feature_outputs(module))
        g = onnx.load(str(path)).graph
        return len(g.output), sum(n.op_type == "Resize" for n in g.node), sum(n.op_type == "Conv" for n in g.node)

    o1, r1, c1 = ops(PatchFeatures(bb, ("stage3",), global_stage="stage6", global_size=96), "alone")
    o2, r2, c2 = ops(feats, "shared")
    assert (o1, o2) == (2, 3) and r1 == r2 and c1 == c2
    p = AnomalyParams()
    o3, r3, c3 = ops(make_features(p.model_copy(update={"global_gauss_weight": 0.0}), bb, True), "default0")
    o4, r4, c4 = ops(make_features(p.model_copy(update={"global_gauss_backbone": "same"}), bb, True), "same")
    assert (o3, o4) == (2, 3) and r4 == r3 + 1 and c4 == c3 + 49
    # the default since session 15: the Gaussian view through its own Lite1 trunk (stem, 21 blocks, head: 64
    # convolutions), pooled, square-rooted and normalised
    lite1 = build_backbone(pretrained=False, variant="lite1")
    n1 = sum(isinstance(m, torch.nn.Conv2d) for m in lite1.modules())
    o5, r5, c5 = ops(make_features(p, bb, True), "default")
    assert (o5, r5, c5) == (3, r3 + 1, c3 + n1) and n1 == 64


def test_small_image_model_with_global_views_exports(tmp_path):
    """48 px images: auto input 96 px and the global term on; its second view at 128 px and the Gaussian term's
    224 px view (the defaults) are in the exported graph, which passes the export parity and runs in the
    torch-free runtime."""
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
    ga = gl["gauss"]
    assert ga["size"] == [224, 224] and ga["stage"] == "head" and ga["weight"] == 2.0 and ga["dim"] == 1280
    assert ga["backbone"] == "efficientnet_lite1" and ga["power"] == 0.5
    assert ga["n_images"] == 12 - 5 and ga["rank"] == 7 and 0 < ga["shrinkage"] <= 1 and ga["scale"] > 0
    assert meta["memory_bank"]["gauss_bytes"] == (1280 * 7 + 1280) * 4
    # a texture is not aligned: no position channels (issue 18, session 15)
    assert meta["feature"]["position"]["on"] is False and meta["feature"]["position"]["aligned_share"] < 0.5
    assert max(meta["parity"]["max_abs_diff"].values()) < 2e-3
    res = AnomalyRuntime().predictor(Bundle.load(out))(read_image(data / "test" / "good" / "000.png"))
    assert np.isfinite(res["score"])
    # pruning reads the main Lite0 trunk out of a graph that also runs the Lite1 one (whose deeper blocks once
    # broke it); the teacher it rebuilds is the exact pretrained trunk, the pruned child keeps the Lite1 view
    import torch
    from loupe_trainer.backbone import build_backbone
    from loupe_trainer.optimize.prune import backbone_from_onnx

    x = torch.randn(1, 3, 96, 96)

    def teacher_found(model, stage: str) -> set[str]:
        """The trunk prune reads out of ``model`` equals the pretrained Lite0 up to ``stage``; its modules."""
        teacher, found = backbone_from_onnx(model, "lite0")
        with torch.no_grad():
            a = teacher.stages(x, (stage,))[stage]
            b = build_backbone(pretrained=True).eval().stages(x, (stage,))[stage]
        assert float((a - b).abs().max()) < 1e-3 * float(b.abs().max())
        return found

    teacher_found(out / "model.onnx", "head")
    pruned = tmp_path / "pruned"
    r = run_loupe("optimize", out, "--method", "prune", "--out", pruned, "--steps", "2", "-q", env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    pm = bundle_meta(pruned)
    assert pm["feature"]["global"]["gauss"]["backbone"] == "efficientnet_lite1"
    assert pm["optimization"]["method"] == "prune" and pm["optimization"]["widths"]["block7"] == [480, 288]
    res = AnomalyRuntime().predictor(Bundle.load(pruned))(read_image(data / "test" / "good" / "000.png"))
    assert np.isfinite(res["score"])
    # without the second view the main trunk never runs its stage 7 and head: the Lite1 trunk's unsuffixed
    # modules of those names must not be taken for them
    out0 = tmp_path / "b0"
    r = run_loupe("train", "anomaly", data, "--out", out0, "--max-bank", "256", "--global-size", "0", "-q", env=ENV,
                  timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    found = teacher_found(out0 / "model.onnx", "stage6")
    assert "_conv_head" not in found and "_blocks.15/_expand_conv" not in found and "_blocks.14/_project_conv" in found

