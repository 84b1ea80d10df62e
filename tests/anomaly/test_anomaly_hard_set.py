"""The hard development set of issue 18 (generator only: no training here, it is for benchmarks) and the
colour channels of the patch features."""
from __future__ import annotations

import cv2
import numpy as np

from loupe_dl_anomaly.data import discover
from loupe_trainer.samples_hard import HARD_CATEGORIES, HARD_DEFECTS, STRENGTH, _LUMA, hard_image, make_hard_dataset


def test_hard_set_layout_masks_and_strength(tmp_path):
    for cat in HARD_CATEGORIES:
        root = make_hard_dataset(tmp_path / "a", cat, n_train=3, n_test_good=2, n_test_defect=1, size=96, seed=4)
        ds = discover(root, need_train=True, need_test=True)   # the runtime reads it as MVTec layout
        assert len(ds.train) == 3 and ds.has_masks
        assert sorted({s.kind for s in ds.test}) == sorted(("good",) + HARD_DEFECTS)
        for d in HARD_DEFECTS:
            mask = cv2.imread(str(root / "ground_truth" / d / "000_mask.png"), cv2.IMREAD_GRAYSCALE)
            # small defects: a few pixels to a few percent of the image
            assert 0 < (mask > 0).sum() < 0.05 * mask.size, (cat, d)
        # the training and good test images do not depend on the defect strength
        other = make_hard_dataset(tmp_path / "b", cat, 3, 2, 1, 96, seed=4, strength=2 * STRENGTH[cat])
        for sub in ("train/good/002.png", "test/good/001.png"):
            assert np.array_equal(cv2.imread(str(root / sub)), cv2.imread(str(other / sub)))
        # a test set at another strength (bench --strengths): training images drawn, not written; same good images
        test_only = make_hard_dataset(tmp_path / "c", cat, 3, 2, 1, 96, seed=4, strength=2 * STRENGTH[cat],
                                      write_train=False)
        assert not (test_only / "train").exists()
        good = "test/good/001.png"
        assert np.array_equal(cv2.imread(str(root / good)), cv2.imread(str(test_only / good)))
        stronger = cv2.imread(str(other / "test" / "hole" / "000.png")).astype(int)
        weaker = cv2.imread(str(root / "test" / "hole" / "000.png")).astype(int)
        assert np.abs(stronger - weaker).max() > 5


def test_stain_changes_colour_not_luminance():
    img, mask = hard_image("wood", np.random.default_rng(1), 128, "stain", strength=2.0, half=1)
    good, _ = hard_image("wood", np.random.default_rng(1), 128, None, half=1)
    # the same surface draw: the stain function runs after the surface, the noise after it differs,
    # so compare smoothed images inside the mask
    a = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 2)[mask]
    b = cv2.GaussianBlur(good.astype(np.float32), (0, 0), 2)[mask]
    dlum = np.abs((a - b) @ _LUMA).mean()
    dcol = np.abs(a - b).max(1).mean()
    assert dcol > 4 * dlum


def test_chroma_channels_ignore_gain_and_see_hue():
    import torch

    from loupe_trainer.anomaly.model import PatchFeatures
    from loupe_trainer.backbone import build_backbone

    f = PatchFeatures(build_backbone(pretrained=False), ("stage3",), 3, color=1.0).eval()
    assert f.dim == 40 + 2
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(60, 180, (1, 3, 64, 64)).astype(np.float32))
    c1 = f.chroma(x, (8, 8))
    c2 = f.chroma(x * 1.2 + 0.0, (8, 8))
    assert c1.shape == (1, 2, 8, 8)
    assert float((c1 - c2).abs().max()) < 0.01           # a change of gain barely moves it
    y = x.clone()
    y[:, 0] += 20.0
    y[:, 1] -= 20.0                                         # redder, same mean brightness
    assert float((f.chroma(y, (8, 8)) - c1)[:, 0].mean()) > 0.2


