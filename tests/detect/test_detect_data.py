"""Detection data readers (COCO and YOLO) on tiny hand-made files, `loupe dataset analyze`, the mAP code."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from host.testing import run_loupe
from loupe_dl_detect.data import DataError, eval_samples, layout_of, load, scan
from loupe_dl_detect.metrics import average_precision, counts_match, evaluate_detections, pr_curve
from loupe_dl_detect.model import decode, iou_matrix, nms


def _img(path: Path, w: int = 64, h: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))


def _coco(root: Path, split: str, anns: list[dict], images=None, cats=None) -> Path:
    d = root / split
    images = images or [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                        {"id": 2, "file_name": "b.png", "width": 64, "height": 48}]
    for im in images:
        _img(d / "images" / im["file_name"])
    doc = {"images": images, "annotations": anns,
           "categories": cats or [{"id": 3, "name": "nut"}, {"id": 1, "name": "screw"}]}
    (d / "annotations.json").write_text(json.dumps(doc))
    return root


def test_coco_reader(tmp_path):
    root = _coco(tmp_path, "train", [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 20]},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [30, 5, 8, 8]},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [50, 40, 20, 20]},   # reaches beyond 64 x 48
    ])
    ds = scan(root)
    assert layout_of(root) == "coco" and ds.classes == ["screw", "nut"]    # ordered by category id
    a, b = ds.train
    assert a.name == "train/images/a.png" and a.labels.tolist() == [0, 1]
    np.testing.assert_allclose(a.boxes_xyxy(), [[2, 3, 12, 23], [30, 5, 38, 13]])
    assert a.outside((48, 64)) == [] and b.outside((48, 64)) == [0]
    rgb, boxes, labels = load(b)                                          # clipped to the image on load
    np.testing.assert_allclose(boxes, [[50, 40, 64, 48]])
    assert not ds.has_test and eval_samples(ds, {"test_names": ["train/images/b.png"]})[0] == [b]


def test_yolo_reader(tmp_path):
    (tmp_path / "classes.txt").write_text("screw\nnut\n")
    for split in ("train", "test"):
        _img(tmp_path / split / "images" / "a.png", 100, 50)
        (tmp_path / split / "labels").mkdir(parents=True)
        (tmp_path / split / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.95 0.5 0.2 0.2\n")
    ds = scan(tmp_path)
    assert ds.layout == "yolo" and ds.classes == ["screw", "nut"] and ds.has_test and len(ds.test) == 1
    s = ds.train[0]
    np.testing.assert_allclose(s.boxes_xyxy((50, 100)), [[40, 15, 60, 35], [85, 20, 105, 30]])
    assert s.outside((50, 100)) == [1]
    assert eval_samples(ds, None)[1] == "test"


@pytest.mark.parametrize("anns, field", [
    ([{"id": 1, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2]}], "category_id"),
    ([{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2]}], "bbox"),
    ([{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 2]}], "bbox"),
    ([{"id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}], "image_id"),
])
def test_coco_errors_name_file_and_field(tmp_path, anns, field):
    root = _coco(tmp_path, "train", anns)
    with pytest.raises(DataError) as e:
        scan(root)
    assert "annotations.json" in str(e.value) and field in str(e.value)


def test_yolo_errors(tmp_path):
    (tmp_path / "classes.txt").write_text("screw\n")
    _img(tmp_path / "train" / "images" / "a.png")
    (tmp_path / "train" / "labels").mkdir(parents=True)
    (tmp_path / "train" / "labels" / "a.txt").write_text("3 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match=r"a\.txt: line 1: class 3"):
        scan(tmp_path)


def test_dataset_analyze_cli(tmp_path):
    root = _coco(tmp_path / "data", "train", [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 20]},
        {"id": 2, "image_id": 2, "category_id": 3, "bbox": [50, 40, 20, 20]},
    ])
    r = run_loupe("dataset", "analyze", root, "--json", "--out", tmp_path / "an")
    assert r.returncode == 0, r.stderr
    det = json.loads(r.stdout)["detection"]
    assert det["layout"] == "coco"
    assert det["splits"]["train"]["boxes_per_class"] == {"screw": 1, "nut": 1}
    assert det["box_sizes"]["train"]["count"] == 2 and det["box_sizes"]["train"]["width"]["50"] == 15.0
    assert [(o["file"], o["class"]) for o in det["outside"]] == [("train/images/b.png", "nut")]
    r = run_loupe("dataset", "analyze", root, "--out", tmp_path / "an", "--strict")
    assert r.returncode == 1 and "boxes outside their image: 1" in r.stdout and "b.png" in r.stdout
    r = run_loupe("train", "detect", tmp_path / "nothing", "--out", tmp_path / "b")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------ metrics, hand-computed


def test_ap_hand_computed():
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)]
    # three detections: TP (0.9), FP (0.8, nowhere), TP (0.7) -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    pred = [(np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 31]], float), np.array([0.9, 0.8, 0.7]))]
    r, p, _, n = pr_curve(pred, gt, 0.5)
    np.testing.assert_allclose(r, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(p, [1.0, 0.5, 2 / 3])
    # 101-point: recall 0..0.5 (51 points) at precision 1, 0.51..1 (50 points) at 2/3
    assert average_precision(r, p) == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)
    # a duplicate of a matched box is a false positive; a box below the IoU threshold too
    pred = [(np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 40]], float), np.array([0.9, 0.8, 0.7]))]
    r, p, _, _ = pr_curve(pred, gt, 0.5)          # IoU of the last one is 100/200 = 0.5: matched at 0.5
    np.testing.assert_allclose(r, [0.5, 0.5, 1.0])
    r, p, _, _ = pr_curve(pred, gt, 0.55)
    np.testing.assert_allclose(r, [0.5, 0.5, 0.5])
    assert average_precision(r, p) == pytest.approx(51 / 101)


def test_map_over_classes_and_thresholds():
    gts = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.array([0, 1]))]
    perfect = [(gts[0][0], np.array([0.9, 0.8]), np.array([0, 1]))]
    m = evaluate_detections(perfect, gts, 3)          # class 2 has no ground truth: left out
    assert m["map50"] == 1.0 and m["map50_95"] == 1.0 and np.isnan(m["ap50"][2])
    shifted = [(np.array([[0, 0, 10, 12], [20, 20, 30, 30]], float), np.array([0.9, 0.8]), np.array([0, 1]))]
    m = evaluate_detections(shifted, gts, 2)          # IoU 100/120 = 0.833: TP up to threshold 0.8 (7 of 10)
    assert m["map50"] == 1.0 and m["ap50_95"][0] == pytest.approx(0.7) and m["map50_95"] == pytest.approx(0.85)
    wrong_class = [(gts[0][0], np.array([0.9, 0.8]), np.array([1, 0]))]
    assert evaluate_detections(wrong_class, gts, 2)["map50"] == 0.0
    assert counts_match(np.array([0, 1]), np.array([1, 0]), 2) and not counts_match(np.array([0]), np.array([1]), 2)


def test_decode_and_nms():
    heat = np.zeros((2, 8, 8), np.float32)
    heat[0, 2, 3] = 0.9
    heat[0, 2, 4] = 0.5          # a neighbour of a higher peak: not a peak
    heat[1, 6, 6] = 0.7
    size = np.zeros((2, 8, 8), np.float32)
    size[:, 2, 3] = np.log(2.0)  # 2 cells = 16 px
    off = np.full((2, 8, 8), 0.5, np.float32)
    d = decode(heat, size, off, 8, (2.0, 1.0), min_score=0.3)
    assert d.labels.tolist() == [0, 1] and d.scores.tolist() == pytest.approx([0.9, 0.7])
    cx, cy = 3.5 * 8, 2.5 * 8
    np.testing.assert_allclose(d.boxes[0], [(cx - 8) * 2, cy - 8, (cx + 8) * 2, cy + 8])
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10]], np.float32)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 1]), 0.5).tolist() == [0, 2]
    assert iou_matrix(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(90 / 110)
    # two classes peaking at the same centre: one part (class-agnostic NMS, the default), or two without it
    heat[1, 2, 3] = 0.6
    size[:, 6, 6] = np.log(2.0)
    assert decode(heat, size, off, 8, (1.0, 1.0), min_score=0.3).labels.tolist() == [0, 1]
    assert sorted(decode(heat, size, off, 8, (1.0, 1.0), min_score=0.3, agnostic=False).labels.tolist()) == [0, 1, 1]


def test_operating_threshold_maximises_exact_counts():
    from loupe_trainer.detect.trainer import choose_threshold

    box = np.zeros((1, 4), np.float32)
    preds = [(np.zeros((2, 4), np.float32), np.array([0.9, 0.4]), np.array([0, 0])),
             (box, np.array([0.7]), np.array([1]))]
    gts = [(box, np.array([0])), (box, np.array([1]))]
    thr, table = choose_threshold(preds, gts, 2, (0.3, 0.5, 0.6, 0.8))
    assert table[0.3] == (0.5, 0.5) and table[0.5] == (1.0, 0.0) and table[0.8] == (0.5, 0.5)
    assert thr in (0.5, 0.6)


def test_threshold_curve_smoothed_over_neighbours():
    """A lone best point of the count curve loses to a plateau (with a few held-out images a single point is
    chance); ties go to the lower count error, then to the middle."""
    from loupe_trainer.detect.trainer import pick_threshold

    acc = [0.0, 0.25, 0.875, 0.25, 0.0, 0.625, 0.75, 0.625, 0.25]
    ts = [round(0.2 + 0.05 * i, 2) for i in range(len(acc))]
    table = {t: (a, 1.0 - a) for t, a in zip(ts, acc)}
    assert max(table, key=lambda t: table[t][0]) == 0.3        # the raw best: a spike
    assert pick_threshold(table) == 0.5                          # the plateau's middle
    flat = {t: (0.5, e) for t, e in zip(ts, [3, 2, 1, 1, 1, 1, 1, 2, 3])}
    assert pick_threshold(flat) == 0.4


def test_out_of_fold_scores_each_image_with_a_probe_that_never_saw_it():
    """The verifier's threshold is placed on out-of-fold scores (``verifier.out_of_fold``): each image's candidates
    are scored by the linear probe fitted on the crops of the other folds' images. Relabelling one image's training
    crops therefore leaves its own scores, and those of the images in its fold, as they were, and changes the rest;
    the detector's candidates and the truths come back per view, in image order."""
    import torch

    from loupe_trainer.detect.verifier import Verifier, features, maps_features, out_of_fold, stage4_maps

    torch.manual_seed(0)
    frozen = Verifier(n_out=3).eval()
    rng = np.random.default_rng(0)
    n_img, per = 6, 12
    owner = np.repeat(np.arange(n_img), per)
    labels = rng.integers(0, 3, len(owner))
    feats = maps_features(frozen, stage4_maps(frozen, rng.integers(0, 256, (len(owner), 48, 48, 3), dtype=np.uint8)))
    fv = features(frozen, rng.integers(0, 256, (2 * n_img, 48, 48, 3), dtype=np.uint8))
    box = np.tile(np.array([[4, 4, 20, 20]], np.float32), (2, 1))
    scenes = [[((box, np.array([0.9, 0.4], np.float32), fv[2 * i:2 * i + 2]),
                (box, np.array([0.9, 0.4], np.float32), np.array([0, i % 2])), (box[:1], np.array([i % 2])))]
              for i in range(n_img)]
    oof, det, gts = out_of_fold(feats, labels, owner, scenes, 3, seed=0, folds=3)
    assert len(oof) == len(det) == len(gts) == n_img
    assert all(d[2][1] == i % 2 and g[1][0] == i % 2 for i, (d, g) in enumerate(zip(det, gts)))
    for boxes, combined, lab in oof:          # sqrt(detector score x p[c]), c a part class
        assert boxes.shape == (2, 4) and np.all((combined > 0) & (combined <= np.array([0.9, 0.4]) ** 0.5 + 1e-6))
        assert set(lab) <= {0, 1}
    relabelled = labels.copy()
    relabelled[owner == 2] = (labels[owner == 2] + 1) % 3
    again = out_of_fold(feats, relabelled, owner, scenes, 3, seed=0, folds=3)[0]
    same = [np.allclose(a[1], b[1]) for a, b in zip(oof, again)]
    assert same[2] and sum(same) == 2, same      # image 2 and its fold's other image: 6 images in 3 folds


