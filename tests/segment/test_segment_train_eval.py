"""Train (tiny) through the CLI, evaluate, run a recipe with the segment.defects tool, quantise to int8."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from host import Bundle, model_sha256
from host.testing import check_tool_contract, run_loupe

ENV = {"OMP_NUM_THREADS": "2"}

EVAL_KEYS = {"task", "mean_iou", "defect_iou", "per_class_iou", "image_auroc", "n_images", "ms_per_image"}


def test_bundle_metadata_and_parity(seg_bundle, seg_data):
    b = Bundle.load(seg_bundle)
    m = b.meta
    assert m["classes"] == ["scratch", "stain", "dent"] and m["input_size"] == [96, 96]
    assert 0.2 <= m["threshold"] <= 0.8
    assert m["parity"]["max_abs_prob_diff"] < 2e-3 and m["parity"]["label_agreement"] >= 0.999
    tr = m["training"]
    assert tr["n_train"] + tr["n_val"] == 18 and tr["n_val"] >= 3     # test/ exists: nothing held out for it
    assert tr["class_weights"][0] == 1.0 and all(w > 1 for w in tr["class_weights"][1:])
    assert len(tr["history"]) == m["metrics"]["epochs_run"] >= 1
    # the default early stopping watches the smoothed pooled soft Dice of the validation images
    assert tr["params"]["select"] == "plateau" and tr["params"]["val_metric"] == "dice"
    for h in tr["history"]:
        assert 0.0 <= h["val_soft_dice"] <= 1.0 and h["val_score"] == h["val_soft_dice"]
        assert 0.0 <= h["val_smoothed"] <= 1.0 and 0.0 <= h["lr_factor"] <= 1.0
    assert abs(tr["history"][0]["val_smoothed"] - tr["history"][0]["val_soft_dice"]) < 1e-3   # bias-corrected
    assert m["split"] is None
    import onnx

    g = onnx.load(str(seg_bundle / "model.onnx")).graph
    assert [o.name for o in g.output] == ["probs"]
    # the graph's probabilities come out at the declared stride; the runtime stretches them to the image
    from host import create_session

    stride = m["output_stride"]
    probs = create_session(seg_bundle / "model.onnx", 1).run(["probs"], {"image": np.zeros((1, 3, 96, 96),
                                                                                            np.float32)})[0]
    assert probs.shape == (1, 4, 96 // stride, 96 // stride) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    # the trunk stops after the recorded deep stage (stage4: block 7, stage5: block 10): no later block, no head
    last = {"stage4": 7, "stage5": 10}[tr["params"]["deep_stage"]]
    names = " ".join(n.name for n in g.node)
    assert f"_blocks.{last}/" in names and f"_blocks.{last + 1}/" not in names and "_conv_head" not in names


def test_eval_json_and_overlays(seg_bundle, seg_data, tmp_path):
    out = tmp_path / "eval"
    r = run_loupe("eval", seg_bundle, seg_data, "--json", "--out", out, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout)
    assert EVAL_KEYS <= set(d) and d["task"] == "segment"
    assert d["n_images"] == 13 and d["n_good"] == 4 and d["n_defective"] == 9
    assert set(d["per_class_iou"]) == {"scratch", "stain", "dent"}
    cm = np.array(d["pixel_confusion_matrix"])
    assert d["pixel_confusion_labels"] == ["background", "scratch", "stain", "dent"]
    assert len(d["scores"]) == len(d["labels"]) == 13 and sum(d["labels"]) == 9
    assert cm.shape == (4, 4) and cm.sum() == 13 * 96 * 96
    for k in ("mean_iou", "defect_iou", "image_auroc"):
        assert d[k] is None or 0.0 <= d[k] <= 1.0
    # IoUs follow from the confusion matrix
    tp = cm[1:, 1:].sum()
    assert d["defect_iou"] == pytest.approx(tp / (cm[1:, :].sum() + cm[:, 1:].sum() - tp))
    overlays = sorted(p.name for p in (out / "overlays").iterdir())
    names = sorted(p.stem for p in (seg_data / "test" / "images").iterdir())
    assert overlays == [f"{n}.png" for n in names]
    panel = cv2.imread(str(out / "overlays" / overlays[0]))
    assert panel.shape[1] >= 4 * 96 and panel.shape[0] > 96
    assert cv2.imread(str(out / "confusion_matrix.png")) is not None
    assert (out / "index.html").exists() and json.loads((out / "metrics.json").read_text())["images"]


def test_tool_contract_and_measurements(seg_bundle, seg_data):
    from loupe_dl_segment.tool import SegmentTool

    img = cv2.imread(str(sorted((seg_data / "test" / "images").glob("*stain*"))[0]))
    model = {"path": str(seg_bundle), "sha256": model_sha256(seg_bundle)}
    out = check_tool_contract(SegmentTool, img, {"model": model, "threshold": 0.05})
    m = out.measurements
    for c in ("scratch", "stain", "dent"):
        assert {f"{c}.area", f"{c}.max_area", f"{c}.count", f"{c}.max_prob"} <= set(m)
    assert m["defect_area"] == sum(m[f"{c}.area"] for c in ("scratch", "stain", "dent"))
    assert m["region_count"] == sum(m[f"{c}.count"] for c in ("scratch", "stain", "dent"))
    assert m["ok"] == (m["region_count"] == 0)
    assert out.heatmap.shape == img.shape[:2] and 0 <= out.heatmap.min() and out.heatmap.max() <= 1
    assert m["defect_score"] == pytest.approx(float(out.heatmap.max()), abs=1e-5)
    # a low threshold finds regions: polygons coloured by class, labelled with the class name
    assert m["region_count"] > 0 and len(out.overlays) >= 1
    s = out.overlays[0]
    assert s.kind == "polygon" and s.label in ("scratch", "stain", "dent") and s.color.startswith("#")
    # min_area removes small regions
    big = check_tool_contract(SegmentTool, img, {"model": model, "threshold": 0.05, "min_area": 10 ** 6})
    assert big.measurements["region_count"] == 0 and big.measurements["ok"] is True


def test_recipe_with_per_class_limits(seg_bundle, seg_data, tmp_path):
    sha = model_sha256(seg_bundle)
    recipe = tmp_path / "seg.yaml"

    def write(limits: str) -> None:
        recipe.write_text(f"""loupe_recipe: 1
