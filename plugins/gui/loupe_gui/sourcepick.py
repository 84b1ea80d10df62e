"""One source-selection widget for every workspace: a path field with a browse button, and the source picker
(kind from the catalogue's sources, target, and the kind's options as a form generated from its ``Params``).

The run view, the collection workspace and the trainer workspace (its data folder) all use these, so a
source is chosen the same way everywhere.
"""
from __future__ import annotations

from PyQt5 import QtCore, QtWidgets

from host import UsageError


class PathEdit(QtWidgets.QWidget):
    """A line edit with a "…" button that opens a folder or file dialog.

    ``mode`` is ``"folder"``, ``"file"`` or a callable returning either (e.g. from a source kind).
    ``chosen`` is emitted after a dialog or an edit is finished.
    """

    chosen = QtCore.pyqtSignal(str)

    def __init__(self, placeholder: str = "", mode="folder", title: str = "Choose", parent=None):
        super().__init__(parent)
        self.mode, self.title = mode, title
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.edit = QtWidgets.QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.editingFinished.connect(lambda: self.chosen.emit(self.text()))
        self.button = QtWidgets.QToolButton()
        self.button.setText("…")
        self.button.clicked.connect(self.browse)
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.button)

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, text: str) -> None:  # noqa: N802 - Qt naming, so it stands in for a QLineEdit
        self.edit.setText(text)

    def browse(self) -> None:
        mode = self.mode() if callable(self.mode) else self.mode
        if mode == "folder":
            path = QtWidgets.QFileDialog.getExistingDirectory(self, self.title, self.text())
        else:
            path, _ = QtWidgets.QFileDialog.getOpenFileName(self, self.title, self.text())
        if path:
            self.edit.setText(path)
            self.chosen.emit(path)


class SourcePicker(QtWidgets.QWidget):
    """Source kind, target and options, as a form: ``spec()`` gives ``"scheme:target"``, ``options()`` the
    validated options. With ``recipe_entry`` the first kind is "the recipe's source" (``spec()`` is None)."""

    changed = QtCore.pyqtSignal()

    def __init__(self, catalogue, recipe_entry: bool = False, default: str | None = None, options: bool = True,
                 parent=None):
        super().__init__(parent)
        self.catalogue = catalogue
        self.with_options = options
        self.form = None
        lay = QtWidgets.QFormLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.scheme = QtWidgets.QComboBox()
        if recipe_entry:
            self.scheme.addItem("the recipe's source", "")
        for s, e in sorted(catalogue.sources.items()):
            self.scheme.addItem(f"{s}  —  {e.cls.description[:40]}", s)
            self.scheme.setItemData(self.scheme.count() - 1, e.cls.description, QtCore.Qt.ToolTipRole)
        lay.addRow("kind", self.scheme)
        self.path = PathEdit("folder, video file or camera index",
                             mode=lambda: "folder" if (self.scheme.currentData() or "folder") == "folder" else "file",
                             title="Source")
        self.target = self.path.edit
        lay.addRow("target", self.path)
        self.opts = QtWidgets.QWidget()
        self.opts_lay = QtWidgets.QVBoxLayout(self.opts)
        self.opts_lay.setContentsMargins(0, 0, 0, 0)
        lay.addRow(self.opts)
        self.scheme.currentIndexChanged.connect(self._scheme_changed)
        i = self.scheme.findData(default) if default else -1
        if i >= 0:
            self.scheme.setCurrentIndex(i)
            if default == "camera":
                self.target.setText("0")
        self._scheme_changed()

    def _scheme_changed(self, *_):
        """The chosen kind's options, as a form generated from its Params (less ``target``)."""
        from .forms import ParamForm

        if self.form is not None:
            self.form.setParent(None)
            self.form.deleteLater()
            self.form = None
        scheme = self.scheme.currentData()
        if scheme and self.with_options:
            self.form = ParamForm(self.catalogue.sources[scheme].cls.Params, skip=("target",), compact=True)
            self.opts_lay.addWidget(self.form)
        self.changed.emit()

    def set_spec(self, spec: str) -> None:
        scheme, target = spec.split(":", 1) if ":" in spec else (spec, "")
        i = self.scheme.findData(scheme)
        if i < 0:
            raise UsageError(f"no source kind {scheme!r} is installed")
        self.scheme.setCurrentIndex(i)
        self.target.setText(target)

    def spec(self) -> str | None:
        scheme = self.scheme.currentData()
        return f"{scheme}:{self.target.text().strip()}" if scheme else None

    def options(self) -> dict:
        if self.form is None:
            return {}
        if self.form.validate() is None:
            raise UsageError("fix the highlighted source options")
        return self.form.values()
