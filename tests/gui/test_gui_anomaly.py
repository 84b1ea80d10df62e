"""Trainer workspace, anomaly task: a tiny PatchCore model trained to completion from the GUI, and the ROC,
score histogram, threshold slider and heatmap gallery checked against the runtime's own evaluation."""
import numpy as np
import pytest

pytest.importorskip("PyQt5")

from host import create_plugin_manager  # noqa: E402

#: small and fast: 128 px input, a small bank; trains in ~15-25 s on the 2-core machine
TINY = {"image_size": 128, "max_bank": 1024, "threads": 2}


@pytest.fixture(scope="module")
def pm():
    pm = create_plugin_manager()
    if "anomaly" not in pm.catalogue.trainers or "anomaly" not in pm.catalogue.runtimes:
        pytest.skip("needs the anomaly trainer and runtime")
    return pm


@pytest.fixture(scope="module")
def texture(tmp_path_factory):
    samples = pytest.importorskip("loupe_trainer.samples")
    return samples.make_texture_dataset(tmp_path_factory.mktemp("anomaly"), "brushed_metal", n_train=12,
                                        n_test_good=6, n_test_defect=2, size=128)


def test_train_anomaly_roc_histogram_heatmaps(qtbot, pm, texture, tmp_path):
    from loupe_gui.train_ws import TrainWorkspace

    ws = TrainWorkspace(pm)
    qtbot.addWidget(ws)
    ws.resize(1500, 900)
    ws.show()
    with qtbot.waitSignal(ws.idle, timeout=120000):
        ws.set_data(texture, task="anomaly")
    assert ws.summary is not None
    ws.out.setText(str(tmp_path / "tiny-anomaly.bundle"))
    # a trainer without epochs shows the score distribution where the loss curves would be
    with qtbot.waitSignal(ws.idle, timeout=1200000):
        assert ws.train(TINY)
        assert ws.curves.currentWidget() is ws.score_dist
    assert ws.job.error is None, ws.job.error
    assert ws.is_idle() and ws.opt_btn.isEnabled() and ws.train_btn.isEnabled()
    assert (tmp_path / "tiny-anomaly.bundle" / "manifest.json").is_file()
    m = ws.result["metrics"]
    assert m["task"] == "anomaly" and m["n_good"] == 6 and m["n_defective"] == 6

    # the runtime gives no per-image scores: the GUI ran anomaly.patchcore over every test image
    gal = ws.result["gallery"]
    assert gal["tool"] == "anomaly.patchcore"
    assert len(gal["rows"]) == 12
    scores, labels = ws._score_data
    assert len(scores) == 12 and labels.sum() == 6
    # ROC: the area the view draws is the runtime's image AUROC (the tool's score is raw / threshold)
    # no Confusion tab for an anomaly model; the score distribution replaces the (empty) loss panels
    assert ws.tabs.isTabVisible(1) and not ws.tabs.isTabVisible(0)
    assert ws.curves.currentWidget() is ws.score_dist
    assert sorted(len(v) for _, v, _ in ws.score_dist.groups) == [6, 6]
    assert ws.score_dist.threshold == 1.0
    assert ws.auroc == pytest.approx(m["image_auroc"], abs=1e-9)
    assert any(name.startswith("AUROC") for name in ws.roc.curves)
    # histogram: every test image in its group (good / defect)
    sizes = sorted(len(v) for _, v, _ in ws.hist.groups)
    assert sizes == [6, 6]

    # the slider starts at the trained threshold (1.0 in normalised units): the counts equal the runtime's
    c = ws.threshold_counts
    assert c["threshold"] == 1.0 and ws.model_threshold == 1.0
    conf = m["confusion"]
    assert (c["tp"], c["fp"], c["fn"], c["tn"]) == (conf["tp"], conf["fp"], conf["fn"], conf["tn"])
    assert c["f1"] == pytest.approx(m["f1"], abs=1e-9)
    assert "(the trained threshold)" in ws.thr_label.text()
    # below every score: nothing missed, every good part rejected; above every score: the reverse
    ws.set_threshold(ws._thr_range[0])
    low = dict(ws.threshold_counts)
    assert (low["fn"], low["fp"], low["tp"]) == (0, 6, 6)
    ws.set_threshold(ws._thr_range[1])
    high = dict(ws.threshold_counts)
    assert (high["fn"], high["fp"], high["tp"], high["f1"]) == (6, 0, 0, 0.0)
    # a sweep: misses never decrease and false rejects never increase as the threshold rises, and each step's
    # counts are the ones the scores give
    prev = None
    for v in range(0, 1001, 50):
        ws.slider.setValue(v)
        c = ws.threshold_counts
        pred = scores > c["threshold"]
        assert c["fn"] == int((~pred & labels).sum()) and c["fp"] == int((pred & ~labels).sum())
        if prev is not None:
            assert c["fn"] >= prev["fn"] and c["fp"] <= prev["fp"]
        prev = dict(c)
        assert f"missed defects <b>{c['fn']}</b>" in ws.thr_label.text()
    # the histogram draws its threshold line where the slider is
    assert ws.hist.threshold == pytest.approx(ws.threshold())

    # heatmap gallery: tiles of good and defective test images, each with its heatmap and score
    tiles = gal["tiles"]
    assert ws.gallery.count() == len(tiles) >= 8
    assert {t["label"] for t in tiles} == {"good", "dent", "scratch", "spot"}
    by_path = {r["path"]: r["measurements"]["score"] for r in gal["rows"]}
    for t in tiles:
        assert t["image"].ndim == 3 and t["measurements"]["score"] == by_path[t["path"]]
    # the live curves: per stage, no evaluation figure on a training curve
    assert not any(n.startswith("eval") for n in ws.metric_chart.curves)
    img = ws.grab().toImage()
    assert not img.isNull()

    # optimise from the workspace: int8 in the worker thread, compared with the parent
    if "int8" not in pm.catalogue.optimizers:
        pytest.skip("no int8 optimiser installed")
    ws.opt_method.setCurrentIndex(ws.opt_method.findData("int8"))
    assert ws.opt_btn.isEnabled()
    # explicit float groups: the sensitivity search (18 quantisations) is too slow for a GUI test
    with qtbot.waitSignal(ws.idle, timeout=1200000):
        assert ws.optimise({"keep_float": ["stem", "block0", "block1"], "calib_images": 8})
        assert not ws.opt_btn.isEnabled() and ws.cancel_btn.isEnabled()
    assert ws.job.error is None, ws.job.error
    assert ws.opt_btn.isEnabled()
    child, parent = ws.opt_result["bundle"], ws.opt_result["parent"]
    assert child.path == tmp_path / "tiny-anomaly.bundle-int8" and parent.path == ws.bundle.path
    rec = child.meta["optimization"]
    assert rec["method"] == "int8" and rec["parent"]["sha256"] == parent.sha256
    assert rec["float_groups"] == ["stem", "block0", "block1"]
    rows = {k: (a, c) for k, a, c in ws.opt_result["rows"]}
    # the sizes shown are the bundles' on disk; the int8 graph is smaller
    assert float(rows["bundle size (MB)"][1]) < float(rows["bundle size (MB)"][0])
    acc = rec["accuracy"]
    assert acc["checked"] and acc["metric"] == "image_auroc"
    # the parent's figure in the table is the runtime's evaluation of the parent on the same test split
    assert acc["parent"]["image_auroc"] == pytest.approx(m["image_auroc"], abs=1e-9)
    assert rows["image AUROC"] == (f"{acc['parent']['image_auroc']:.4g}", f"{acc['optimized']['image_auroc']:.4g}")
    assert "ms / image" in rows
    assert ws.opt_table.rowCount() == len(ws.opt_result["rows"])
    assert ws.tabs.currentWidget() is ws.opt_tab
    assert not any(n.startswith("accuracy check") for n in ws.metric_chart.curves)