def test_shifted_views_keep_whole_parts_on_their_boxes():
    """The extra held-out views for the verifier's threshold: zoomed out (never cut), turned, flipped; each box
    still frames its own part, and the colour jitter changes pixels, not boxes."""
    from loupe_trainer.detect.verifier import shifted_views

    img = np.zeros((96, 96, 3), np.uint8)
    img[10:30, 40:80, 0] = 255                       # part 0 in the red channel, part 1 in the green one
    img[60:90, 5:25, 1] = 255
    boxes = np.array([[40, 10, 80, 30], [5, 60, 25, 90]], np.float32)

    def part_box(im, ch):
        ys, xs = np.nonzero(im[:, :, ch] >= 128)
        return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)

    views = shifted_views(np.random.default_rng(3), img, boxes, n=12, zoom=1.5, colour=0.0)
    assert len(views) == 12 and len({v[0].tobytes() for v in views}) == 12
    longest = []
    for im, b in views:
        assert im.shape == img.shape and im.dtype == np.uint8 and b.shape == (2, 4)
        assert (b >= -1e-3).all() and (b <= 96 + 1e-3).all()          # zoomed out: no part is cut
        for ch in (0, 1):
            assert np.allclose(part_box(im, ch), b[ch], atol=1.5)
        longest.append(float(max(b[0, 2] - b[0, 0], b[0, 3] - b[0, 1])))
    assert min(longest) < 40 / 1.2 and max(longest) <= 40 + 1e-3    # zoom factors in [1 / 1.5, 1]
    tinted = shifted_views(np.random.default_rng(3), img, boxes, n=1, zoom=1.5, colour=0.3)[0]
    assert np.allclose(tinted[1], views[0][1]) and not np.array_equal(tinted[0], views[0][0])
    for im, b in shifted_views(np.random.default_rng(0), img[:, :88], boxes, n=6, rot90=False, flips=False,
                               colour=0.0):
        assert im.shape == (96, 88, 3) and b[0, 0] > b[1, 0] and b[0, 1] < b[1, 1]   # never turned nor flipped


