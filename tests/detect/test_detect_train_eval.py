"""End to end: train through the CLI, eval JSON and report, the inspect tool in a recipe, int8, no torch at run time."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from host import Bundle, model_sha256
from host.testing import check_tool_contract, run_loupe

from .conftest import ENV


def test_bundle_parity_and_history(tiny_detector):
    meta = json.loads((tiny_detector / "bundle.json").read_text())
    par = meta["parity"]
    assert par["images"] >= 2 and par["max_abs_heatmap_diff"] < 2e-3 and par["same_detections"] >= 0.875
    assert 0 < meta["decode"]["min_score"] < 1
    assert meta["training"]["history"] and meta["metrics"]["best_epoch"] >= 1


def test_eval_json_and_report(tiny_detector, parts_small, tmp_path):
    out = tmp_path / "report"
    r = run_loupe("eval", tiny_detector, parts_small, "--json", "--out", out, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    for key in ("task", "map50", "map50_95", "per_class_ap50", "count_accuracy", "n_images", "ms_per_image"):
        assert key in res, key
    assert res["task"] == "detect" and res["n_images"] == 12
    assert set(res["per_class_ap50"]) == {"nut", "screw"}
    # chance is ~0 for boxes (a random box rarely overlaps a part by IoU 0.5); a few epochs already find most parts
    assert res["map50"] > 0.3, res
    assert 0 <= res["map50_95"] <= res["map50"] and 0.0 <= res["count_accuracy"] <= 1.0
    assert res["ms_per_image"] > 0
    # the fixture's bundle has a verifier: the operating threshold is the combined score's
    assert res["min_score"] == json.loads((tiny_detector / "bundle.json").read_text())["verifier"]["min_score"]
    assert len(list((out / "images").glob("*.png"))) == 12
    assert cv2.imread(str(out / "pr_curves.png")) is not None
    assert set(json.loads((out / "pr_curves.json").read_text())) == {"nut", "screw"}


def test_verifier_pinned_and_parity(tiny_detector):
    import hashlib

    meta = json.loads((tiny_detector / "bundle.json").read_text())
    manifest = json.loads((tiny_detector / "manifest.json").read_text())["files"]
    v = meta["verifier"]
    assert v["file"] == "verifier.onnx" and manifest["verifier.onnx"] == hashlib.sha256(
        (tiny_detector / "verifier.onnx").read_bytes()).hexdigest()
    assert (v["crop"], v["margin"], v["max_candidates"], v["combine"]) == (80, 0.75, 4, "gmean_relabel")
    # 80 px crops by default (--verify-crop; 48 before session 15): the graph takes them at that side
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tiny_detector / "verifier.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[1:] == [3, 80, 80] and meta["training"]["params"]["verify_crop"] == 80
    assert "[N, 3, 80, 80]" in v["input"]
    assert v["labels"] == ["background", "nut", "screw"] and 0 < v["min_score"] < 1
    assert v["parity"]["crops"] > 0 and v["parity"]["max_abs_probs_diff"] < 1e-4 and v["parity"]["same_class"] == 1
    # the threshold: the most exactly counted views, out of fold, over every image's views and shifted versions
    oof, t = v["out_of_fold"], meta["training"]
    n = t["n_train"] + t["n_val"]
    assert v["threshold_rule"] == "most exact views, out of fold" and v["images"] == oof["images"] == n, v
    assert oof["folds"] == 5 and oof["views"] == 8 * n and oof["shifted_views"] == 8 * n, oof
    assert oof["with_verifier"]["threshold"] == v["min_score"]
    assert oof["with_verifier"]["count_accuracy"] == oof["counts_by_threshold"][f"{v['min_score']:g}"]["count_accuracy"]
    assert 0 <= oof["with_verifier"]["count_accuracy"] <= 1 and 0 <= oof["detector_alone"]["count_accuracy"] <= 1
    assert sum(v["train_crops"].values()) > 0 and v["train_crops"]["truth"] > 0
    # each true box gives its own crop and two jittered copies
    assert v["truth_jitter"] == {"copies": 2, "amount": 0.15} and v["train_crops"]["truth"] % 3 == 0
    assert 0 < meta["decode"]["min_score"] < 1          # the detector alone keeps its own threshold


def test_without_held_out_images_the_verifier_still_fits_and_places_its_threshold(parts_small, tmp_path):
    """The verifier's threshold is placed out of fold, so it needs no held-out images: with none
    (`--val-fraction 0`) the default still fits it on every image, the detector keeps a threshold of its own
    (0.3, nothing to choose it on), and `loupe eval` uses the combined one. (`--no-verify` is tested with the
    Lite2 trunk.)"""
    out = tmp_path / "noval"
    r = run_loupe("train", "detect", parts_small, "--out", out, "--input-size", "128", "--crop", "96",
                  "--epochs", "2", "--steps-per-epoch", "2", "--max-minutes", "60", "--val-fraction", "0",
                  "--verify-epochs", "0", "--verify-candidates", "4", env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "bundle.json").read_text())
    t, v = meta["training"], meta["verifier"]
    assert t["params"]["verify"] is True and t["n_val"] == 0 and meta["decode"]["min_score"] == 0.3
    assert v["images"] == t["n_train"] == 24 and v["out_of_fold"]["views"] == 8 * 24, v
    assert "verifier.onnx" in json.loads((out / "manifest.json").read_text())["files"]
    r = run_loupe("eval", out, parts_small, "--json", env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["task"] == "detect" and res["n_images"] == 12 and res["min_score"] == v["min_score"]


def test_the_default_keeps_the_last_epoch_and_select_best_stops_early(parts_small, tmp_path):
    """By default (``--select last``) the held-out images' best epoch and the patience are ignored: every planned
    epoch runs and the bundle holds the last one. ``--select best`` keeps the best epoch and stops after
    ``--patience`` epochs without a gain (checked against the held-out scores the bundle records)."""
    common = ("--input-size", "128", "--crop", "96", "--steps-per-epoch", "2", "--patience", "1",
              "--max-minutes", "60", "--no-verify", "-q")
    r = run_loupe("train", "detect", parts_small, "--out", tmp_path / "last", "--epochs", "3", *common, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((tmp_path / "last" / "bundle.json").read_text())
    m = meta["metrics"]
    assert meta["training"]["params"]["select"] == "last"
    assert m["epochs_run"] == 3 and m["best_epoch"] == 3 and m["stopped"] == "epochs", m
    # without the verifier the held-out images place the detector's own threshold: it never trains on them
    assert m["detector_trained_on_held_out"] is False and meta["training"]["n_detector_train"] == meta[
        "training"]["n_train"], meta["training"]
    # the held-out images only report here: scored every 5th epoch and at the end, not after epochs 1-2
    history = meta["training"]["history"]
    assert [("val_map50" in h) for h in history] == [False, False, True], history
    assert m["val_map50"] == history[-1]["val_map50"], m
    r = run_loupe("train", "detect", parts_small, "--out", tmp_path / "best", "--epochs", "6", "--select", "best",
                  *common, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((tmp_path / "best" / "bundle.json").read_text())
    m, history = meta["metrics"], meta["training"]["history"]
    # the rule replayed on the recorded held-out scores: keep the first best, stop 1 epoch (the patience) after it
    best, best_epoch, stop, early = -1.0, 0, len(history), False
    for h in history:
        score = h["val_map50"] + 0.25 * h["val_map50_95"]
        if score > best + 1e-6:
            best, best_epoch = score, h["epoch"]
        if h["epoch"] - best_epoch >= 1:
            stop, early = h["epoch"], True
            break
    assert m["best_epoch"] == best_epoch and m["epochs_run"] == stop == len(history), (m, history)
    assert m["stopped"].startswith("early stopping") == early, m
    assert m["val_map50"] == history[best_epoch - 1]["val_map50"], m
    r = run_loupe("train", "detect", parts_small, "--out", tmp_path / "bad", "--select", "first", env=ENV)
    assert r.returncode != 0 and "select" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_with_the_verifier_the_detector_also_trains_on_the_held_out_images(tiny_detector, parts_small, tmp_path):
    """With the verifier and the last epoch kept (the defaults), the held-out images choose no epoch: the detector
    learns from them too, and the verifier uses them like every other image (its threshold is placed out of fold).
    Their scores on the detector would then be scores on its own training images, so none is recorded."""
    meta = json.loads((tiny_detector / "bundle.json").read_text())
    t, m = meta["training"], meta["metrics"]
    assert t["params"]["train_held_out"] is True and m["detector_trained_on_held_out"] is True, m
    assert t["n_val"] > 0 and t["n_detector_train"] == t["n_train"] + t["n_val"], t
    assert not any("val_map50" in h for h in t["history"]) and "val_map50" not in m, (t["history"], m)
    # the verifier fits on every image's crops, the held-out ones' too, and places its threshold out of fold
    v = meta["verifier"]
    assert v["images"] == v["out_of_fold"]["images"] == t["n_train"] + t["n_val"], v
    assert v["out_of_fold"]["views"] == 8 * v["images"], v["out_of_fold"]
    assert v["parity"]["crops"] > 0 and v["parity"]["max_abs_probs_diff"] < 1e-4, v["parity"]
    # where the held-out images must stay out, asking for it is a usage error, not a traceback
    for extra, why in ((("--select", "best"), "choose the epoch"), (("--no-verify",), "detector's own threshold")):
        r = run_loupe("train", "detect", parts_small, "--out", tmp_path / "x", "--train-held-out", *extra, env=ENV)
        assert r.returncode != 0 and why in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert not (tmp_path / "x").exists()


def test_larger_backbone_trains_exports_and_evaluates(parts_small, tmp_path):
    """``--backbone lite2`` (the widest trunk; Lite1 differs from Lite0 only in depth): trained through the CLI,
    exported with the parity check, recorded in bundle.json, and evaluated by the torch-free runtime like any
    detection bundle."""
    out = tmp_path / "lite2"
    r = run_loupe("train", "detect", parts_small, "--out", out, "--backbone", "lite2", "--input-size", "128",
                  "--crop", "96", "--epochs", "1", "--steps-per-epoch", "2", "--patience", "1", "--max-minutes", "60",
                  "-q", "--no-verify", env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "bundle.json").read_text())
    assert "verifier" not in meta and meta["training"]["params"]["verify"] is False     # --no-verify
    assert meta["training"]["params"]["backbone"] == "lite2" and meta["backbone"].startswith("efficientnet-lite2 ")
    assert "EfficientNet-Lite2" in meta["training"]["method"] and "blocks 0-6 frozen" in meta["training"]["method"]
    par = meta["parity"]
    assert par["max_abs_heatmap_diff"] < 2e-3 and par["same_detections"] >= 0.875
    r = run_loupe("eval", out, parts_small, "--json", env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["task"] == "detect" and res["n_images"] == 12 and 0 <= res["map50"] <= 1


def test_verifier_crop_side_follows_the_bundle(parts_small, tmp_path):
    """``--verify-crop 48`` (the side before session 15; bundles written then say 48): the verifier is fitted,
    exported and parity-checked at that side, and the runtime crops at the side its bundle names, so a 48 px
    bundle and an 80 px one both run and evaluate."""
    import onnxruntime as ort

    from loupe_dl_detect.model import Detector

    out = tmp_path / "crop48"
    r = run_loupe("train", "detect", parts_small, "--out", out, "--input-size", "128", "--crop", "96",
                  "--epochs", "2", "--steps-per-epoch", "2", "--patience", "2", "--max-minutes", "60", "-q",
                  "--verify-crop", "48", "--verify-epochs", "0", "--verify-candidates", "4", env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    b = Bundle.load(out)
    v = b.meta["verifier"]
    assert v["crop"] == 48 and b.meta["training"]["params"]["verify_crop"] == 48 and "[N, 3, 48, 48]" in v["input"]
    assert v["parity"]["crops"] > 0 and v["parity"]["max_abs_probs_diff"] < 1e-4
    sess = ort.InferenceSession(str(out / "verifier.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[1:] == [3, 48, 48]
    det = Detector(b, threads=1)
    assert det.verifier.side == 48 and det.verifier._crops.shape[1:] == (48, 48, 3)
    r = run_loupe("eval", out, parts_small, "--json", env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["task"] == "detect" and res["n_images"] == 12 and res["min_score"] == v["min_score"]
    r = run_loupe("train", "detect", parts_small, "--out", tmp_path / "bad", "--verify-crop", "8", env=ENV)
    assert r.returncode != 0 and "--verify-crop" in r.stderr


def test_verifier_runtime_rescores_the_candidates(tiny_detector, parts_small, tmp_path):
    """The runtime's second stage equals its parts composed by hand: the detector's candidates at the candidate
    score, the best ``max_candidates``, their crops of the BGR frame as RGB through the graph, sqrt(s * p[c]) with
    c the best part class, the combined threshold. A malformed ``verifier`` section names its field."""
    import onnxruntime as ort

    from host import BundleError, write_bundle
    from loupe_dl_detect.data import read_image
    from loupe_dl_detect.model import Detector
    from loupe_dl_detect.verify import crop_boxes

    b = Bundle.load(tiny_detector)
    v = b.meta["verifier"]
    # one look per candidate here (the second look near the threshold: the next test)
    det, alone = Detector(b, threads=1, second_look=False), Detector(b, threads=1, verify=False)
    assert det.verifier is not None and alone.verifier is None and det.verifier.second_look is None
    assert det.min_score == v["min_score"] and alone.min_score == b.meta["decode"]["min_score"]
    assert det.verifier.candidate_floor(v["min_score"]) == max(v["candidate_score"], v["min_score"] ** 2)
    assert det.verifier.candidate_floor(0.0) == v["candidate_score"]
    sess = ort.InferenceSession(str(tiny_detector / "verifier.onnx"), providers=["CPUExecutionProvider"])
    n_found = 0
    for path in sorted((parts_small / "test" / "images").iterdir())[:6]:
        bgr = read_image(path)
        got = det.predict(bgr, min_score=0.0)
        cand = alone.predict(bgr, min_score=v["candidate_score"])
        top = np.argsort(-cand.scores, kind="stable")[:v["max_candidates"]]
        assert len(got) == len(top)
        if not len(top):
            continue
        crops = crop_boxes(bgr[:, :, ::-1].copy(), cand.boxes[top], v["crop"], 0.75)   # the bundle's side (80)
        p = sess.run(["probs"], {"crops": crops.transpose(0, 3, 1, 2).astype(np.float32)})[0]
        assert p.shape == (len(top), 3) and np.allclose(p.sum(1), 1, atol=1e-5)
        c = p[:, 1:].argmax(1)
        want = np.sqrt(cand.scores[top] * p[np.arange(len(top)), c + 1])
        order = np.argsort(-want, kind="stable")
        assert np.allclose(got.scores, want[order], atol=1e-5) and np.array_equal(got.labels, c[order])
        assert np.allclose(got.boxes, cand.boxes[top][order])
        # the operating threshold on the combined score; candidates under min_score ** 2 (sqrt(s * p) <= sqrt(s)
        # cannot reach it) are not verified, and the result is the same as verifying every candidate
        d = det.predict(bgr)
        keep = got.scores >= v["min_score"]
        assert np.allclose(d.scores, got.scores[keep], atol=1e-6) and np.array_equal(d.labels, got.labels[keep])
        assert np.allclose(d.boxes, got.boxes[keep])
        n_found += len(d)
    assert n_found > 0
    bad = tmp_path / "bad"
    files = {n: tiny_detector / n for n in b.files if n not in ("bundle.json", "manifest.json")}
    write_bundle(bad, {**b.meta, "verifier": {**v, "max_candidates": 0}}, files)
    with pytest.raises(BundleError, match=r"bundle\.json.*verifier\.max_candidates"):
        Detector(Bundle.load(bad))
    write_bundle(bad, {**b.meta, "verifier": {k: x for k, x in v.items() if k != "min_score"}}, files)
    with pytest.raises(BundleError, match=r"bundle\.json.*verifier\.min_score.*missing"):
        Detector(Bundle.load(bad))


def test_tool_and_recipe(tiny_detector, parts_small, tmp_path):
    from loupe_dl_detect.data import read_image
    from loupe_dl_detect.tool import DetectTool

    ann = json.loads((parts_small / "test" / "annotations.json").read_text())
    img_path = parts_small / "test" / "images" / ann["images"][0]["file_name"]
    ref = {"path": str(tiny_detector), "sha256": model_sha256(tiny_detector)}
    out = check_tool_contract(DetectTool, read_image(img_path), {"model": ref})
    m = out.measurements
    # the tool gives the verifier's output (the bundle has one); verify: false the detector alone
    from loupe_dl_detect.model import Detector

    b = Bundle.load(tiny_detector)
    for verify, params in ((True, {"model": ref}), (False, {"model": ref, "verify": False})):
        d = Detector(b, threads=1, verify=verify).predict(read_image(img_path))
        mm = m if verify else check_tool_contract(DetectTool, read_image(img_path), params).measurements
        assert [p[:2] for p in mm["positions"]] == [[int(c), round(float(s), 4)] for s, c in zip(d.scores, d.labels)]
    assert m["count"] == m["count_nut"] + m["count_screw"] == len(m["positions"]) == len(out.overlays)
    assert all(s.kind == "rect" and s.label.split()[0] in ("nut", "screw") for s in out.overlays)
    if m["count"]:
        assert 0 < m["min_score"] <= 1
    # placement: a region where nothing is -> missing; every detected nut outside it -> misplaced
    out = check_tool_contract(DetectTool, read_image(img_path),
                              {"model": ref, "expected": [{"class": "nut", "region": [0, 0, 2, 2]}]})
    assert out.measurements["missing"] == 1 and out.measurements["placement_ok"] is False
    assert out.measurements["misplaced"] == out.measurements["count_nut"]

    # a recipe with limits on the total and on one class's count, run over the test images through `loupe run`
    truth = {im["file_name"]: sum(a["image_id"] == im["id"] for a in ann["annotations"]) for im in ann["images"]}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"loupe_recipe": 1, "name": "parts", "inspect": [
        {"tool": "detect.objects", "name": "parts", "params": {"model": ref}, "limits": {"count": {"min": 1}, "count_nut": {"max": 50}}}]}))
    assert run_loupe("validate", recipe).returncode == 0
    bad = tmp_path / "bad.yaml"   # a placement naming a class the bundle does not have is refused at load
    bad.write_text(yaml.safe_dump({"loupe_recipe": 1, "name": "parts", "inspect": [
        {"tool": "detect.objects", "name": "parts", "params": {"model": ref, "expected": [
            {"class": "bolt", "region": [0, 0, 10, 10]}]}}]}))
    r = run_loupe("validate", bad)
    assert r.returncode == 2 and "bolt" in r.stderr + r.stdout and "not among the model's classes" in r.stderr + r.stdout
    res = tmp_path / "res.jsonl"
    r = run_loupe("run", recipe, "--source", f"folder:{parts_small / 'test' / 'images'}", "--report",
                  f"jsonl:{res}", "-q", env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in res.read_text().splitlines()]
    assert len(rows) == 12
    right = sum(x["results"][0]["measurements"]["count"] == truth[Path(x["path"]).name] for x in rows)
    assert right >= 3, [(Path(x["path"]).name, x["results"][0]["measurements"]["count"]) for x in rows]
    for x in rows:
        assert x["verdict"] == ("pass" if x["results"][0]["measurements"]["count"] >= 1 else "fail")


def test_int8_optimize(tiny_detector, parts_small, tmp_path):
    out = tmp_path / "int8"
    r = run_loupe("optimize", tiny_detector, "--method", "int8", "--out", out, "--calib-images", "8", env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "bundle.json").read_text())
    rec = meta["optimization"]
    assert rec["method"] == "int8" and rec["n_quantized_nodes"] > 0
    acc = rec["accuracy"]
    assert acc["checked"] and acc["metric"] == "map50"
    assert acc["optimized"]["map50"] > 0.5 * acc["parent"]["map50"], acc
    # the detector is quantised; the verifier stays float, carried over unchanged
    parent = json.loads((tiny_detector / "manifest.json").read_text())["files"]
    child = json.loads((out / "manifest.json").read_text())["files"]
    assert child["verifier.onnx"] == parent["verifier.onnx"] and child["model.onnx"] != parent["model.onnx"]
    assert meta["verifier"] == json.loads((tiny_detector / "bundle.json").read_text())["verifier"]
    r = run_loupe("eval", out, parts_small, "--json", env=ENV)
    assert r.returncode == 0 and json.loads(r.stdout)["task"] == "detect"


BLOCK_TORCH = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
            return None
    sys.meta_path.insert(0, Block())
""")


