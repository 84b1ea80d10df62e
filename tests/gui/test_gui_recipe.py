"""Recipe workspace: open a recipe, edit a parameter through the generated form, run on an image,
check the overlays drawn and the measurements against the known truth; inline validation; save."""
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("PyQt5")

from host import Recipe, create_plugin_manager  # noqa: E402
from host.testing import run_loupe  # noqa: E402


@pytest.fixture(scope="module")
def pm():
    return create_plugin_manager()


@pytest.fixture
def tray(tmp_path, pm):
    if "classical.blob" not in pm.catalogue.tools:
        pytest.skip("needs classical.blob")
    from loupe_gui.demo_data import PARTS_RECIPE, parts_folder

    truth = parts_folder(tmp_path / "images", n=3)
    recipe = tmp_path / "washers.yaml"
    recipe.write_text(yaml.safe_dump(PARTS_RECIPE, sort_keys=False))
    return recipe, truth


def _green_pixels(widget, red: bool = False) -> int:
    img = widget.grab().toImage()
    n = 0
    for y in range(0, img.height(), 2):
        for x in range(0, img.width(), 2):
            c = img.pixelColor(x, y)
            if red and c.red() > 200 and c.green() < 110 and c.blue() < 110:
                n += 1
            elif not red and c.green() > 150 and c.red() < 110 and c.blue() < 150:
                n += 1
    return n


def test_open_edit_run(qtbot, pm, tray, tmp_path):
    from loupe_gui.recipe_ws import RecipeWorkspace

    recipe_path, truth = tray
    ws = RecipeWorkspace(pm)
    qtbot.addWidget(ws)
    ws.resize(1400, 900)
    ws.show()
    assert ws.open_recipe(recipe_path) == []
    ws.rebuild()
    ws.show_frame(0)                      # tray_00: one washer missing
    res = ws.result
    assert res is not None and Path(res.path).name == "tray_00.png"
    blob = next(r for r in res.results if r.step == "washers")
    assert blob.measurements["count"] == truth["tray_00.png"] == 11
    assert blob.verdict == "fail" and res.verdict == "fail"
    # the overlays of the blob step are on the view, drawn in the colour of the step's verdict (fail: one is
    # missing), as in the HTML report (host.resolved_overlays)
    assert len(ws.view.overlays) >= 11
    assert all(s.status == "fail" for s in ws.view.overlays if s.kind == "polygon")
    assert _green_pixels(ws.view, red=True) > 50 and _green_pixels(ws.view) < 10
    rows = {(ws.table.item(i, 0).text(), ws.table.item(i, 1).text()): ws.table.item(i, 2).text()
            for i in range(ws.table.rowCount())}
    assert rows[("washers", "count")] == "11"
    verdict = {ws.table.item(i, 1).text(): ws.table.item(i, 4).text() for i in range(ws.table.rowCount())
               if ws.table.item(i, 0).text() == "washers"}
    assert verdict["count"] == "FAIL"

    ws.show_frame(1)                      # tray_01: all 12
    assert next(r for r in ws.result.results if r.step == "washers").measurements["count"] == 12
    assert ws.result.verdict == "pass"

    # edit a parameter through the generated form: a min_area above a washer's area removes every blob
    ws.select_step("inspect", 0)
    form = ws.editor.form
    assert form is not None and set(form.editors) >= {"min_area", "polarity", "threshold"}
    with qtbot.waitSignal(ws.idle, timeout=60000):
        form.editors["min_area"].widget.setValue(20000.0)
    assert next(r for r in ws.result.results if r.step == "washers").measurements["count"] == 0
    assert ws.result.verdict == "fail"
    assert ws.doc["inspect"][0]["params"]["min_area"] == 20000.0
    with qtbot.waitSignal(ws.idle, timeout=60000):
        form.editors["min_area"].widget.setValue(400.0)
    assert next(r for r in ws.result.results if r.step == "washers").measurements["count"] == 12

    # a limit with min > max is shown inline, the step is flagged, and nothing runs
    table = ws.editor.limits
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).text() == "count")
    with qtbot.waitSignal(ws.idle, timeout=60000):
        table.item(row, 2).setText("10")
    assert any("limits.count" in p and "greater than max" in p for p in ws.problems)
    assert ws.problem_list.count() == len(ws.problems)
    assert ws.editor.limits_error.isVisibleTo(ws) and "greater than max" in ws.editor.limits_error.text()
    assert ws.result is None and ws.view.banner == ("INVALID", "fail")
    with qtbot.waitSignal(ws.idle, timeout=60000):
        table.item(row, 2).setText("12")
    assert not ws.problems and ws.result is not None

    # ROI drawn on the image restricts the lighting step
    ws.select_step("inspect", 1)
    with qtbot.waitSignal(ws.idle, timeout=60000):
        ws.view.roiDrawn.emit((10, 10, 50, 40))
    assert ws.doc["inspect"][1].get("roi") == [10, 10, 50, 40]
    assert any(r.step == "lighting" and r.roi == (10, 10, 50, 40) for r in ws.result.results)

    # save: the canonical YAML loads back with the edits
    out = tmp_path / "saved.yaml"
    assert ws.save_to(out)
    again = Recipe.load(out, pm.catalogue)
    assert again.inspect[0].params.min_area == 400.0
    assert again.inspect[1].roi == (10, 10, 50, 40)
    ws.close()