def test_dihedral_views_keep_boxes_on_their_parts():
    from loupe_trainer.detect.trainer import dihedral_views

    img = np.zeros((64, 64, 3), np.uint8)
    img[10:20, 30:50] = 255
    boxes = np.array([[30, 10, 50, 20]], np.float32)
    views = dihedral_views([(None, None, img, boxes, np.array([0]))])
    assert len(views) == 8 and len({v[2].tobytes() for v in views}) == 8
    for _s, _rgb, im, b, _l in views:
        ys, xs = np.nonzero(im[:, :, 0])
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(b[0].astype(int))
    assert len(dihedral_views([(None, None, img, boxes, np.array([0]))], rot90=False)) == 2
    assert len(dihedral_views([(None, None, img, boxes, np.array([0]))], rot90=False, flips=False)) == 1


def test_learning_rate_follows_the_steps_unless_the_budget_binds():
    from loupe_trainer.detect.trainer import lr_factor

    warm, total = 10, 110
    steps = [lr_factor(s, warm, total) for s in range(total)]
    assert steps[0] == pytest.approx(0.1) and steps[warm - 1] == pytest.approx(1.0)
    assert steps[warm] == pytest.approx(1.0) and steps[60] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(steps[warm:], steps[warm + 1:])) and steps[-1] == pytest.approx(0.02, abs=1e-3)
    # a budget that binds (more than the steps' share spent) pulls the decay forward; one that does not is ignored
    assert lr_factor(60, warm, total, time_done=0.9) < steps[60]
    assert lr_factor(60, warm, total, time_done=0.2) == steps[60]
    assert lr_factor(5, warm, total, time_done=0.9) == steps[5]      # the warm-up is never cut


