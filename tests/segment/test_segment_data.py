"""Reading segmentation sets: index masks, binary masks, COCO polygons, and clear errors for bad ones."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from loupe_dl_segment.data import DataError, eval_samples, is_segmentation_data, scan


def _tiny_set(root: Path, classes=("scratch", "stain")) -> Path:
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    rng = np.random.default_rng(0)
    for i in range(3):
        img = rng.integers(0, 255, (40, 50, 3), np.uint8)
        cv2.imwrite(str(root / "train" / "images" / f"im{i}.png"), img)
        m = np.zeros((40, 50), np.uint8)
        if i:
            m[5:15, 10:30] = i
            cv2.imwrite(str(root / "train" / "masks" / f"im{i}.png"), m)
    return root


def test_scan_index_masks_and_missing_mask_is_good(tmp_path):
    root = _tiny_set(tmp_path / "d")
    assert is_segmentation_data(root)
    ds = scan(root)
    assert ds.classes == ["scratch", "stain"] and ds.n_out == 3 and not ds.has_test
    by = {s.name: s for s in ds.train}
    img, m = ds.load(by["im0"])          # no mask file: a good image
    assert img.shape[:2] == m.shape == (40, 50) and not m.any()
    _, m2 = ds.load(by["im2"])
    assert set(np.unique(m2)) == {0, 2} and (m2 == 2).sum() == 200
    # without a test folder, eval scores exactly the names the trainer held out
    samples, how = eval_samples(ds, {"test_names": ["im1"]})
    assert [s.name for s in samples] == ["im1"] and "held out" in how


def test_mask_errors_name_the_file(tmp_path):
    root = _tiny_set(tmp_path / "d")
    ds = scan(root)
    by = {s.name: s for s in ds.train}
    cv2.imwrite(str(by["im1"].mask), np.full((40, 50), 7, np.uint8))
    with pytest.raises(DataError, match=r"im1\.png: pixel value 7 but classes.txt lists only 2"):
        ds.load(by["im1"])
    cv2.imwrite(str(by["im2"].mask), np.zeros((20, 50), np.uint8))
    with pytest.raises(DataError, match=r"im2\.png: mask is 50x20 but its image im2.png is 50x40"):
        ds.load(by["im2"])
    col = np.zeros((40, 50, 3), np.uint8)
    col[..., 2] = 1
    cv2.imwrite(str(by["im2"].mask), col)
    with pytest.raises(DataError, match="colour mask"):
        ds.load(by["im2"])


def test_binary_255_mask_of_a_one_class_set(tmp_path):
    root = _tiny_set(tmp_path / "d", classes=("defect",))
    m = np.zeros((40, 50), np.uint8)
    m[1:4, 1:4] = 255
    cv2.imwrite(str(root / "train" / "masks" / "im1.png"), m)
    ds = scan(root)
    _, got = ds.load(next(s for s in ds.train if s.name == "im1"))
    assert set(np.unique(got)) == {0, 1} and got.sum() == 9


def test_classes_txt_problems(tmp_path):
    root = _tiny_set(tmp_path / "d")
    (root / "classes.txt").write_text("scratch\n\nstain\n")
    with pytest.raises(DataError, match="line 2 is blank"):
        scan(root)
    (root / "classes.txt").unlink()
    with pytest.raises(DataError, match=r"classes.txt: not found"):
        scan(root)


def _to_coco(root: Path, split: str, classes: list[str]) -> dict:
    """A COCO file (polygons, as CVAT exports them) from the index masks of ``root/split``."""
    images, anns = [], []
    for i, p in enumerate(sorted((root / split / "images").glob("*.png"))):
        img = cv2.imread(str(p))
        images.append({"id": i + 1, "file_name": f"images/{p.name}", "height": img.shape[0], "width": img.shape[1]})
        mp = root / split / "masks" / p.name
        if not mp.exists():
            continue
        m = cv2.imread(str(mp), cv2.IMREAD_UNCHANGED)
        for k in range(1, len(classes) + 1):
            cs, _ = cv2.findContours((m == k).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            for c in cs:
                if len(c) < 3:
                    continue
                c = c.reshape(-1, 2).astype(float)   # the outline through the boundary pixels' centres
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 10 + k, "iscrowd": 0,
                             "segmentation": [c.ravel().tolist()], "area": float((m == k).sum())})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 10 + k, "name": c} for k, c in enumerate(classes, 1)]}


def test_coco_polygons_match_the_index_masks(seg_data, tmp_path):
    """The generated set exported as COCO (like CVAT) rasterises back to (nearly) the same masks."""
    root = tmp_path / "coco"
    shutil.copytree(seg_data / "train" / "images", root / "train" / "images")
    classes = (seg_data / "classes.txt").read_text().split()
    (root / "train" / "annotations").mkdir(parents=True)
    (root / "train" / "annotations" / "instances_default.json").write_text(
        json.dumps(_to_coco(seg_data, "train", classes)))
    ds_coco = scan(root)           # no classes.txt: the categories, in id order
    assert ds_coco.classes == classes
    ds_mask = scan(seg_data)
    inter = union = 0
    for a, b in zip(ds_coco.train, ds_mask.train):
        assert a.name == b.name and a.labelled_by == "coco"
        _, ma = ds_coco.load(a)
        _, mb = ds_mask.load(b)
        for k in range(1, 4):
            inter += int(((ma == k) & (mb == k)).sum())
            union += int(((ma == k) | (mb == k)).sum())
    assert union > 0 and inter / union > 0.7


def test_coco_unknown_category_and_compressed_rle(tmp_path):
    root = _tiny_set(tmp_path / "d")
    shutil.rmtree(root / "train" / "masks")
    doc = {"images": [{"id": 1, "file_name": "im1.png", "height": 40, "width": 50}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "segmentation": [[1, 1, 9, 1, 9, 9]]}],
           "categories": [{"id": 3, "name": "dent"}]}
    (root / "train" / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"annotations.json: category 'dent' \(id 3\) is not in classes"):
        scan(root)
    doc["categories"] = [{"id": 3, "name": "stain"}]
    doc["annotations"][0]["segmentation"] = {"counts": "abc", "size": [40, 50]}
    (root / "train" / "annotations.json").write_text(json.dumps(doc))
    ds = scan(root)
    with pytest.raises(DataError, match="compressed RLE"):
        ds.load(next(s for s in ds.train if s.name == "im1"))
    # uncompressed RLE (column-major runs) works
    m = np.zeros((40, 50), np.uint8)
    m[2:6, 3:5] = 1
    flat = m.T.ravel()
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    doc["annotations"][0]["segmentation"] = {"counts": runs, "size": [40, 50]}
    (root / "train" / "annotations.json").write_text(json.dumps(doc))
    ds = scan(root)
    _, got = ds.load(next(s for s in ds.train if s.name == "im1"))
    assert np.array_equal(got, m * 2)
