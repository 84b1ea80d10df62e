"""Train through the CLI on generated textures; evaluate; thresholds with and without defective images."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from host import Bundle
from host.testing import run_loupe

from anomaly_helpers import ENV, TRAIN_ARGS, bundle_meta


def test_eval_json_keys_and_accuracy(anomaly_bundle, anomaly_eval):
    out, res = anomaly_eval
    for key in ("task", "image_auroc", "pixel_auroc", "threshold", "f1", "n_images", "ms_per_image"):
        assert key in res, key
    assert res["task"] == "anomaly"
    assert res["n_images"] == 8 + 3 * 4
    # a tiny model (30 images at 128 px) still separates these subtle defects well
    assert res["image_auroc"] >= 0.9, res
    assert res["pixel_auroc"] >= 0.9, res
    assert res["threshold"] == pytest.approx(bundle_meta(anomaly_bundle)["threshold"])
    assert 0.0 <= res["f1"] <= 1.0 and res["ms_per_image"] > 0
    heatmaps = sorted((out / "heatmaps").glob("*.png"))
    assert len(heatmaps) == res["n_images"]
    for name in ("roc.png", "score_histogram.png"):
        img = cv2.imread(str(out / name))
        assert img is not None and img.std() > 5  # a drawn figure, not a blank canvas


def test_good_only_threshold(anomaly_bundle):
    meta = bundle_meta(anomaly_bundle)
    thr = meta["thresholds"]
    assert thr["method"] == "good_quantile" and thr["held_out"] and thr["n_good"] >= 2
    assert meta["threshold"] > 0 and meta["threshold"] >= thr["good_score_mean"]
    assert meta["memory_bank"]["bank_size"] <= 2048
    b = Bundle.load(anomaly_bundle)  # manifest hashes verified
    assert b.task == "anomaly" and "model.onnx" in b.files


def test_plain_folder_of_good_images_only(texture_data, tmp_path):
    """No test split, no defects at all: training still fits a threshold (anomalib's most reported bug)."""
    good = tmp_path / "good_only"
    good.mkdir()
    for p in sorted((texture_data / "train" / "good").glob("*.png")):
        shutil.copy(p, good / p.name)
    out = tmp_path / "b"
    r = run_loupe("train", "anomaly", good, "--out", out, *TRAIN_ARGS, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = bundle_meta(out)
    assert meta["thresholds"]["method"] == "good_quantile"
    assert meta["training"]["layout"] == "folder" and meta["training"]["n_test"] == 0
    # scored through the runtime, the defective test images of the original set mostly exceed 1.0
    from loupe_dl_anomaly.runtime import AnomalyRuntime
    from loupe_dl_anomaly.data import read_image

    predict = AnomalyRuntime().predictor(Bundle.load(out))
    bad = [predict(read_image(p))["score"] for p in sorted((texture_data / "test").glob("[!g]*/*.png"))]
    ok = [predict(read_image(p))["score"] for p in sorted((texture_data / "test" / "good").glob("*.png"))]
    assert np.median(bad) > 1.0 > np.median(ok)


def test_refine_threshold_with_defects(texture_data, tmp_path):
    out = tmp_path / "refined"
    r = run_loupe("train", "anomaly", texture_data, "--out", out, "--refine", "test", *TRAIN_ARGS, env=ENV,
                  timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    thr = bundle_meta(out)["thresholds"]
    assert thr["method"] == "f1_optimal" and thr["n_defective"] == 12
    assert thr["f1"] >= 0.85


def test_bad_data_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_loupe("train", "anomaly", tmp_path / "empty", "--out", tmp_path / "x", env=ENV)
    assert r.returncode != 0
    assert "no training images" in r.stderr and "Traceback" not in r.stderr