# ------------------------------------------------------------------ the verifier's pieces (no training run)


def test_verifier_crop_geometry_hand_computed():
    """A square of 0.75 x the box's longer side around the box centre, scaled to 48 px; grey outside."""
    from loupe_dl_detect.verify import GREY, crop_boxes, crop_matrix

    # box 40 x 20 at (10, 20): longer side 40, square 30 px, scale 48 / 30 = 1.6, centre (30, 30) -> (24, 24)
    m = crop_matrix([10, 20, 50, 40], 48, 0.75)
    assert np.allclose(m, [[1.6, 0, 24 - 30 * 1.6], [0, 1.6, 24 - 30 * 1.6]])
    assert np.allclose(m @ [30, 30, 1], [24, 24]) and np.allclose(m @ [15, 15, 1], [0, 0])  # square's corner
    # a 2 x 2 box: the square is at least 8 px (scale 6)
    assert np.allclose(crop_matrix([5, 5, 7, 7], 48, 0.75)[0, 0], 6.0)
    # a 64 px box gives a 48 px square at scale 1: the crop is the image's own pixels around the centre
    yy, xx = np.mgrid[0:120, 0:160]
    img = np.dstack([xx % 256, yy % 256, (xx + yy) % 256]).astype(np.uint8)
    c = crop_boxes(img, np.array([[40, 30, 104, 70]]), 48, 0.75)        # centre (72, 50)
    assert c.shape == (1, 48, 48, 3) and np.array_equal(c[0], img[26:74, 48:96])
    # near the border: the part of the square outside the image is grey; into a preallocated buffer
    buf = np.zeros((4, 48, 48, 3), np.uint8)
    c = crop_boxes(img, np.array([[0, 0, 32, 64]]), 48, 0.75, out=buf)  # centre (16, 32), scale 1
    assert c.base is buf or c.base is buf.base
    assert np.all(c[0, :, :8] == GREY)                                  # x < 0 in the image
    assert np.array_equal(c[0, :, 8:], img[8:56, 0:40])