name: segment defects
source: folder:{seg_data / 'test' / 'images'}
inspect:
  - tool: segment.defects
    name: defects
    params:
      model: {{path: {seg_bundle}, sha256: {sha}}}
      min_area: 3
    limits:
{limits}
report: [jsonl:{tmp_path / 'out.jsonl'}]
""")

    write("      scratch.max_area: {max: 30}\n      stain.count: {max: 0}\n      defect_score: {max: 0.99}")
    r = run_loupe("validate", recipe, env=ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_loupe("run", recipe, "-q", env=ENV)
    assert r.returncode in (0, 1), r.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 13
    for row in rows:
        res = row["results"][0]
        m = res["measurements"]
        assert res["verdict"] == ("fail" if (m["scratch.max_area"] > 30 or m["stain.count"] > 0
                                             or m["defect_score"] > 0.99) else "pass")
        assert all(o["kind"] == "polygon" and o["color"] for o in res["overlays"])
    # a misspelt measurement is a recipe error naming the step and the field
    write("      scratch.maxarea: {max: 30}")
    r = run_loupe("validate", recipe, env=ENV)
    assert r.returncode == 2 and "limits.scratch.maxarea" in r.stderr


def test_int8_optimize_and_eval(seg_bundle, seg_data, tmp_path):
    out = tmp_path / "int8"
    r = run_loupe("optimize", seg_bundle, "--method", "int8", "--out", out, "--calib-images", "6", "--keep-float", "stem", "block0", "-q", env=ENV,
                  timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    b = Bundle.load(out)
    rec = b.meta["optimization"]
    assert rec["method"] == "int8" and b.task == "segment"
    assert rec["accuracy"]["checked"] and rec["accuracy"]["metric"] == "mean_iou"
    assert rec["parity"]["outputs"]["probs"]["rel_l2"] < 0.2
    import onnx

    ops = [n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node]
    assert ops.count("QLinearConv") >= 10
    r = run_loupe("eval", out, seg_data, "--json", env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout)
    assert d["task"] == "segment" and d["n_images"] == 13


def test_bad_data_is_a_clear_error(tmp_path, seg_data):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(seg_data, bad)
    m = sorted((bad / "train" / "masks").glob("*stain*"))[0]
    cv2.imwrite(str(m), np.full((96, 96), 9, np.uint8))
    r = run_loupe("train", "segment", bad, "--out", tmp_path / "b", "--epochs", "1", "-q", env=ENV)
    assert r.returncode == 2 and m.name in r.stderr and "pixel value 9" in r.stderr
    assert "Traceback" not in r.stderr
