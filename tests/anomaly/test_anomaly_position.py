"""Position channels (issue 18, session 15): ``weight x (row, column)`` of the feature cell appended to each patch
feature of a small, aligned image, so that a patch is compared with the good images' patches at the same place.
The alignment rule on real images (Fashion-MNIST garments are aligned, a fabric texture is not), the search's
distances against brute force, and a model through the CLI, the export parity and the runtime."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _fmnist(label: int) -> np.ndarray:
    from loupe_trainer.datasets import fashion_mnist_file, read_idx

    try:
        x = read_idx(fashion_mnist_file("t10k-images-idx3-ubyte", FMNIST))
        y = read_idx(fashion_mnist_file("t10k-labels-idx1-ubyte", FMNIST))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return x[y == label]


def _features(images: np.ndarray, size: int):
    """Patch features of the default small-image model (stages 3 + 4 of the ImageNet trunk) of gray or RGB images
    resized to ``size`` px."""
    import cv2
    import torch

    from loupe_trainer.anomaly.model import PatchFeatures
    from loupe_trainer.backbone import build_backbone

    feats = PatchFeatures(build_backbone(pretrained=True), ("stage3", "stage4")).eval()
    x = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in images]).astype(np.float32)
    x = np.repeat(x[:, None], 3, axis=1) if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    with torch.no_grad():
        return feats(torch.from_numpy(np.ascontiguousarray(x)))


def test_alignment_separates_garments_from_a_texture(tmp_path):
    """Held-out garments find their nearest good patch at their own cell (most of them; chance is 1 / 64); the
    patches of a generated fabric texture find it anywhere."""
    from loupe_dl_anomaly.data import read_image
    from loupe_trainer.anomaly.model import position_alignment
    from loupe_trainer.anomaly.trainer import ALIGNED_SHARE
    from loupe_trainer.samples import make_texture_dataset

    for label in (0, 6):      # T-shirt, Shirt
        f = _features(_fmnist(label)[:48], 64)
        share, median = position_alignment(f[:40], f[40:])
        assert f.shape[1:3] == (8, 8) and share > 0.65 and median > 0, (label, share)
    data = make_texture_dataset(tmp_path, "fabric", n_train=48, n_test_good=1, n_test_defect=1, size=48, seed=3)
    imgs = np.stack([read_image(p) for p in sorted((data / "train" / "good").glob("*.png"))])
    f = _features(imgs, 96)
    share, _ = position_alignment(f[:40], f[40:])
    assert share < 0.3 < ALIGNED_SHARE


def test_position_channels_distance_is_the_penalised_nearest_patch():
    """With position channels the search finds min over the bank of sqrt(|f - b|^2 + w^2 |p - q|^2), p and q the
    cells (the exact search and the two-stage search of the default)."""
    import torch

    from loupe_trainer.anomaly.model import PatchCore, PatchFeatures, position_grid, with_position
    from loupe_trainer.backbone import build_backbone

    g = torch.Generator().manual_seed(0)
    n, h, w, d, lam = 6, 4, 5, 16, 1.5
    fb = torch.randn(n, h, w, d, generator=g)
    fq = torch.randn(3, h, w, d, generator=g)
    bank = with_position(fb, lam).reshape(-1, d + 2)
    feats = PatchFeatures(build_backbone(pretrained=False), ("stage3",))
    pq = position_grid(h, w, 1.0)
    pos = pq.repeat(n, 1)
    want = torch.stack([((fb.reshape(-1, d) - x) ** 2).sum(1).add(lam * lam * ((pos - pq[i % (h * w)]) ** 2).sum(1))
                        .min().sqrt() for i, x in enumerate(fq.reshape(-1, d))]).reshape(3, 1, h, w)
    exact = PatchCore(feats, bank, position=lam, map_size=(h, w)).patch_distances(fq)
    assert torch.allclose(exact, want, rtol=1e-4, atol=1e-4)
    two = PatchCore(feats, bank, position=lam, map_size=(h, w), search_dim=8, search_groups=2)
    got = two.patch_distances(fq)
    assert torch.all(got >= want - 1e-4) and float((got - want).abs().le(1e-4).float().mean()) > 0.5
    with pytest.raises(ValueError):
        PatchCore(feats, bank, position=lam)


def test_cli_model_with_position_channels(tmp_path):
    """28 px garments: the auto rule turns the channels on (the weight is twice the held-out patches' median
    nearest distance), the bank carries two more dimensions, the export passes its parity check and the
    torch-free runtime scores; ``--position off`` gives the model without them."""
    import cv2

    from anomaly_helpers import ENV, bundle_meta

    from host import Bundle
    from host.testing import run_loupe
    from loupe_dl_anomaly.data import read_image
    from loupe_dl_anomaly.runtime import AnomalyRuntime

    x = _fmnist(1)[:30]                     # trousers
    for sub, sel in (("train/good", x[:24]), ("test/good", x[24:])):
        (tmp_path / "d" / sub).mkdir(parents=True)
        for i, im in enumerate(sel):
            cv2.imwrite(str(tmp_path / "d" / sub / f"{i:03d}.png"), im)
    out = tmp_path / "b"
    r = run_loupe("train", "anomaly", tmp_path / "d", "--out", out, "--max-bank", "256", env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "position channels:" in r.stdout + r.stderr
    meta = bundle_meta(out)
    pos = meta["feature"]["position"]
    assert pos["on"] and pos["mode"] == "auto" and pos["aligned_share"] >= 0.5
    assert pos["weight_per_cell"] == pytest.approx(2.0 * pos["median_nn"], rel=1e-5)
    assert meta["memory_bank"]["dim"] == meta["feature"]["dim"] + 2
    assert max(meta["parity"]["max_abs_diff"].values()) < 2e-3
    res = AnomalyRuntime().predictor(Bundle.load(out))(read_image(tmp_path / "d" / "test" / "good" / "000.png"))
    assert np.isfinite(res["score"])

    off = tmp_path / "off"
    r = run_loupe("train", "anomaly", tmp_path / "d", "--out", off, "--max-bank", "256", "--position", "off", "-q",
                  env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = bundle_meta(off)
    assert meta["feature"]["position"] is None and meta["memory_bank"]["dim"] == meta["feature"]["dim"]