def test_verifier_relabel_and_candidate_labels_hand_computed():
    from loupe_dl_detect.verify import relabel
    from loupe_trainer.detect.verifier import label_candidates

    s = np.array([0.64, 0.25], np.float32)
    p = np.array([[0.1, 0.2, 0.7], [0.5, 0.4, 0.1]], np.float32)   # background, class 0, class 1
    sc, lab = relabel(s, p)
    assert lab.tolist() == [1, 0] and np.allclose(sc, [np.sqrt(0.64 * 0.7), np.sqrt(0.25 * 0.4)])
    gb = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    gl = np.array([1, 0])
    cands = np.array([[0, 0, 10, 11],       # IoU 0.91 with box 0 -> its class (1) + 1
                      [20, 20, 30, 26],     # IoU 0.6 with box 1 -> class 0 + 1
                      [0, 0, 10, 25],       # IoU 0.4 with box 0: ambiguous, left out
                      [50, 50, 60, 60]], np.float32)   # no overlap: background
    keep, lab = label_candidates(cands, gb, gl)
    assert keep.tolist() == [True, True, False, True] and lab.tolist() == [2, 1, 0]
    keep, lab = label_candidates(cands, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert keep.all() and lab.tolist() == [0, 0, 0, 0]


def test_verifier_fit_trains_stage5_6_only():
    """The fit: the linear probe, then one epoch of fine-tuning that moves stage5-6 and leaves the trunk up to
    stage4 as it was; it separates two kinds of crops (a bright disc, a dark bar) from grey noise."""
    import torch

    from loupe_trainer.backbone import build_backbone
    from loupe_trainer.detect.verifier import Verifier, fit_verifier, head_features, stage4_maps, features

    rng = np.random.default_rng(0)
    crops, labels = [], []
    for i in range(48):
        c = rng.integers(100, 150, (48, 48, 3)).astype(np.uint8)
        k = i % 3
        if k == 1:
            cv2.circle(c, (24, 24), 14, (230, 230, 230), -1)
        elif k == 2:
            cv2.rectangle(c, (8, 20), (40, 28), (20, 20, 20), -1)
        crops.append(c)
        labels.append(k)
    crops, labels = np.stack(crops), np.array(labels, np.int64)
    net, acc = fit_verifier(crops, labels, 2, 8, epochs=1, seed=0)
    assert acc >= 0.9, acc
    ref = build_backbone(pretrained=True).state_dict()
    got = net.trunk.state_dict()
    last4 = net.trunk._stage_end[3]
    early = [k for k in ref if k.startswith("_blocks.") and int(k.split(".")[1]) < last4] + \
            [k for k in ref if k.startswith(("_conv_stem", "_bn0"))]
    late = [k for k in ref if k.startswith("_blocks.") and int(k.split(".")[1]) >= last4 and "weight" in k]
    assert early and all(torch.equal(ref[k], got[k]) for k in early)
    assert any(not torch.equal(ref[k], got[k]) for k in late)
    # the cached-stage4 features are the network's own
    with torch.no_grad():
        assert torch.allclose(head_features(net, stage4_maps(net, crops[:4])), features(net, crops[:4]), atol=1e-5)
        assert isinstance(net, Verifier) and net(torch.zeros(2, 3, 48, 48)).shape == (2, 3)


def test_verifier_learns_from_the_candidates_of_the_shifted_views_too():
    """``verifier_data``: besides each image's views (the true boxes with their jittered copies, the detector's
    candidates, random background), the candidates the detector proposes on the shifted views (zoomed out, turned,
    colour-jittered) are training crops, labelled against the shifted truth, after all the views' crops. Here the
    "detector" finds every bright blob: the two parts (their class) and a blue distractor that is no part
    (background), on each of the 8 views and the 8 shifted views of each image."""
    from loupe_dl_detect.model import Detections
    from loupe_trainer.detect.trainer import DetectParams
    from loupe_trainer.detect.verifier import N_JITTER, N_RANDOM, N_SHIFTED, verifier_data

    def scene(dx):
        img = np.full((96, 96, 3), 20, np.uint8)
        img[10:30, 40 + dx:70 + dx, 0] = 255            # part of class 0 (red)
        img[60:88, 8:24, 1] = 255                       # part of class 1 (green)
        img[56:76, 56:76, 2] = 255                      # a distractor (blue): no part
        return img, np.array([[40 + dx, 10, 70 + dx, 30], [8, 60, 24, 88]], np.float32), np.array([0, 1])

    def propose(img):
        n, _lab, stats, _c = cv2.connectedComponentsWithStats((img.max(2) > 128).astype(np.uint8))
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _a in stats[1:]], np.float32).reshape(-1, 4)
        return Detections(boxes, np.linspace(0.9, 0.5, n - 1).astype(np.float32), np.zeros(n - 1, np.int64))

    items = [(None, img, img, b, lab) for img, b, lab in (scene(0), scene(12))]
    d = verifier_data(propose, items, 2, 16, DetectParams(verify_crop=48, seed=0))
    per_view = {"truth": 2 * (1 + N_JITTER), "cand_pos": 2, "cand_neg": 1, "random": N_RANDOM}
    counts = {k: int((d.kinds == k).sum()) for k in (*per_view, "shift_pos", "shift_neg")}
    assert counts == {**{k: 2 * 8 * v for k, v in per_view.items()}, "shift_pos": 2 * N_SHIFTED * 2,
                      "shift_neg": 2 * N_SHIFTED}, counts
    shifted = np.isin(d.kinds, ["shift_pos", "shift_neg"])
    assert not shifted[:-shifted.sum()].any()            # after every view's crops
    assert sorted(d.labels[shifted].tolist()) == [0] * 16 + [1] * 16 + [2] * 16
    assert ((d.labels > 0) == np.isin(d.kinds, ["truth", "cand_pos", "shift_pos"])).all()
    assert d.owner[shifted].tolist() == [0] * 24 + [1] * 24
    assert len(d.maps) == len(d.labels) == len(d.owner) and d.n_shifted == 2 * N_SHIFTED