def test_train_with_colour_and_augmentation(tmp_path):
    """The opt-in parameters and a preset go through the CLI, the export (parity checked there) and the runtime."""
    from anomaly_helpers import ENV, bundle_meta

    from host import Bundle
    from host.testing import run_loupe
    from loupe_dl_anomaly.data import read_image
    from loupe_dl_anomaly.runtime import AnomalyRuntime
    from loupe_trainer.samples import make_texture_dataset

    data = make_texture_dataset(tmp_path, "fabric", n_train=10, n_test_good=1, n_test_defect=1, size=64, seed=2)
    out = tmp_path / "b"
    # the balanced preset (the Lite2 trunk) with explicit options on top: the explicit ones win
    r = run_loupe("train", "anomaly", data, "--out", out, "--preset", "balanced", "--image-size", "64", "--color",
                  "50", "--augment", "flip_rot", "--max-bank", "256", "-q", env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = bundle_meta(out)
    assert meta["params"]["preset"] == "balanced" and meta["feature"]["backbone"] == "efficientnet_lite2"
    assert meta["feature"]["dim"] == 48 + 88 + 2 and meta["feature"]["color"] == 50
    assert max(meta["parity"]["max_abs_diff"].values()) < 2e-3
    # 10 images: 5 held out, 5 in the bank, each in 6 views (flips, rotations, transpose) of 8 x 8 cells
    assert meta["training"]["n_bank_images"] == 5
    assert meta["memory_bank"]["n_patches"] == 5 * 6 * 8 * 8 and meta["memory_bank"]["bank_size"] <= 256
    res = AnomalyRuntime().predictor(Bundle.load(out))(read_image(data / "test" / "good" / "000.png"))
    assert np.isfinite(res["score"])


def test_presets_fill_unset_fields_only():
    from loupe_trainer.anomaly.trainer import PRESETS, AnomalyParams

    assert AnomalyParams().preset == "fast" and PRESETS["fast"] == {}
    for name, values in PRESETS.items():
        p = AnomalyParams(preset=name)
        assert all(getattr(p, k) == v for k, v in values.items())
    assert AnomalyParams(preset="accurate", backbone="lite0").backbone == "lite0"   # explicit wins


def test_discriminator_scores_noise_higher_and_exports(tmp_path):
    """The opt-in SimpleNet-style discriminator (issue 18): it ranks noisy copies of good features above the
    good ones, and a model with it goes through the CLI, the export (parity checked there) and the runtime."""
    import torch
    from anomaly_helpers import ENV, bundle_meta

    from host import Bundle
    from host.testing import run_loupe
    from loupe_dl_anomaly.data import read_image
    from loupe_dl_anomaly.runtime import AnomalyRuntime
    from loupe_trainer.anomaly.model import train_discriminator
    from loupe_trainer.samples import make_texture_dataset

    g = torch.Generator().manual_seed(0)
    good = torch.randn(4000, 16, generator=g) @ torch.randn(16, 16, generator=g) * 3.0 + 5.0
    disc, info = train_discriminator(good, noise=1.0, steps=150, hidden=32, batch=256)
    scale = info["feature_scale"]
    test = good[:500]
    with torch.no_grad():
        s_good, s_noisy = disc(test), disc(test + torch.randn(test.shape, generator=g) * 2.0 * scale)
    assert float((s_noisy > s_good).float().mean()) > 0.9

    data = make_texture_dataset(tmp_path, "fabric", n_train=10, n_test_good=1, n_test_defect=1, size=64, seed=2)
    out = tmp_path / "b"
    r = run_loupe("train", "anomaly", data, "--out", out, "--image-size", "64", "--max-bank", "256",
                  "--discriminator", "1", "--disc-steps", "30", "--disc-hidden", "32", "-q", env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = bundle_meta(out)
    assert meta["graph"]["discriminator"]["weight"] == 1 and meta["graph"]["discriminator"]["hidden"] == 32
    assert max(meta["parity"]["max_abs_diff"].values()) < 2e-3
    res = AnomalyRuntime().predictor(Bundle.load(out))(read_image(data / "test" / "good" / "000.png"))
    assert np.isfinite(res["score"])