def test_inference_without_torch(tiny_detector, parts_small):
    code = BLOCK_TORCH + textwrap.dedent(f"""
        from pathlib import Path
        import loupe_dl_detect.plugin, loupe_dl_detect.tool, loupe_dl_detect.evaluate
        from host import Bundle, Progress
        from loupe_dl_detect.data import read_image
        from loupe_dl_detect.model import Detector
        from loupe_dl_detect.tool import DetectRuntime
        b = Bundle.load({str(tiny_detector)!r})
        det = Detector(b)
        img = read_image(sorted(Path({str(parts_small)!r}, "test", "images").iterdir())[0])
        d = det.predict(img)
        assert det.verifier is not None          # the fixture's bundle re-scores with its verifier
        r = DetectRuntime().evaluate(b, Path({str(parts_small)!r}), None, Progress())
        assert "torch" not in sys.modules
        print("ok", len(d), r["map50"])
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={**__import__("os").environ, **ENV})
    assert p.returncode == 0 and p.stdout.startswith("ok"), p.stderr[-2000:]


def test_desktop_app_evaluates_detection(tiny_detector, parts_small, tmp_path, qtbot):
    """The desktop app's train workspace evaluates a detection bundle: detection appears as a task, the
    headline shows mAP50 and count accuracy, one precision-recall curve per class, and gallery tiles with
    the detected boxes drawn and the counts in their captions (detect.objects over the test images)."""
    import pytest

    pytest.importorskip("PyQt5")
    from host import create_plugin_manager
    from loupe_gui.train_ws import TrainWorkspace, model_tool

    pm = create_plugin_manager()
    assert "detect" in pm.catalogue.trainers and model_tool(pm.catalogue, "detect") == "detect.objects"
    ws = TrainWorkspace(pm)
    qtbot.addWidget(ws)
    ws.resize(1400, 900)
    ws.show()
    assert ws.open_bundle(tiny_detector, parts_small)
    qtbot.waitUntil(lambda: not ws._busy(), timeout=120000)
    assert ws.job.error is None, ws.job.error
    m = ws.result["metrics"]
    assert m["task"] == "detect" and m["n_images"] == 12
    assert f"mAP50 <b>{m['map50']:.3f}</b>" in ws.res_info.text() and "count accuracy" in ws.res_info.text()
    assert ws.task.currentData() == "detect" and ws.data.text() == str(parts_small)  # the opened bundle's task
    rows = ws.result["gallery"]["rows"]
    assert len(rows) == 12 and all("count" in r["measurements"] for r in rows)
    # precision-recall: the curves of the evaluation's report, one per class, shown in their own tab
    curves = json.loads((Path(m["report"]) / "pr_curves.json").read_text())
    assert ws.tabs.isTabVisible(ws.tabs.indexOf(ws.pr)) and ws.tabs.currentWidget() is ws.pr
    assert len(ws.pr.curves) == len(curves) >= 1
    assert all(name.split()[0] in curves for name in ws.pr.curves)
    assert not ws.tabs.isTabVisible(0)                      # no confusion matrix for detection
    # gallery: each tile carries the tool's boxes (image pixels) and its caption names the counts
    tiles = ws.result["gallery"]["tiles"]
    assert ws.gallery.count() == len(tiles) >= 6
    for i, t in enumerate(tiles):
        boxes = [s for s in t["overlays"] if s.kind == "rect"]
        assert len(boxes) == t["measurements"]["count"]
        assert f"{int(t['measurements']['count'])} found" in ws.gallery.item(i).text()
    assert sum(t["measurements"]["count"] for t in tiles) > 0
    # the boxes are painted: a tile with detections differs from the same tile drawn without its overlays
    from loupe_gui.train_ws import Gallery

    i = next(i for i, t in enumerate(tiles) if t["measurements"]["count"])
    bare = Gallery()
    qtbot.addWidget(bare)
    bare.set_tiles([{**tiles[i], "overlays": []}], ws._caption)
    size = ws.gallery.iconSize()
    assert ws.gallery.item(i).icon().pixmap(size).toImage() != bare.item(0).icon().pixmap(size).toImage()
    # opening a bundle again: the new evaluation's report folder replaces the old one, which is removed
    first = Path(m["report"])
    assert ws.open_bundle(tiny_detector, parts_small)
    qtbot.waitUntil(lambda: not ws._busy(), timeout=120000)
    second = Path(ws.result["metrics"]["report"])
    assert second != first and (second / "pr_curves.json").is_file() and not first.exists()
    # hidden before the test's last reference to it goes: a workspace garbage-collected while Qt paints one of its
    # charts (pytest-qt processes the pending paints after the test) would be deleted under that paint
    ws.close()


def test_verifier_second_look_near_the_threshold(tiny_detector, parts_small, tmp_path):
    """The trainer asks for a second look (``verifier.second_look``); the runtime gives it to the candidates whose
    one-look combined score lies in the band around the operating threshold, or above it with their class in doubt
    (and whose detector score could reach it): p becomes the mean of the graph's probabilities over the crop's 8
    quarter turns and mirror images, and with ``shift`` also over the crops of the box moved four ways, as they are
    and mirrored; the others keep one look. A malformed field names itself."""
    import onnxruntime as ort

    from host import BundleError, write_bundle
    from loupe_dl_detect.data import read_image
    from loupe_dl_detect.model import Detector
    from loupe_dl_detect.verify import crop_boxes, relabel

    b = Bundle.load(tiny_detector)
    v = b.meta["verifier"]
    assert v["second_look"] == {"looks": 8, "band": [0.3, 1.4], "doubt": 0.1, "shift": 0.08}
    # the trainer's field; a wide band without the doubt rule and a larger shift; a closed band with a low doubt
    # ratio and no shift: on the same graphs, so that the tiny model's few candidates fall in each
    files = {n: tiny_detector / n for n in b.files if n not in ("bundle.json", "manifest.json")}
    dets = [(Detector(b, threads=1), 0.3, 1.4, 0.1, 0.08)]
    for name, look in (("wide", {"looks": 8, "band": [0.5, 3.0], "shift": 0.2}),
                       ("doubt", {"looks": 8, "band": [1.0, 1.0], "doubt": 0.01})):
        write_bundle(tmp_path / name, {**b.meta, "verifier": {**v, "second_look": look}}, files)
        dets.append((Detector(Bundle.load(tmp_path / name), threads=1), *look["band"], look.get("doubt"),
                     look.get("shift")))
    one, alone = Detector(b, threads=1, second_look=False), Detector(b, threads=1, verify=False)
    sess = ort.InferenceSession(str(tiny_detector / "verifier.onnx"), providers=["CPUExecutionProvider"])
    thr, n_near, n_far, n_doubt, n_shift = v["min_score"], 0, 0, 0, 0
    for path in sorted((parts_small / "test" / "images").iterdir())[:6]:
        bgr = read_image(path)
        cand = alone.predict(bgr, min_score=max(v["candidate_score"], thr ** 2))
        top = np.argsort(-cand.scores, kind="stable")[:v["max_candidates"]]
        if not len(top):
            continue
        crops = crop_boxes(bgr[:, :, ::-1].copy(), cand.boxes[top], v["crop"], 0.75)
        looks = [np.rot90(crops, k, axes=(1, 2)) for k in range(4)]
        looks += [t[:, :, ::-1] for t in looks]

        def probs(x):
            return sess.run(["probs"], {"crops": np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32)})[0]

        p = [probs(x) for x in looks]
        s = cand.scores[top]
        one_look, _c = relabel(s, p[0])
        parts = np.sort(p[0][:, 1:], 1)     # part classes, without the background
        for det, lo, hi, doubt, shift in dets:
            doubtful = (parts[:, -2] >= doubt * parts[:, -1]) if doubt else np.zeros(len(s), bool)
            near = (one_look >= lo * thr) & ((one_look <= hi * thr) | doubtful)
            again = list(p)
            if shift:       # each box moved right, left, down and up by shift x its width / height, and mirrored
                for dx, dy in ((shift, 0), (-shift, 0), (0, shift), (0, -shift)):
                    b4 = cand.boxes[top].astype(np.float32)
                    b4 = b4 + np.array([dx, dy, dx, dy], np.float32) * np.tile(b4[:, 2:] - b4[:, :2], 2)
                    moved = crop_boxes(bgr[:, :, ::-1].copy(), b4, v["crop"], 0.75)
                    again += [probs(moved), probs(moved[:, :, ::-1])]
            want, c = relabel(s, np.where(near[:, None], np.mean(again, 0), p[0]))
            keep = want >= thr
            order = np.argsort(-want[keep], kind="stable")
            got = det.predict(bgr)
            assert np.allclose(got.scores, want[keep][order], atol=1e-5)
            assert np.array_equal(got.labels, c[keep][order])
            # loupe eval keeps every detection down to a low score and counts at the operating threshold: the
            # same band
            low = det.predict(bgr, min_score=thr ** 2, operating=thr)
            sel = low.scores >= thr
            assert np.allclose(low.scores[sel], got.scores, atol=1e-6)
            assert np.array_equal(low.labels[sel], got.labels)
            n_near, n_far = n_near + int(near.sum()), n_far + int((~near).sum())
            n_doubt += int((near & (one_look > hi * thr)).sum())
            n_shift += int(near.sum()) if shift else 0
        # without it (the tool's second_look: false), one look: the bundle's band makes no difference there
        assert np.allclose(one.predict(bgr).scores, np.sort(one_look[one_look >= thr])[::-1], atol=1e-5)
    assert n_near > 0 and n_far > 0 and n_doubt > 0 and n_shift > 0
    for bad in ({"looks": 8, "band": [1.2, 2.0]}, {"looks": 8, "band": [0.3, 1.4], "doubt": 0},
                {"looks": 8, "band": [0.3, 1.4], "shift": 0.9}):
        write_bundle(tmp_path / "bad", {**b.meta, "verifier": {**v, "second_look": bad}}, files)
        with pytest.raises(BundleError, match=r"bundle\.json.*verifier\.second_look"):
            Detector(Bundle.load(tmp_path / "bad"))


def test_dihedral_looks_are_the_seven_other_turns_and_mirrors():
    from loupe_dl_detect.verify import dihedral_looks

    x = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    got = dihedral_looks(x).reshape(7, 2, 3, 4, 4)
    want = [np.rot90(x, k, axes=(2, 3)) for k in range(4)]
    want += [w[..., ::-1] for w in want]
    keys = {w.tobytes() for w in want}
    assert len(keys) == 8 and {g.tobytes() for g in got} == keys - {x.tobytes()}