def test_verifier_candidate_cap_follows_the_most_crowded_training_image():
    """The verifier re-scores at most ``max_candidates`` candidates a frame, which also caps the parts a frame can
    report: by default 16, raised to twice the most parts in one training image (a full tray), at most 256; an
    explicit ``--verify-candidates`` is kept as given."""
    from loupe_trainer.detect.trainer import DetectParams
    from loupe_trainer.detect.verifier import candidate_cap

    assert candidate_cap(DetectParams(), 5) == 16
    assert candidate_cap(DetectParams(), 30) == 60
    assert candidate_cap(DetectParams(), 500) == 256
    assert candidate_cap(DetectParams(verify_candidates=4), 30) == 4


@pytest.mark.parametrize("variant,low,high,frozen", [("lite0", 40, 112, 5), ("lite1", 40, 112, 7),
                                                     ("lite2", 48, 120, 7)])
def test_detector_trunk_variants_fuse_their_own_stage_widths(variant, low, high, frozen):
    """``--backbone``: the head's laterals take the variant's stage3 / stage5 widths (Lite2 is wider), the frozen
    part ends where the variant's stage3 ends (Lite1 / Lite2 have a third stage3 block), and the output is the
    same stride-8 contract."""
    import torch

    from loupe_trainer.detect.net import DetNet, frozen_blocks

    net = DetNet(3, pretrained=False, backbone=variant)
    assert (net.skip.in_channels, net.lateral.in_channels) == (low, high)
    assert frozen_blocks(variant) == frozen == net.backbone.stage_end("stage3")
    net.freeze_early()
    frozen_ids = {id(p) for m in [net.backbone._conv_stem, net.backbone._bn0, *net.backbone._blocks[:frozen]]
                  for p in m.parameters()}
    assert all(not p.requires_grad for m in net.backbone._blocks[:frozen] for p in m.parameters())
    assert all(p.requires_grad for p in net.backbone._blocks[frozen].parameters())
    assert not frozen_ids & {id(p) for p in net.trunk_parameters()}
    with torch.no_grad():
        h, s, o = net.eval().decoded(torch.zeros(1, 3, 96, 64))
    assert h.shape == (1, 3, 12, 8) and s.shape == o.shape == (1, 2, 12, 8)


