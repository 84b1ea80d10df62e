"""`loupe dataset analyze` on a data set with planted problems."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np

from host.testing import run_loupe


def _plant(root):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for c in ("good", "scratch"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                cv2.imwrite(str(d / f"{i}.png"), rng.integers(0, 255, (40, 50), dtype=np.uint8))
    # corrupt: garbage bytes and a truncated PNG
    (root / "train" / "good" / "garbage.png").write_bytes(b"\x89PNG this is not an image")
    data = (root / "train" / "good" / "0.png").read_bytes()
    (root / "train" / "scratch" / "truncated.png").write_bytes(data[: len(data) // 2])
    # exact duplicate, in the other class (a label conflict)
    shutil.copy(root / "train" / "good" / "1.png", root / "train" / "scratch" / "copy_of_good1.png")
    # channel mismatch: one colour image among gray ones; one 16-bit
    cv2.imwrite(str(root / "train" / "good" / "colour.png"), rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    cv2.imwrite(str(root / "train" / "good" / "deep.png"), rng.integers(0, 65535, (40, 50), dtype=np.uint16))
    # other sizes
    cv2.imwrite(str(root / "train" / "scratch" / "big.png"), rng.integers(0, 255, (80, 120), dtype=np.uint8))
    (root / "notes.txt").write_text("not an image")
    # images without a class, for the classifier's self-training: a split, not a class
    (root / "unlabelled" / "batch1").mkdir(parents=True)
    for name in ("unlabelled/u0.png", "unlabelled/batch1/u1.png"):
        cv2.imwrite(str(root / name), rng.integers(0, 255, (40, 50), dtype=np.uint8))


def test_dataset_analyze_finds_planted_problems(tmp_path):
    root = tmp_path / "data"
    _plant(root)
    out = tmp_path / "analysis"
    r = run_loupe("dataset", "analyze", root, "--json", "--out", out)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["counts"]["train"] == {"good": 9, "scratch": 9}
    assert d["counts"]["test"] == {"good": 2, "scratch": 2}
    assert d["counts"]["unlabelled"] == {"-": 1, "batch1": 1}
    corrupt = {c["file"] for c in d["corrupt"]}
    assert corrupt == {"train/good/garbage.png", "train/scratch/truncated.png"}
    assert len(d["duplicates"]) == 1
    dup = d["duplicates"][0]
    assert set(dup["files"]) == {"train/good/1.png", "train/scratch/copy_of_good1.png"}
    assert dup["conflicting_classes"] is True
    mism = {m["file"]: m for m in d["channel_mismatches"]}
    assert set(mism) == {"train/good/colour.png", "train/good/deep.png"}
    assert mism["train/good/colour.png"]["channels"] == 3 and mism["train/good/colour.png"]["expected_channels"] == 1
    assert mism["train/good/deep.png"]["depth"] == "16-bit"
    sizes = {(s["width"], s["height"]): s["count"] for s in d["sizes"]}
    assert sizes == {(50, 40): 21, (120, 80): 1}
    assert d["ignored_files"] == ["notes.txt"]
    chart = cv2.imread(str(out / "size_distribution.png"))
    assert chart is not None and chart.shape[1] > 500 and chart.std() > 10

    # the text report: histogram lines and the findings
    r = run_loupe("dataset", "analyze", root, "--out", out, "--strict")
    assert r.returncode == 1
    assert "50x40" in r.stdout and "#" in r.stdout and "garbage.png" in r.stdout
    assert "DIFFERENT CLASSES" in r.stdout and "colour.png" in r.stdout


def test_dataset_resize_copy(tmp_path):
    root = tmp_path / "data"
    _plant(root)
    dst = tmp_path / "resized"
    r = run_loupe("dataset", "analyze", root, "--out", tmp_path / "a", "--resize-to", "32x24", "--resize-out", dst)
    assert r.returncode == 0, r.stderr
    files = sorted(dst.rglob("*.png"))
    assert len(files) == 22  # every readable image (the unlabelled ones too), corrupt ones left out
    assert (dst / "unlabelled" / "batch1" / "u1.png").exists()
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        assert img.shape[:2] == (24, 32)
    r = run_loupe("dataset", "analyze", root, "--resize-to", "large", "--resize-out", dst, cwd=tmp_path)
    assert r.returncode == 2 and "WIDTHxHEIGHT" in r.stderr
