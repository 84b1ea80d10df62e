"""Tiling: a small defect on a large image is found by a model trained and run on tiles.

The 384 x 384 images carry a spot about 8 px across; resized whole to a 128 px model input it shrinks to 3 px.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from host.testing import run_loupe

from anomaly_helpers import ENV, bundle_meta

SIZE = 384


def small_spot(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Darken a soft spot of radius ~4 px in place; return its exact mask."""
    h, w = img.shape[:2]
    cy, cx = rng.uniform(0.15, 0.85, 2) * (h, w)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((y - cy) ** 2 + (x - cx) ** 2) / 4.0 ** 2
    alpha = np.clip(1.3 - r2, 0, 1) ** 0.7
    out = img.astype(np.float32) - 28.0 * alpha[..., None]
    img[...] = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return alpha > 0.15


@pytest.fixture(scope="module")
def large_data(tmp_path_factory) -> Path:
    from loupe_trainer.samples import texture_image

    root = tmp_path_factory.mktemp("large")
    rng = np.random.default_rng(11)
    for sub, n in (("train/good", 8), ("test/good", 3), ("test/spot", 3)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            img, _ = texture_image("brushed_metal", rng, SIZE)
            if sub == "test/spot":
                mask = small_spot(img, rng)
                (root / "ground_truth" / "spot").mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / "ground_truth" / "spot" / f"{i:03d}_mask.png"), mask.astype(np.uint8) * 255)
            cv2.imwrite(str(root / sub / f"{i:03d}.png"), img)
    return root


def _train_eval(data: Path, out: Path, *extra: str) -> dict:
    r = run_loupe("train", "anomaly", data, "--out", out / "model", "--image-size", "128", "--max-bank", "1024",
                  "-q", *extra, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_loupe("eval", out / "model", data, "--json", "--out", out / "eval", env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def tiled_run(large_data, tmp_path_factory) -> tuple[Path, dict]:
    """A model trained on 128 px tiles, and its evaluation: (folder with model/ and eval/, eval JSON)."""
    out = tmp_path_factory.mktemp("tiled")
    return out, _train_eval(large_data, out, "--tile", "128")


def test_tiling_finds_small_defect(large_data, tiled_run):
    """Small defects keep their recall with blended (seamless) tile maps."""
    from host import Bundle
    from loupe_dl_anomaly.runtime import AnomalyModel

    tmp_path, tiled = tiled_run  # the folder holding model/ and eval/, the eval JSON
    meta = bundle_meta(tmp_path / "model")
    assert meta["tiling"]["tile"] == [128, 128] and meta["tiling"]["n_training_tiles"] == 8 * 16
    assert meta["input_size"] == [128, 128]
    assert tiled["image_auroc"] == 1.0
    assert tiled["pixel_auroc"] > 0.95
    assert tiled["confusion"]["tp"] >= 2 and tiled["confusion"]["fp"] <= 1

    # the stitched map is at the image's resolution and peaks on the spot
    model = AnomalyModel(Bundle.load(tmp_path / "model"))
    img = cv2.imread(str(sorted((large_data / "test" / "spot").glob("*.png"))[0]))
    mask = cv2.imread(str(large_data / "ground_truth" / "spot" / "000_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    amap, score = model.raw(img)
    assert amap.shape == (SIZE, SIZE)
    py, px = np.unravel_index(np.argmax(amap), amap.shape)
    ys, xs = np.nonzero(mask)
    assert abs(py - ys.mean()) < 16 and abs(px - xs.mean()) < 16
    assert score > model.threshold
    # the eval report's panels show the tiled map beside the ground truth
    vis = cv2.imread(str(next((tmp_path / "eval" / "heatmaps").glob("spot_*.png"))))
    assert vis is not None and vis.shape[1] > 600


def _seam_step(amap: np.ndarray, starts: list[int], tile: int) -> float:
    """How much larger the map's column-to-column change is across tile borders than elsewhere (1 = no seam)."""
    w = amap.shape[1]
    borders = sorted({s for s in starts if s > 0} | {s + tile for s in starts if s + tile < w})
    d = np.abs(np.diff(amap.astype(np.float64), axis=1)).mean(axis=0)  # d[c] = change between c and c+1
    at = np.array([d[b - 1] for b in borders])
    rest = np.delete(d, [b - 1 for b in borders] + [b - 2 for b in borders] + [b for b in borders if b < len(d)])
    return float(at.mean() / np.median(rest))


def test_blended_tiles_leave_no_seam(large_data, tiled_run):
    """A good image's stitched map shows no step at tile borders with the raised-cosine blend; the old
    maximum stitching does."""
    from host import Bundle
    from loupe_dl_anomaly.data import to_rgb8
    from loupe_dl_anomaly.runtime import AnomalyModel
    from loupe_dl_anomaly.tiling import axis_starts, score_tiled

    model = AnomalyModel(Bundle.load(tiled_run[0] / "model"))
    starts = axis_starts(SIZE, 128, model.overlap)
    hann, maxed = [], []
    for p in sorted((large_data / "test" / "good").glob("*.png")):
        rgb = to_rgb8(cv2.imread(str(p)))
        amap, score = model.raw(cv2.imread(str(p)))
        old, old_score, _ = score_tiled(model._run_rgb, rgb, model.tile, model.overlap, blend="max")
        assert score == old_score  # the image score is unchanged: the maximum over tiles
        hann.append(max(_seam_step(amap, starts, 128), _seam_step(amap.T, starts, 128)))
        maxed.append(max(_seam_step(old, starts, 128), _seam_step(old.T, starts, 128)))
    print("seam step, hann:", np.round(hann, 2), "max:", np.round(maxed, 2))
    assert max(hann) < 1.6
    assert np.median(maxed) > 1.5 * np.median(hann)


def test_tile_boxes_cover_the_image():
    from loupe_dl_anomaly.tiling import axis_starts, tile_boxes

    assert axis_starts(512, 128, 0.25) == [0, 96, 192, 288, 384]
    assert axis_starts(100, 128, 0.25) == [0]
    boxes = tile_boxes(300, 700, (128, 128), 0.5)
    cover = np.zeros((300, 700), int)
    for y0, x0, y1, x1 in boxes:
        assert y1 - y0 == 128 and x1 - x0 == 128
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