def test_the_decay_follows_the_clock_only_on_the_median_of_three_epochs():
    """Session 22: a 2.1 s first epoch (1.5-1.6 s after it) projected 100 planned epochs past a 170 s budget and
    switched a run that fits it to the clock's decay. Now the pace is the median of three epochs at least."""
    from loupe_trainer.detect.trainer import PACE_EPOCHS, overruns

    assert PACE_EPOCHS == 3
    assert not overruns(5.0, [2.1], 99, 170.0)                     # 5 + 2.1 x 99 = 213 s, but one epoch says nothing
    assert not overruns(7.0, [2.1, 1.5], 98, 170.0)
    assert not overruns(8.6, [2.1, 1.5, 1.6], 97, 170.0)           # 8.6 + 1.6 x 97 = 163.8 s: fits
    assert overruns(8.6, [2.1, 1.5, 1.6], 97, 160.0)               # ... but not in 160 s
    assert overruns(12.0, [4.0, 4.0, 4.0], 57, 120.0)              # a slow machine: 240 s planned in a 120 s budget
    assert not overruns(12.0, [4.0, 4.0, 4.0], 0, 120.0)           # nothing left to plan


def test_verifier_time_reserve_grows_with_boxes_and_crop_side():
    """The share of the time budget kept for the verifier: 120 s per 180 boxes fitted on (at least one share) at the
    default 80 px crops (110-130 s measured for the bench's 40 scenes, ~204 boxes, at 2 threads, session 27), times
    (side / 80) ** 1.5 for other sides, at most half the budget."""
    from loupe_trainer.detect.trainer import verify_reserve

    assert verify_reserve(160, 80, 4.5) == pytest.approx(120.0)           # fewer boxes: one share
    assert verify_reserve(204, 80, 6) == pytest.approx(120.0 * 204 / 180)          # the bench's boxes: 136 s
    assert verify_reserve(204, 80, 4.5) == pytest.approx(135.0)           # ... capped at half of the default 270 s
    assert verify_reserve(288, 80, 8) == pytest.approx(192.0)             # 1.6x the boxes, 1.6x the time
    assert verify_reserve(288, 80, 4.5) == pytest.approx(135.0)           # ... capped at half of 270 s
    assert verify_reserve(160, 48, 4.5) == pytest.approx(120.0 * 0.6 ** 1.5)       # 55.8 s
    assert verify_reserve(160, 64, 4.5) == pytest.approx(85.865, abs=1e-3)        # 120 x 0.8 ** 1.5
    assert verify_reserve(900, 64, 60) == pytest.approx(600.0 * 0.8 ** 1.5)
