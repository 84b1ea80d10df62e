"""Run view (recipe over a folder into reporters, counters and failures) and image collection."""
import json

import pytest
import yaml

pytest.importorskip("PyQt5")

from host import Recipe, create_plugin_manager  # noqa: E402


@pytest.fixture(scope="module")
def pm():
    pm = create_plugin_manager()
    if "classical.blob" not in pm.catalogue.tools:
        pytest.skip("needs classical.blob")
    return pm


@pytest.fixture
def tray(tmp_path, pm):
    from loupe_gui.demo_data import PARTS_RECIPE, parts_folder

    truth = parts_folder(tmp_path / "images", n=6)
    path = tmp_path / "washers.yaml"
    path.write_text(yaml.safe_dump(PARTS_RECIPE, sort_keys=False))
    return Recipe.load(path, pm.catalogue), truth


def test_run_view(qtbot, pm, tray, tmp_path):
    from loupe_gui.run_ws import RunWorkspace

    recipe, truth = tray
    ws = RunWorkspace(pm)
    qtbot.addWidget(ws)
    ws.set_recipe(recipe)
    chk, edit = ws.report_rows["jsonl"]
    chk.setChecked(True)
    edit.setText(str(tmp_path / "out.jsonl"))
    with qtbot.waitSignal(ws.idle, timeout=120000):
        assert ws.start()
    assert ws.is_idle() and ws.last_snapshot["frames"] == 6
    want_fail = sum(1 for n in truth.values() if n != 12)
    assert ws.worker.error is None
    # the headline is the run's verdict counts, not the last frame's verdict
    assert ws.headline_text == f"{6 - want_fail} / 6 PASS — {want_fail} FAIL"
    assert ws.headline_counts == {"pass": 6 - want_fail, "review": 0, "fail": want_fail, "error": 0}
    assert ws.view.banner[0].startswith("last frame: ")
    assert ws.counters["fail"].value.text() == str(want_fail)
    assert ws.counters["pass"].value.text() == str(6 - want_fail)
    assert ws.failures.count() == want_fail
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 6
    verdicts = {json.loads(x)["path"].rsplit("/", 1)[-1]: json.loads(x)["verdict"] for x in lines}
    assert verdicts == {k: ("pass" if n == 12 else "fail") for k, n in truth.items()}
    assert ws.step_table.rowCount() == 2
    assert ws.start_btn.isEnabled() and not ws.stop_btn.isEnabled()


def test_run_view_stop(qtbot, pm, tray, tmp_path):
    """Stop finishes the current frame and closes the reporters (a watched folder never ends by itself)."""
    from loupe_gui.run_ws import RunWorkspace

    recipe, _ = tray
    ws = RunWorkspace(pm)
    qtbot.addWidget(ws)
    ws.set_recipe(recipe)
    i = ws.scheme.findData("folder")
    ws.scheme.setCurrentIndex(i)
    ws.target.setText(str(tmp_path / "images"))
    if "watch" not in ws.source_form.editors:
        pytest.skip("the folder source has no watch mode")
    ws.source_form.editors["watch"].set_value(True)        # a hot folder: the run only ends on Stop
    with qtbot.waitSignal(ws.snapshotShown, timeout=120000, check_params_cb=lambda snap: snap["frames"] == 6):
        assert ws.start()
    assert ws.worker.isRunning()
    with qtbot.waitSignal(ws.idle, timeout=120000):
        ws.stop()
    assert ws.worker.error is None, ws.worker.error
    assert ws.worker.summary.frames == 6
    assert "stopped" in ws.message.text()


def test_collect_into_labelled_folder(qtbot, pm, tray, tmp_path):
    import cv2

    from loupe_gui.collect_ws import CollectWorkspace

    ws = CollectWorkspace(pm)
    qtbot.addWidget(ws)
    ws.set_source(f"folder:{tmp_path / 'images'}")
    ws.folder.setText(str(tmp_path / "dataset"))
    with qtbot.waitSignal(ws.frameShown, timeout=60000):
        assert ws.start()
    ws.label.setEditText("good")
    p1 = ws.capture()
    ws.label.setEditText("missing")
    p2 = ws.capture()
    ws.split.setCurrentText("test")
    p3 = ws.capture()
    with qtbot.waitSignal(ws.idle, timeout=60000):
        ws.stop()
    assert ws.start_btn.isEnabled() and not ws.stop_btn.isEnabled()
    assert p1.parent == tmp_path / "dataset" / "train" / "good"
    assert p2.parent == tmp_path / "dataset" / "train" / "missing"
    assert p3.parent == tmp_path / "dataset" / "test" / "missing"
    img = cv2.imread(str(p1), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.shape == ws.current.image.shape
    rows = {(ws.counts.item(r, 0).text(), ws.counts.item(r, 1).text()): ws.counts.item(r, 2).text()
            for r in range(ws.counts.rowCount())}
    assert rows == {("train", "good"): "1", ("train", "missing"): "1", ("test", "missing"): "1"}
    ws.label.setEditText("")
    assert ws.capture() is None and "label" in ws.message.text()
