"""No label is cut short: every tab title, table column title, button and one-line label of every workspace
fits in the space it gets, at the size the screenshots use (1600 x 960)."""
import pytest
import yaml

pytest.importorskip("PyQt5")

from host import create_plugin_manager  # noqa: E402


@pytest.fixture(scope="module")
def pm():
    pm = create_plugin_manager()
    if "classical.blob" not in pm.catalogue.tools:
        pytest.skip("needs classical.blob")
    return pm


def truncated(root) -> list[str]:
    """Every visible text under ``root`` that is narrower than the text it shows."""
    from PyQt5 import QtWidgets

    out = []
    for bar in root.findChildren(QtWidgets.QTabBar):
        if not bar.isVisible():
            continue
        fm = bar.fontMetrics()
        for i in range(bar.count()):
            if not bar.isTabVisible(i):
                continue
            if bar.tabRect(i).width() < fm.horizontalAdvance(bar.tabText(i)) + 8:
                out.append(f"tab {bar.tabText(i)!r}: {bar.tabRect(i).width()} px")
            if bar.tabRect(i).left() < 0 or bar.tabRect(i).right() > bar.width():   # scrolled out of sight
                out.append(f"tab {bar.tabText(i)!r} runs past the tab bar")
    for view in root.findChildren(QtWidgets.QTableWidget):
        if not view.isVisible():
            continue
        hh = view.horizontalHeader()
        fm = hh.fontMetrics()
        for c in range(view.columnCount()):
            item = view.horizontalHeaderItem(c)
            if item is None or hh.isSectionHidden(c):
                continue
            need = max(fm.horizontalAdvance(t) for t in item.text().split("\n")) + 8
            if hh.sectionSize(c) < need:
                out.append(f"column {item.text()!r}: {hh.sectionSize(c)} px < {need}")
            # the whole column must be on screen, not scrolled out of a too-narrow table
            if hh.sectionViewportPosition(c) + hh.sectionSize(c) > hh.viewport().width() + 1:
                out.append(f"column {item.text()!r} runs past the table's edge")
    for tree in root.findChildren(QtWidgets.QTreeWidget):
        if not tree.isVisible():
            continue
        fm = tree.fontMetrics()
        it = tree.topLevelItem(0)
        while it is not None:
            rect = tree.visualItemRect(it)
            if rect.isValid() and rect.left() + fm.horizontalAdvance(it.text(0)) + 6 > tree.viewport().width():
                out.append(f"tree item {it.text(0)!r} is cut at {tree.viewport().width()} px")
            it = tree.itemBelow(it)
    for w in root.findChildren(QtWidgets.QPushButton):
        need = w.fontMetrics().horizontalAdvance(w.text().replace("&", "")) + 8
        if w.isVisible() and w.text() and w.width() < need:
            out.append(f"button {w.text()!r}: {w.width()} px < {need}")
    for w in root.findChildren(QtWidgets.QCheckBox):            # Qt's own measure of the box and its text
        if w.isVisible() and w.text() and w.width() < w.sizeHint().width():
            out.append(f"check box {w.text()!r}: {w.width()} px < {w.sizeHint().width()}")
    for lab in root.findChildren(QtWidgets.QLabel):
        text = lab.text()
        if not lab.isVisible() or lab.wordWrap() or not text or "<" in text or "\n" in text:
            continue
        if lab.width() < lab.fontMetrics().horizontalAdvance(text):
            out.append(f"label {text!r}: {lab.width()} px")
    return out


@pytest.fixture
def themed(qapp):
    """The app as ``loupe gui`` shows it (its theme: fonts, style sheet), restored afterwards."""
    from loupe_gui import theme

    saved = (qapp.styleSheet(), qapp.palette(), qapp.font(), qapp.style().objectName())
    theme.apply(qapp)
    yield qapp
    sheet, palette, font, style = saved
    qapp.setStyleSheet(sheet)
    qapp.setPalette(palette)
    qapp.setFont(font)
    qapp.setStyle(style)


def test_no_truncated_labels(qtbot, pm, tmp_path, themed):
    from loupe_gui.app import MainWindow
    from loupe_gui.demo_data import PARTS_RECIPE, parts_folder

    parts_folder(tmp_path / "images", n=2)
    recipe = tmp_path / "washers.yaml"
    recipe.write_text(yaml.safe_dump(PARTS_RECIPE, sort_keys=False))
    win = MainWindow(pm)
    qtbot.addWidget(win)
    win.resize(1600, 960)
    win.show()
    rw = win.recipe_ws
    with qtbot.waitSignal(rw.idle, timeout=60000):
        rw.open_recipe(recipe)
    rw.select_step("inspect", 0)          # the limits table of the blob step, with its review columns
    assert rw.editor.limits.rowCount() > 0
    problems = {}
    for key in ("recipe", "run", "train", "collect"):
        win.show_workspace(key)
        qtbot.wait(50)                      # let the layout settle once it is shown (no state is awaited)
        problems[key] = truncated(win.stack.currentWidget())
    assert not any(problems.values()), (problems, rw.splitter.sizes(), win.size())
    # the trainer's result tabs all fit, including when every tab is shown
    tw = win.train_ws
    bar = tw.tabs.tabBar()
    assert all(bar.tabRect(i).width() >= bar.fontMetrics().horizontalAdvance(bar.tabText(i))
               for i in range(bar.count()))


def test_the_check_sees_truncation(qtbot):
    """The checker itself: a squeezed tab, column and button are reported."""
    from PyQt5 import QtWidgets

    w = QtWidgets.QWidget()
    qtbot.addWidget(w)
    lay = QtWidgets.QVBoxLayout(w)
    tabs = QtWidgets.QTabWidget()
    tabs.addTab(QtWidgets.QWidget(), "a rather long tab title")
    tabs.addTab(QtWidgets.QWidget(), "another long tab title")
    table = QtWidgets.QTableWidget(1, 3)
    table.setHorizontalHeaderLabels(["measurement", "review min", "review max"])
    table.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.Stretch)
    button = QtWidgets.QPushButton("Export bundle…")
    button.setFixedWidth(30)
    for x in (tabs, table, button):
        lay.addWidget(x)
    w.setFixedWidth(160)
    w.show()
    qtbot.wait(50)
    found = " ".join(truncated(w))
    assert "tab 'a rather long tab title'" in found or "tab 'another long tab title'" in found
    assert "column 'review min'" in found and "button 'Export bundle…'" in found
