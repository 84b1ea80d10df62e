"""The desktop app's trainer workspace evaluates a segmentation bundle like the other tasks (offscreen:
tests/conftest.py)."""
import pytest

pytest.importorskip("PyQt5")

from host import create_plugin_manager  # noqa: E402


def test_workspace_evaluates_segment_bundle(qtbot, seg_bundle, seg_data):
    from loupe_gui.train_ws import TrainWorkspace

    pm = create_plugin_manager()
    assert "segment" in pm.catalogue.trainers and "segment" in pm.catalogue.runtimes
    ws = TrainWorkspace(pm)
    qtbot.addWidget(ws)
    ws.resize(1400, 900)
    ws.show()
    ws.set_data(seg_data, task="segment")
    # the trainer's options form is generated from its Params
    assert set(ws.form.editors) == set(pm.catalogue.trainers["segment"].cls.Params.model_fields)
    qtbot.waitUntil(lambda: not ws._busy(), timeout=60000)
    assert ws.open_bundle(seg_bundle, seg_data)
    qtbot.waitUntil(lambda: not ws._busy(), timeout=120000)
    assert ws.job.error is None, ws.job.error
    m = ws.result["metrics"]
    assert m["task"] == "segment" and m["n_images"] == 13
    gal = ws.result["gallery"]
    assert gal["tool"] == "segment.defects" and gal["tiles"]
    assert all("/masks/" not in t["path"] for t in gal["tiles"])        # masks are labels, not test images
    assert all(t["image"].ndim == 3 for t in gal["tiles"])
    # the ROC and histogram come from the per-image defect scores of the evaluation
    assert ws._score_data is not None and len(ws._score_data[0]) == 13
    if m["image_auroc"] is not None:
        assert ws.auroc == pytest.approx(m["image_auroc"], abs=1e-9)
    assert "image AUROC" in ws.res_info.text()
    assert f"defect IoU <b>{m['defect_iou']:.3f}</b>" in ws.res_info.text()
    assert f"mean IoU <b>{m['mean_iou']:.3f}</b>" in ws.res_info.text()
    # the gallery draws each tile's regions: the tool's polygons, coloured by class, in image pixels
    for t in gal["tiles"]:
        polys = [s for s in t["overlays"] if s.kind == "polygon"]
        if t["measurements"]["region_count"] > 0:
            assert polys and all(s.color and s.label for s in polys)
    assert not ws.tabs.isTabVisible(ws.tabs.indexOf(ws.pr))       # precision-recall is detection's
    ws.close()  # no pending paint of its charts when the test's reference to it goes (see tests/detect)
