"""The main window: a workspace switcher (Recipe, Run, Train, Collect) over one plugin manager."""
from __future__ import annotations

import sys
from pathlib import Path

from PyQt5 import QtCore, QtGui, QtWidgets

from host import __version__ as host_version
from host import create_plugin_manager

from . import __version__, theme

WORKSPACES = ("recipe", "run", "train", "collect")


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, pm=None, parent=None):
        super().__init__(parent)
        from .collect_ws import CollectWorkspace
        from .recipe_ws import RecipeWorkspace
        from .run_ws import RunWorkspace
        from .train_ws import TrainWorkspace

        self.pm = pm or create_plugin_manager()
        self.setWindowTitle("Loupe")
        self.resize(1500, 920)
        central = QtWidgets.QWidget()
        lay = QtWidgets.QHBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        self.nav = QtWidgets.QListWidget()
        self.nav.setObjectName("nav")
        self.nav.setFixedWidth(124)
        self.nav.setFocusPolicy(QtCore.Qt.NoFocus)
        self.stack = QtWidgets.QStackedWidget()
        lay.addWidget(self.nav)
        lay.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self.recipe_ws = RecipeWorkspace(self.pm)
        self.run_ws = RunWorkspace(self.pm)
        self.train_ws = TrainWorkspace(self.pm)
        self.collect_ws = CollectWorkspace(self.pm)
        for key, label, w in (("recipe", "Recipe", self.recipe_ws), ("run", "Run", self.run_ws),
                              ("train", "Train", self.train_ws), ("collect", "Collect", self.collect_ws)):
            it = QtWidgets.QListWidgetItem(label)
            it.setData(QtCore.Qt.UserRole, key)
            self.nav.addItem(it)
            self.stack.addWidget(w)
            w.status.connect(self._status)
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.nav.setCurrentRow(0)
        self.recipe_ws.recipeValidated.connect(self.run_ws.set_recipe)
        self._build_status_bar()
        self._build_menus()

    def _build_status_bar(self) -> None:
        """Pointer position on the left; versions, plugin and tool counts, load failures on the right."""
        sb = self.statusBar()
        self.pos_label = QtWidgets.QLabel("")
        sb.addWidget(self.pos_label, 1)
        cat = self.pm.catalogue
        failed = self.pm.load_report.failed
        info = (f"loupe-host {host_version} · gui {__version__} · {len(self.pm.load_report.plugins)} plugins · "
                f"{len(cat.tools)} tools · {len(cat.trainers)} trainers")
        if failed:
            info += f" · {len(failed)} plugin(s) failed to load: " + ", ".join(p.name for p in failed)
        sb.addPermanentWidget(QtWidgets.QLabel(info))

    def _build_menus(self) -> None:
        m = self.menuBar().addMenu("&File")
        m.addAction("&New recipe", self.recipe_ws.new_recipe, QtGui.QKeySequence.New)
        m.addAction("&Open recipe…", self.recipe_ws._open_dialog, QtGui.QKeySequence.Open)
        m.addAction("&Save recipe", self.recipe_ws.save, QtGui.QKeySequence.Save)
        m.addAction("Open &image…", self.recipe_ws._open_image_dialog)
        m.addSeparator()
        m.addAction("&Quit", self.close, QtGui.QKeySequence.Quit)
        v = self.menuBar().addMenu("&View")
        for i, key in enumerate(WORKSPACES):
            v.addAction(key.capitalize(), lambda i=i: self.nav.setCurrentRow(i), QtGui.QKeySequence(f"Ctrl+{i + 1}"))

    def _status(self, text: str) -> None:
        self.pos_label.setText(text)

    def show_workspace(self, key: str) -> None:
        self.nav.setCurrentRow(WORKSPACES.index(key))

    def closeEvent(self, e):
        for w in (self.run_ws, self.train_ws, self.collect_ws):
            stop = getattr(w, "shutdown", None)
            if stop:
                stop()
        self.recipe_ws._close_pipeline()
        super().closeEvent(e)


def make_app(argv=None) -> QtWidgets.QApplication:
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(list(argv or sys.argv[:1]))
    app.setApplicationName("Loupe")
    theme.apply(app)
    return app


def main(recipe: str | None = None, image: str | None = None, workspace: str = "recipe", argv=None) -> int:
    app = make_app(argv)
    win = MainWindow()
    if recipe:
        win.recipe_ws.open_recipe(Path(recipe))
    if image:
        win.recipe_ws.open_image(Path(image))
    win.show_workspace(workspace)
    win.show()
    return app.exec_()
