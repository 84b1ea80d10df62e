"""Augmentation keeps masks aligned; the inference plugin never needs torch; dataset analyze on masks."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np

from host.testing import run_loupe

ENV = {"OMP_NUM_THREADS": "2"}


def test_augmentation_moves_image_and_mask_together():
    from loupe_trainer.segment.augment import SegAugment

    rng = np.random.default_rng(0)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 5:40] = 1
    mask[40:60, 30:34] = 2
    img = np.zeros((64, 64, 3), np.uint8)
    img[..., 0] = mask * 100          # the image encodes its own mask
    aug = SegAugment(crop=48, brightness=0, contrast=0, gamma=0, channel_gain=0, noise=0)
    seen = 0
    for _ in range(30):
        a, m = aug(rng, img, mask)
        assert a.shape[:2] == m.shape == (48, 48) and m.dtype == np.uint8
        assert set(np.unique(m)) <= {0, 1, 2}
        inner = cv2.erode((m > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # off the blended edges
        assert np.all(np.abs(a[..., 0][inner].astype(int) - 100 * m[inner].astype(int)) <= 1)
        seen += int(m.any())
    assert seen >= 20   # crops are biased towards defects


def test_copy_paste_keeps_image_and_mask_aligned():
    from loupe_trainer.segment.augment import DefectBank

    src = np.full((64, 64, 3), 100, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:18, 10:18] = 2                 # a bright square of class 2
    mask[40, 5:30] = 1                     # a 1-pixel line of class 1
    src[mask > 0] = 200
    target = np.full((64, 64, 3), 100, np.uint8)
    for mode in ("residual", "pixels"):
        bank = DefectBank([src], [mask], margin=3, mode=mode)
        assert len(bank) == 2 and sorted(int(p.labels.max()) for p in bank.pieces) == [1, 2]
        rng = np.random.default_rng(1)
        for _ in range(20):
            img, lab = bank.paste(rng, target, np.zeros((64, 64), np.uint8), 1)
            assert img.shape == target.shape and lab.shape == (64, 64) and lab.dtype == np.uint8
            k = int(lab.max())
            assert k in (1, 2) and set(np.unique(lab)) == {0, k}
            assert int((lab > 0).sum()) == int((mask == k).sum())      # flips / turns keep the piece whole
            assert np.all(np.abs(img[lab > 0].astype(int) - 200) <= 3)  # the labels sit on the pasted defect
            far = cv2.dilate((lab > 0).astype(np.uint8), np.ones((11, 11), np.uint8)) == 0
            assert np.all(img[far] == 100)                             # nothing changed beyond the margin
        assert bank.paste(rng, target, np.zeros((64, 64), np.uint8), 0)[0] is target


def test_label_map_takes_the_best_defect_class_above_the_threshold():
    """The per-frame labelling against its definition: background unless 1 - p(bg) >= threshold, then the defect
    class of largest probability (the first of equals, as argmax)."""
    from loupe_dl_segment.model import label_map

    rng = np.random.default_rng(5)
    p = rng.random((5, 41, 29)).astype(np.float32)
    p[3, :6] = p[2, :6]                 # ties go to the lower class
    p /= p.sum(axis=0, keepdims=True)
    for threshold in (0.0, 0.5, 0.8, 1.0):
        want = np.where(1.0 - p[0] >= threshold, p[1:].argmax(axis=0) + 1, 0)
        assert np.array_equal(label_map(p, threshold), want)
    two = np.stack([1 - p[1], p[1]])
    assert np.array_equal(label_map(two, 0.3), (p[1] >= 0.3).astype(np.uint8))


def test_find_regions_against_scipy_labelling():
    """Regions per class against an independent 8-connected labelling (scipy.ndimage): areas, boxes, the class's
    largest probability inside each region, and regions under min_area cleared from the labels. Also at a size
    whose regions need 32-bit labels."""
    from scipy import ndimage

    from loupe_dl_segment.model import find_regions

    rng = np.random.default_rng(3)
    for shape in ((37, 53), (520, 520)):         # 16-bit and 32-bit labels inside
        labels = (rng.random(shape) < 0.15).astype(np.uint8) * rng.integers(1, 4, shape).astype(np.uint8)
        labels[5:12, 7:20] = 2                                         # one larger region among the specks
        probs = rng.random((4,) + shape).astype(np.float32)
        out, regions = find_regions(labels, probs, 3, min_area=2)
        want = []
        for k in (1, 2, 3):
            cc, _ = ndimage.label(labels == k, structure=np.ones((3, 3)))
            for i, (ys, xs) in enumerate(ndimage.find_objects(cc), 1):
                sub = cc[ys, xs] == i
                if sub.sum() >= 2:
                    want.append((k, int(sub.sum()), (xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start),
                                 float(probs[k][ys, xs][sub].max())))
                else:
                    assert np.all(out[ys, xs][sub] == 0)             # too small: cleared
        got = sorted((r.cls, r.area, r.bbox, r.max_prob) for r in regions)
        assert got == sorted(want) and len(got) > 5
        assert labels[5, 7] == 2 and out[5, 7] == 2                     # the input labels are not changed


def test_inference_plugin_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['loupe_trainer'] = None\n"
            "import loupe_dl_segment.plugin, loupe_dl_segment.tool, loupe_dl_segment.model, "
            "loupe_dl_segment.evaluate, loupe_dl_segment.data\n"
            "from importlib.metadata import requires\n"
            "reqs = ' '.join(requires('loupe-dl-segment'))\n"
            "assert 'torch' not in reqs and 'loupe-trainer' not in reqs, reqs\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_dataset_analyze_reports_pixel_share_and_bad_masks(seg_data, tmp_path):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(seg_data, data)
    masks = sorted((data / "train" / "masks").glob("*scratch*"))
    cv2.imwrite(str(masks[0]), np.zeros((50, 96), np.uint8))             # wrong size
    cv2.imwrite(str(masks[1]), np.full((96, 96), 5, np.uint8))          # value above the 3 classes
    cv2.imwrite(str(data / "train" / "masks" / "orphan.png"), np.zeros((96, 96), np.uint8))
    r = run_loupe("dataset", "analyze", data, "--json", "--out", tmp_path / "a", env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout)
    seg = d["segmentation"]
    assert seg["classes"] == ["scratch", "stain", "dent"]
    share = seg["pixel_share"]["all"]
    assert abs(sum(share.values()) - 1) < 1e-9 and share["background"] > 0.9
    assert all(share[c] > 0 for c in ("scratch", "stain", "dent"))
    probs = {p["file"]: p["problem"] for p in seg["mask_problems"]}
    assert "mask is 96x50" in probs[f"train/masks/{masks[0].name}"]
    assert "pixel value 5" in probs[f"train/masks/{masks[1].name}"]
    assert "no image" in probs["train/masks/orphan.png"]
    assert seg["splits"]["test"]["good"] == 4 and seg["splits"]["test"]["defective"] == 9
    # identical all-zero masks of good images are not reported as duplicates
    assert not any(all("/masks/" in f for f in g["files"]) for g in d["duplicates"])
    assert not any("/masks/" in m["file"] for m in d["channel_mismatches"])   # gray masks beside colour images
    r = run_loupe("dataset", "analyze", data, "--out", tmp_path / "a", "--strict", env=ENV)
    assert r.returncode == 1 and "pixel share per class" in r.stdout and "orphan.png" in r.stdout


def test_plateau_stops_on_the_smoothed_curve_not_on_a_noisy_peak():
    from loupe_trainer.segment.trainer import Plateau

    def stop_epoch(scores, **kw):
        p = Plateau(**kw)
        for e, s in enumerate(scores, 1):
            if p.update(s):
                return e
        return None

    rising = [min(0.6, 0.05 * e) for e in range(1, 41)]          # rises to 0.6 by epoch 12, then flat
    assert stop_epoch(rising, smooth=0.7, patience=6, min_epochs=5, min_delta=0.005) is not None
    e = stop_epoch(rising, smooth=0.7, patience=6, min_epochs=5, min_delta=0.005)
    assert 18 <= e <= 32     # after the smoothed curve has caught up with the plateau, plus the patience
    assert stop_epoch(rising, smooth=0.7, patience=6, min_epochs=35, min_delta=0.005) == 35         # never before min_epochs
    assert stop_epoch([0.1 * e for e in range(40)], smooth=0.7, patience=6, min_epochs=5, min_delta=0.005) is None  # still rising
    # one noisy early peak (epoch 4) then a slow climb: the raw curve would stop at epoch 10, the smoothed one
    # keeps going while the average still rises
    noisy = [0.1, 0.2, 0.25, 0.6, 0.3, 0.32, 0.34, 0.36, 0.38, 0.40] + [0.40 + 0.01 * e for e in range(1, 21)]
    assert stop_epoch(noisy, smooth=0.0, patience=6, min_epochs=1, min_delta=0.005) == 10           # no smoothing: fooled
    assert stop_epoch(noisy, smooth=0.7, patience=6, min_epochs=1, min_delta=0.005) is None
    p = Plateau(smooth=0.5, patience=3, min_epochs=1)
    p.update(0.4)
    assert abs(p.value - 0.4) < 1e-12      # bias-corrected: the first value is the score itself


def test_lovasz_and_runtime_space_losses():
    import torch

    from loupe_trainer.segment.trainer import loss_fn, lovasz_softmax

    # for hard (0/1) probabilities the Lovasz-softmax loss of a class is 1 - its IoU
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2] = 1                                  # 8 pixels of class 1
    p = torch.zeros(1, 2, 4, 4)
    p[0, 1, :3] = 1                                    # 12 predicted: IoU 8 / 12
    p[0, 0] = 1 - p[0, 1]
    assert abs(float(lovasz_softmax(p, target)) - (1 - 8 / 12)) < 1e-6
    assert float(lovasz_softmax(p, torch.zeros_like(target))) == 0.0      # no defect in the batch
    # the runtime-space loss (stride-4 softmax upsampled) is finite, differentiable, and differs from the
    # logit-space one on the same stride-4 logits
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    y = torch.randint(0, 4, (2, 32, 32))
    w = torch.ones(4)
    lp = loss_fn(logits, y, w, 1.0, 0.5, prob_stride=4)
    lp.backward()
    assert torch.isfinite(lp) and logits.grad is not None and logits.grad.abs().sum() > 0
    up = torch.nn.functional.interpolate(logits.detach(), size=(32, 32), mode="bilinear", align_corners=False)
    assert abs(float(loss_fn(up, y, w, 1.0, 0.5)) - lp.item()) > 1e-4


def test_deep_stage_builds_only_the_blocks_it_uses():
    import torch

    from loupe_trainer.segment.net import SegNet
    from loupe_trainer.segment.trainer import SegmentParams

    x = torch.zeros(1, 3, 64, 64)
    for deep, blocks, ch in (("stage4", 8, 80), ("stage5", 11, 112)):
        net = SegNet(4, width=16, pretrained=False, deep_stage=deep).eval()
        assert len(net.encoder._blocks) == blocks and net.lat16.in_channels == ch
        with torch.no_grad():
            assert net(x, upsample=False).shape == (1, 4, 16, 16) and net(x).shape == (1, 4, 64, 64)
    assert SegmentParams().deep_stage == "stage4"      # the default since session 7 (notes/issue-16.md)
    try:
        SegmentParams(deep_stage="stage6")
    except ValueError as exc:
        assert "deep_stage" in str(exc)
    else:
        raise AssertionError("stage6 accepted")