def test_form_is_generated_for_every_tool(qtbot, pm):
    """Every registered tool gets a form whose values validate against its own Params model."""
    from loupe_gui.forms import ParamForm

    for tid, entry in sorted(pm.catalogue.tools.items()):
        form = ParamForm(entry.cls.Params)
        qtbot.addWidget(form)
        assert set(form.editors) == set(entry.cls.Params.model_fields), tid
        try:
            defaults = entry.cls.Params()
        except Exception:
            continue  # the model needs the user to fill something in (a model path, one of width/height)
        got = form.validate()
        assert got is not None, (tid, form.values())
        assert got == defaults, tid


def test_invalid_recipe_file_opens_with_problems(qtbot, pm, tmp_path):
    from loupe_gui.recipe_ws import RecipeWorkspace

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"loupe_recipe": 1, "inspect": [
        {"tool": "classical.blob", "params": {"min_area": "lots"}},
        {"tool": "classical.nosuchtool"}]}))
    ws = RecipeWorkspace(pm)
    qtbot.addWidget(ws)
    problems = ws.open_recipe(bad)
    assert any("unknown tool" in p for p in problems)
    assert any("params.min_area" in p for p in problems)
    assert ws.problem_list.count() == len(problems)
    texts = [ws.steps.item(i).text() for i in range(ws.steps.count())]
    assert sum("⚠" in t for t in texts) == 2
    ws.select_step("inspect", 0)  # the bad parameter is shown under its field in the generated form
    err = ws.editor.form.errors["min_area"]
    assert err.isVisibleTo(ws) and "number" in err.text()


def test_gui_command_registered():
    r = run_loupe("gui", "--help")
    assert r.returncode == 0 and "RECIPE" in r.stdout.upper()
    r = run_loupe("gui", "no-such-recipe.yaml")
    assert r.returncode == 2 and "not found" in r.stderr


def test_undo_redo(qtbot, pm, tray):
    """Every edit goes on an undo stack: undo and redo restore the document, the form and the result."""
    from loupe_gui.recipe_ws import RecipeWorkspace

    recipe_path, _ = tray
    ws = RecipeWorkspace(pm)
    qtbot.addWidget(ws)
    ws.resize(1400, 900)
    ws.show()
    with qtbot.waitSignal(ws.idle, timeout=60000):
        ws.open_recipe(recipe_path)
    ws.show_frame(1)                                        # all 12 washers
    original = yaml.safe_load(recipe_path.read_text())
    assert not ws.undo_stack.canUndo()
    ws.select_step("inspect", 0)
    with qtbot.waitSignal(ws.idle, timeout=60000):
        ws.editor.form.editors["min_area"].widget.setValue(20000.0)
    assert next(r for r in ws.result.results if r.step == "washers").measurements["count"] == 0
    assert ws.undo_stack.canUndo() and ws.act_undo.isEnabled()
    assert ws.act_undo.text() == "Undo edit washers"
    with qtbot.waitSignal(ws.idle, timeout=60000):
        ws.add_step("classical.gray")
    assert [s["tool"] for s in ws.doc["preprocess"]] == [s["tool"] for s in original.get("preprocess") or []] + [
        "classical.gray"]

    with qtbot.waitSignal(ws.idle, timeout=60000):
        ws.act_undo.trigger()                               # the added step goes
    assert len(ws.doc["preprocess"]) == len(original.get("preprocess") or [])
    with qtbot.waitSignal(ws.idle, timeout=60000):
        ws.act_undo.trigger()                               # min_area back to the file's value
    assert ws.doc["inspect"][0]["params"]["min_area"] == original["inspect"][0]["params"]["min_area"]
    assert next(r for r in ws.result.results if r.step == "washers").measurements["count"] == 12
    ws.select_step("inspect", 0)
    assert ws.editor.form.editors["min_area"].widget.value() == original["inspect"][0]["params"]["min_area"]
    assert not ws.undo_stack.canUndo()

    with qtbot.waitSignal(ws.idle, timeout=60000):
        ws.act_redo.trigger()
    assert ws.doc["inspect"][0]["params"]["min_area"] == 20000.0
    assert next(r for r in ws.result.results if r.step == "washers").measurements["count"] == 0
    with qtbot.waitSignal(ws.idle, timeout=60000):
        ws.act_redo.trigger()
    assert ws.doc["preprocess"][-1]["tool"] == "classical.gray"
    assert not ws.undo_stack.canRedo()
    # opening a file starts a new history
    with qtbot.waitSignal(ws.idle, timeout=60000):
        ws.open_recipe(recipe_path)
    assert not ws.undo_stack.canUndo()
