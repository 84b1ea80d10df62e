"""The recipe workspace (Sherlock-style): image, steps, generated parameter forms, live re-run."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from PyQt5 import QtCore, QtGui, QtWidgets

from host import Frame, IMAGE_EXTENSIONS, Limit, Pipeline, Recipe, RecipeError, UsageError, resolved_overlays

from . import theme
from .forms import ParamForm
from .frames import FrameBrowser
from .imageview import ImageView

_WHERE = re.compile(r"^(preprocess|inspect)\[(\d+)\]")
_FIELD = re.compile(r"^(?:preprocess|inspect)\[\d+\] \(.*?\): (params|limits)\.([A-Za-z0-9_]+)")
LIMIT_KEYS = ("min", "max", "review_min", "review_max")


def empty_doc() -> dict[str, Any]:
    return {"loupe_recipe": 1, "name": "untitled", "source": None, "preprocess": [], "inspect": [],
            "decision": "all", "report": []}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        # a per-object list (areas, centroids): its length and the first values; the cell's tooltip has all
        def one(x):
            return "(" + ", ".join(_fmt(y) for y in x) + ")" if isinstance(x, (list, tuple)) else _fmt(x)
        head = ", ".join(one(x) for x in v[:2])
        return f"{len(v)} values: {head}{', …' if len(v) > 2 else ''}"
    return str(v)


class StepEditor(QtWidgets.QWidget):
    """Edits one step dict of the recipe document in place; ``changed`` after every edit."""

    changed = QtCore.pyqtSignal()
    drawRoi = QtCore.pyqtSignal(bool)

    def __init__(self, catalogue, parent=None):
        super().__init__(parent)
        self.catalogue = catalogue
        self.step: dict[str, Any] | None = None
        self.section = ""
        self.form: ParamForm | None = None
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.title = QtWidgets.QLabel("No step selected")
        self.title.setObjectName("heading")
        self.subtitle = QtWidgets.QLabel("Select a step, or add one from the tool catalogue.")
        self.subtitle.setObjectName("muted")
        self.subtitle.setWordWrap(True)
        lay.addWidget(self.title)
        lay.addWidget(self.subtitle)
        lay.addWidget(self._build_general_box())
        self.params_box = QtWidgets.QGroupBox("Parameters")
        self.params_lay = QtWidgets.QVBoxLayout(self.params_box)
        lay.addWidget(self.params_box)
        lay.addWidget(self._build_limits_box())
        lay.addStretch(1)
        self._loading = False
        self.set_step(None, "", [])

    def _build_general_box(self) -> QtWidgets.QGroupBox:
        """Name, input, required and the region of interest."""
        self.general = QtWidgets.QGroupBox("Step")
        g = QtWidgets.QFormLayout(self.general)
        self.name = QtWidgets.QLineEdit()
        self.name.editingFinished.connect(self._name_changed)
        g.addRow("name", self.name)
        self.input = QtWidgets.QComboBox()
        self.input.setToolTip("the image this step inspects: the last preprocess output, the raw image, or a "
                              "named preprocess step")
        self.input.activated.connect(self._input_changed)
        g.addRow("input", self.input)
        self.required = QtWidgets.QCheckBox("counts towards the verdict")
        self.required.toggled.connect(self._required_changed)
        g.addRow("required", self.required)
        roi_row = QtWidgets.QWidget()
        rl = QtWidgets.QHBoxLayout(roi_row)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.setSpacing(3)
        self.roi_boxes = []
        for tip in ("x", "y", "width", "height"):
            b = QtWidgets.QSpinBox()
            b.setRange(0, 100000)
            b.setToolTip(tip)
            b.setKeyboardTracking(False)
            b.setButtonSymbols(QtWidgets.QAbstractSpinBox.NoButtons)
            b.setMinimumWidth(40)
            b.valueChanged.connect(self._roi_edited)
            self.roi_boxes.append(b)
            rl.addWidget(b)
        g.addRow("roi x y w h", roi_row)
        roi_btns = QtWidgets.QWidget()
        bl = QtWidgets.QHBoxLayout(roi_btns)
        bl.setContentsMargins(0, 0, 0, 0)
        self.draw_btn = QtWidgets.QPushButton("Draw ROI")
        self.draw_btn.setCheckable(True)
        self.draw_btn.setToolTip("drag a rectangle on the image")
        self.draw_btn.toggled.connect(self.drawRoi.emit)
        self.clear_roi_btn = QtWidgets.QPushButton("Whole image")
        self.clear_roi_btn.clicked.connect(lambda: self.set_roi(None))
        bl.addWidget(self.draw_btn)
        bl.addWidget(self.clear_roi_btn)
        g.addRow("", roi_btns)
        self.roi_rows = [roi_row, roi_btns]
        return self.general

    def _build_limits_box(self) -> QtWidgets.QGroupBox:
        """The limits table: one row per declared measurement; every column wide enough for its title."""
        self.limits_box = QtWidgets.QGroupBox("Limits (pass range)")
        ll = QtWidgets.QVBoxLayout(self.limits_box)
        self.limits = QtWidgets.QTableWidget(0, 6)
        # the review columns' titles on two lines: the table fits the panel with every title whole
        self.limits.setHorizontalHeaderLabels(["measurement", "min", "max", "review\nmin", "review\nmax", "last"])
        self.limits.horizontalHeaderItem(3).setToolTip("review band: values between this and min give REVIEW")
        self.limits.horizontalHeaderItem(4).setToolTip("review band: values between max and this give REVIEW")
        self.limits.verticalHeader().hide()
        hh = self.limits.horizontalHeader()
        hh.setSectionResizeMode(QtWidgets.QHeaderView.ResizeToContents)
        hh.setStretchLastSection(True)
        self.limits.itemChanged.connect(self._limit_edited)
        ll.addWidget(self.limits)
        self.limits_error = QtWidgets.QLabel()
        self.limits_error.setObjectName("error")
        self.limits_error.setWordWrap(True)
        self.limits_error.hide()
        ll.addWidget(self.limits_error)
        return self.limits_box

    def needed_width(self) -> int:
        """The width at which no column title of the limits table is cut short."""
        hfm, fm = self.limits.horizontalHeader().fontMetrics(), self.limits.fontMetrics()
        titles = [max(self.limits.horizontalHeaderItem(c).text().split("\n"), key=hfm.horizontalAdvance)
                  for c in range(self.limits.columnCount())]
        # the widest measurement name of any installed tool, and a value as wide as _fmt makes them
        names = [m for e in self.catalogue.tools.values() for m in getattr(e.cls, "measurements", {}) or {}]
        name_w = max([fm.horizontalAdvance(n) for n in names] + [hfm.horizontalAdvance(titles[0])])
        value_w = max(fm.horizontalAdvance("-8.888e+88"), hfm.horizontalAdvance(titles[-1]))
        middle = sum(hfm.horizontalAdvance(t) + 24 for t in titles[1:-1])
        return name_w + 24 + middle + value_w + 24 + 40   # + the table's frame, scroll bar and the box margins

    # ------------------------------------------------------------------ load

    def set_step(self, step: dict | None, section: str, pre_names: list[str]) -> None:
        self._loading = True
        try:
            self.step, self.section = step, section
            self.draw_btn.setChecked(False)
            for box in (self.general, self.params_box, self.limits_box):
                box.setVisible(step is not None)
            if self.form is not None:
                self.form.setParent(None)
                self.form.deleteLater()
                self.form = None
            while self.params_lay.count():
                w = self.params_lay.takeAt(0).widget()
                if w is not None:
                    w.setParent(None)
            if step is None:
                self.title.setText("No step selected")
                self.subtitle.setText("Select a step, or add one from the tool catalogue.")
                return
            entry = self.catalogue.tool(step.get("tool", ""))
            cls = entry.cls if entry else None
            self.title.setText((cls.title if cls and cls.title else step.get("tool", "?")))
            desc = (cls.description if cls else "unknown tool: not in the installed catalogue")
            origin = f"{step.get('tool')}  ·  {entry.distribution} {entry.version}" if entry else step.get("tool", "")
            self.subtitle.setText(f"{origin}\n{desc}")
            self.name.setText(step.get("name") or "")
            inspect = section == "inspect"
            for w in (self.input, self.required) + tuple(self.roi_rows):
                w.setEnabled(inspect)
            self.input.clear()
            self.input.addItem("last preprocess output", None)
            self.input.addItem("raw image", "raw")
            for n in pre_names:
                self.input.addItem(f"after {n}", n)
            i = self.input.findData(step.get("input"))
            self.input.setCurrentIndex(max(i, 0))
            self.required.setChecked(step.get("required", True))
            self._show_roi(step.get("roi"))
            if cls is not None:
                self.form = ParamForm(cls.Params, step.get("params") or {})
                self.form.changed.connect(self._params_changed)
                self.params_lay.addWidget(self.form)
            else:
                lab = QtWidgets.QLabel(yaml.safe_dump(step.get("params") or {}))
                self.params_lay.addWidget(lab)
            self.limits_box.setVisible(inspect)
            self.limits.setRowCount(0)
            if inspect:
                self._fill_limits(step, cls)
        finally:
            self._loading = False

    def _fill_limits(self, step: dict, cls) -> None:
        """One row per declared measurement (and per limit on an undeclared one): min, max, review band."""
        names = list(getattr(cls, "measurements", {}) or {}) if cls else []
        for m in (step.get("limits") or {}):
            if m not in names:
                names.append(m)
        self.limits.setRowCount(len(names))
        for r, m in enumerate(names):
            it = QtWidgets.QTableWidgetItem(m)
            it.setFlags(QtCore.Qt.ItemIsEnabled)
            if cls is not None:
                it.setToolTip(cls.measurements.get(m, ""))
            self.limits.setItem(r, 0, it)
            lim = (step.get("limits") or {}).get(m) or {}
            for c, key in enumerate(LIMIT_KEYS, start=1):
                v = lim.get(key)
                self.limits.setItem(r, c, QtWidgets.QTableWidgetItem("" if v is None else _fmt(v)))
            last = QtWidgets.QTableWidgetItem("")
            last.setFlags(QtCore.Qt.ItemIsEnabled)
            self.limits.setItem(r, 5, last)
        self.limits.setFixedHeight(min(8, len(names)) * 26 + 30)

    def show_measurements(self, measurements: dict[str, Any], verdicts: dict[str, str]) -> None:
        self._loading = True
        try:
            for r in range(self.limits.rowCount()):
                m = self.limits.item(r, 0).text()
                it = self.limits.item(r, 5)
                v = measurements.get(m)
                # a list cannot take limits: its length here, every value in the tooltip
                it.setText("" if m not in measurements else f"{len(v)} values" if isinstance(v, (list, tuple))
                           else _fmt(v))
                it.setToolTip(str(v) if isinstance(v, (list, tuple)) else "")
                v = verdicts.get(m)
                it.setForeground(theme.status_color(v) if v else QtGui.QColor(theme.TEXT))
        finally:
            self._loading = False

    def show_problems(self, problems: list[str]) -> None:
        """Put each problem under its field (params) or under the limits table."""
        params: dict[str, str] = {}
        limits: list[str] = []
        for p in problems:
            m = _FIELD.match(p)
            msg = p.split(": ", 2)[-1] if p.count(": ") >= 2 else p
            if m and m.group(1) == "params":
                params.setdefault(m.group(2), msg)
            elif m and m.group(1) == "limits" or ": limits" in p:
                limits.append(p.split("): ", 1)[-1])
        if self.form is not None:
            self.form.set_errors(params)
        self.limits_error.setText("\n".join(limits))
        self.limits_error.setVisible(bool(limits))

    # ----------------------------------------------------------------- edits

    def _emit(self):
        if not self._loading and self.step is not None:
            self.changed.emit()

    def _name_changed(self):
        if self.step is None or self._loading:
            return
        text = self.name.text().strip()
        if text:
            self.step["name"] = text
        else:
            self.step.pop("name", None)
        self._emit()

    def _input_changed(self):
        if self.step is None:
            return
        v = self.input.currentData()
        if v is None:
            self.step.pop("input", None)
        else:
            self.step["input"] = v
        self._emit()

    def _required_changed(self, on):
        if self.step is None or self._loading:
            return
        if on:
            self.step.pop("required", None)
        else:
            self.step["required"] = False
        self._emit()

    def _params_changed(self, values: dict):
        if self.step is None:
            return
        self.step["params"] = {k: v for k, v in values.items()}
        self._emit()

    def _show_roi(self, roi):
        self._loading, was = True, self._loading
        try:
            for b, v in zip(self.roi_boxes, roi or (0, 0, 0, 0)):
                b.setValue(int(v))
            self.clear_roi_btn.setEnabled(roi is not None)
        finally:
            self._loading = was

    def set_roi(self, roi):
        if self.step is None:
            return
        if roi is None:
            self.step.pop("roi", None)
        else:
            self.step["roi"] = [int(v) for v in roi]
        self._show_roi(roi)
        self.draw_btn.setChecked(False)
        self._emit()

    def _roi_edited(self):
        if self._loading or self.step is None:
            return
        vals = [b.value() for b in self.roi_boxes]
        if vals[2] > 0 and vals[3] > 0:
            self.step["roi"] = vals
            self.clear_roi_btn.setEnabled(True)
            self._emit()

    def _limit_edited(self, item: QtWidgets.QTableWidgetItem):
        if self._loading or self.step is None or item.column() in (0, 5):
            return
        limits = dict(self.step.get("limits") or {})
        bad = []
        for r in range(self.limits.rowCount()):
            m = self.limits.item(r, 0).text()
            lim = {}
            for c, key in enumerate(LIMIT_KEYS, start=1):
                text = (self.limits.item(r, c).text() if self.limits.item(r, c) else "").strip()
                if text:
                    try:
                        lim[key] = float(text)
                    except ValueError:
                        bad.append(f"{m}.{key}: {text!r} is not a number")
            old = limits.get(m) or {}
            lim.update({k: v for k, v in old.items() if k not in LIMIT_KEYS})  # keep equals / one_of
            if lim:
                limits[m] = lim
            else:
                limits.pop(m, None)
        if bad:
            self.limits_error.setText("\n".join(bad))
            self.limits_error.show()
            return
        if limits:
            self.step["limits"] = limits
        else:
            self.step.pop("limits", None)
        self._emit()


class DocEdit(QtWidgets.QUndoCommand):
    """One edit of the recipe document: the whole document before and after (recipes are small)."""

    def __init__(self, ws: "RecipeWorkspace", before: dict[str, Any], after: dict[str, Any], text: str):
        super().__init__(text)
        self.ws, self.before, self.after = ws, before, after
        self._done = True   # pushed after the edit was made: the first redo() has nothing to do

    def redo(self) -> None:
        if self._done:
            self._done = False
            return
        self.ws.restore(self.after)

    def undo(self) -> None:
        self.ws.restore(self.before)


class RecipeWorkspace(QtWidgets.QWidget):
    """Edit a recipe on a live image.

    Every edit changes the recipe document; after a short pause the document
    is validated with ``Recipe.from_dict`` (problems shown inline), compiled
    once into a ``Pipeline`` and run on the current frame.
    """

    recipeValidated = QtCore.pyqtSignal(object)   # a host.Recipe
    status = QtCore.pyqtSignal(str)
    resultReady = QtCore.pyqtSignal(object)       # a host.FrameResult
    #: the latest edit has been validated and run on the current image, and its result is on screen (no
    #: re-run pending): tests and callers wait on this, never on a proxy of the result
    idle = QtCore.pyqtSignal()

    def __init__(self, pm, parent=None):
        super().__init__(parent)
        self.pm = pm
        self.catalogue = pm.catalogue
        self.doc: dict[str, Any] = empty_doc()
        self.path: Path | None = None
        self.base_dir = Path.cwd()
        self.recipe: Recipe | None = None
        self.pipeline: Pipeline | None = None
        self.problems: list[str] = []
        self.frames = FrameBrowser(self.catalogue)
        self.frame_index = 0
        self.frame: Frame | None = None
        self.result = None
        self.dirty = False
        self._selected: tuple[str, int] | None = None
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(120)
        self._timer.timeout.connect(self.rebuild)
        self.undo_stack = QtWidgets.QUndoStack(self)
        self._snapshot = copy.deepcopy(self.doc)   # the document as the undo stack last recorded it
        self._build_ui()
        self._refresh_steps()
        self.schedule()

    # -------------------------------------------------------------------- UI

    def _build_ui(self) -> None:
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addWidget(self._build_toolbar())
        split = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        split.setHandleWidth(5)
        outer.addWidget(split, 1)
        left = QtWidgets.QWidget()
        ll = QtWidgets.QVBoxLayout(left)
        ll.setContentsMargins(6, 6, 2, 6)
        ll.addWidget(self._build_recipe_box())
        ll.addWidget(self._build_steps_box(), 3)
        ll.addWidget(self._build_catalogue_box(), 4)
        split.addWidget(left)
        split.addWidget(self._build_centre())
        split.addWidget(self._build_editor_panel())
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setStretchFactor(2, 0)
        # the side panels as narrow as their contents allow, the image gets the rest
        split.setSizes([left.minimumSizeHint().width(), 10_000, self.editor.needed_width() + 30])
        self.splitter = split

    def _build_toolbar(self) -> QtWidgets.QToolBar:
        """File, undo / redo, image browsing, zoom, layers, live re-run."""
        tb = QtWidgets.QToolBar()
        tb.setIconSize(QtCore.QSize(16, 16))
        self.act_new = tb.addAction("New", self.new_recipe)
        self.act_open = tb.addAction("Open…", self._open_dialog)
        self.act_save = tb.addAction("Save", self.save)
        tb.addAction("Save as…", self._save_as_dialog)
        tb.addSeparator()
        self.act_undo = self.undo_stack.createUndoAction(self, "Undo")
        self.act_undo.setShortcut(QtGui.QKeySequence.Undo)
        self.act_redo = self.undo_stack.createRedoAction(self, "Redo")
        self.act_redo.setShortcut(QtGui.QKeySequence.Redo)
        for act in (self.act_undo, self.act_redo):
            act.setShortcutContext(QtCore.Qt.WidgetWithChildrenShortcut)
            self.addAction(act)
            tb.addAction(act)
        tb.addSeparator()
        tb.addAction("Open image…", self._open_image_dialog)
        tb.addAction("◀", lambda: self.show_frame(self.frame_index - 1))
        self.frame_label = QtWidgets.QLabel(" no image ")
        self.frame_label.setObjectName("muted")
        tb.addWidget(self.frame_label)
        tb.addAction("▶", lambda: self.show_frame(self.frame_index + 1))
        tb.addSeparator()
        tb.addAction("Fit", lambda: self.view.fit())
        tb.addAction("Zoom +", lambda: self.view.zoom(1.25))
        tb.addAction("Zoom −", lambda: self.view.zoom(0.8))
        tb.addSeparator()
        self.chk_overlays = QtWidgets.QCheckBox("Overlays")
        self.chk_overlays.setChecked(True)
        self.chk_overlays.toggled.connect(self._toggle_layers)
        self.chk_heat = QtWidgets.QCheckBox("Heatmaps")
        self.chk_heat.setChecked(True)
        self.chk_heat.toggled.connect(self._toggle_layers)
        tb.addWidget(self.chk_overlays)
        tb.addWidget(QtWidgets.QLabel("  "))
        tb.addWidget(self.chk_heat)
        tb.addSeparator()
        self.chk_live = QtWidgets.QCheckBox("Live")
        self.chk_live.setChecked(True)
        self.chk_live.setToolTip("re-run the recipe on the current image after every edit")
        tb.addWidget(self.chk_live)
        tb.addAction("Run", self.rebuild)
        spacer = QtWidgets.QWidget()
        spacer.setSizePolicy(QtWidgets.QSizePolicy.Expanding, QtWidgets.QSizePolicy.Preferred)
        tb.addWidget(spacer)
        self.file_label = QtWidgets.QLabel("untitled recipe ")
        self.file_label.setObjectName("muted")
        tb.addWidget(self.file_label)
        return tb

    def _build_recipe_box(self) -> QtWidgets.QGroupBox:
        """The recipe's name, source and decision."""
        rbox = QtWidgets.QGroupBox("Recipe")
        rf = QtWidgets.QFormLayout(rbox)
        self.recipe_name = QtWidgets.QLineEdit()
        self.recipe_name.editingFinished.connect(self._recipe_fields_changed)
        rf.addRow("name", self.recipe_name)
        src_row = QtWidgets.QWidget()
        sl = QtWidgets.QHBoxLayout(src_row)
        sl.setContentsMargins(0, 0, 0, 0)
        self.source_edit = QtWidgets.QLineEdit()
        self.source_edit.setPlaceholderText("folder:images")
        self.source_edit.editingFinished.connect(self._source_changed)
        b = QtWidgets.QToolButton()
        b.setText("…")
        b.clicked.connect(self._choose_source_folder)
        sl.addWidget(self.source_edit, 1)
        sl.addWidget(b)
        rf.addRow("source", src_row)
        self.decision = QtWidgets.QComboBox()
        self.decision.addItem("all steps must pass", "all")
        self.decision.addItem("any step passes", "any")
        self.decision.activated.connect(self._recipe_fields_changed)
        rf.addRow("decision", self.decision)
        return rbox

    def _build_steps_box(self) -> QtWidgets.QGroupBox:
        """The step list, with move and remove buttons."""
        sbox = QtWidgets.QGroupBox("Steps")
        sv = QtWidgets.QVBoxLayout(sbox)
        self.steps = QtWidgets.QListWidget()
        self.steps.currentRowChanged.connect(self._step_selected)
        sv.addWidget(self.steps, 1)
        btns = QtWidgets.QHBoxLayout()
        self.btn_up = QtWidgets.QPushButton("▲")
        self.btn_down = QtWidgets.QPushButton("▼")
        self.btn_remove = QtWidgets.QPushButton("Remove")
        self.btn_up.setToolTip("move the step up")
        self.btn_down.setToolTip("move the step down")
        self.btn_up.clicked.connect(lambda: self.move_step(-1))
        self.btn_down.clicked.connect(lambda: self.move_step(+1))
        self.btn_remove.clicked.connect(self.remove_step)
        for w in (self.btn_up, self.btn_down):
            w.setFixedWidth(36)
            btns.addWidget(w)
        btns.addStretch(1)
        btns.addWidget(self.btn_remove)
        sv.addLayout(btns)
        return sbox

    def _build_catalogue_box(self) -> QtWidgets.QGroupBox:
        """Every registered tool, by stage; double-click or "Add step" adds it to the recipe."""
        cbox = QtWidgets.QGroupBox("Tool catalogue")
        cv = QtWidgets.QVBoxLayout(cbox)
        self.tools = QtWidgets.QTreeWidget()
        self.tools.setHeaderHidden(True)
        self.tools.setRootIsDecorated(True)
        self.tools.itemDoubleClicked.connect(lambda it, _c: self._add_from_tree(it))
        for stage in ("preprocess", "inspect"):
            top = QtWidgets.QTreeWidgetItem([stage.capitalize()])
            top.setFlags(QtCore.Qt.ItemIsEnabled)
            f = top.font(0)
            f.setBold(True)
            top.setFont(0, f)
            self.tools.addTopLevelItem(top)
            for tid, e in sorted(self.catalogue.tools.items()):
                if e.cls.stage != stage:
                    continue
                it = QtWidgets.QTreeWidgetItem([f"{e.cls.title or tid}"])
                it.setData(0, QtCore.Qt.UserRole, tid)
                it.setToolTip(0, f"{tid}\n{e.cls.description}\n[{e.distribution} {e.version}]")
                top.addChild(it)
            top.setExpanded(True)
        # wide enough for every tool's title: none is cut short
        fm = self.tools.fontMetrics()
        titles = [e.cls.title or tid for tid, e in self.catalogue.tools.items()] or [""]
        self.tools.setIndentation(14)
        self.tools.setMinimumWidth(max(fm.horizontalAdvance(t) for t in titles) + 2 * self.tools.indentation() + 30)
        cv.addWidget(self.tools, 1)
        add = QtWidgets.QPushButton("Add step")
        add.setObjectName("primary")
        add.clicked.connect(lambda: self._add_from_tree(self.tools.currentItem()))
        cv.addWidget(add)
        return cbox

    def _build_centre(self) -> QtWidgets.QSplitter:
        """The image view over the result tabs (measurements, validation, YAML)."""
        centre = QtWidgets.QSplitter(QtCore.Qt.Vertical)
        centre.setHandleWidth(5)
        self.view = ImageView()
        self.view.roiDrawn.connect(self._roi_drawn)
        self.view.hovered.connect(self.status.emit)
        centre.addWidget(self.view)
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.setElideMode(QtCore.Qt.ElideNone)
        # a step's time is in its cell's tooltip (and the total on the image): the table fits the centre
        self.table = QtWidgets.QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["step", "measurement", "value", "limit", "verdict"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QtWidgets.QHeaderView.ResizeToContents)
        hh.setSectionResizeMode(2, QtWidgets.QHeaderView.Stretch)   # the value (lists are cut short) takes the rest
        self.tabs.addTab(self.table, "Measurements")
        self.problem_list = QtWidgets.QListWidget()
        self.problem_list.itemActivated.connect(self._goto_problem)
        self.problem_list.itemClicked.connect(self._goto_problem)
        self.tabs.addTab(self.problem_list, "Validation")
        self.yaml_view = QtWidgets.QPlainTextEdit()
        self.yaml_view.setReadOnly(True)
        self.yaml_view.setFont(QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.FixedFont))
        self.tabs.addTab(self.yaml_view, "YAML")
        centre.addWidget(self.tabs)
        centre.setStretchFactor(0, 3)
        centre.setStretchFactor(1, 1)
        centre.setSizes([600, 230])
        return centre

    def _build_editor_panel(self) -> QtWidgets.QScrollArea:
        """Right: the selected step's editor, wide enough for the limits table's column titles."""
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
        self.editor = StepEditor(self.catalogue)
        self.editor.changed.connect(self._step_edited)
        self.editor.drawRoi.connect(self.view.set_roi_mode)
        scroll.setMinimumWidth(self.editor.needed_width() + 30)
        holder = QtWidgets.QWidget()
        hl = QtWidgets.QVBoxLayout(holder)
        hl.setContentsMargins(4, 8, 8, 6)
        hl.setSizeConstraint(QtWidgets.QLayout.SetMinimumSize)
        hl.addWidget(self.editor)
        scroll.setWidget(holder)
        return scroll

    # -------------------------------------------------------------- document

    def _all_steps(self) -> list[tuple[str, int, dict]]:
        return [(sec, i, s) for sec in ("preprocess", "inspect") for i, s in enumerate(self.doc.get(sec) or [])]

    def _step_name(self, sec: str, i: int) -> str:
        if self.recipe is not None:
            for st in self.recipe.steps:
                if st.section == sec and st.index == i:
                    return st.name
        s = self.doc[sec][i]
        return s.get("name") or s.get("tool", "?").rsplit(".", 1)[-1]

    def _refresh_steps(self) -> None:
        self.steps.blockSignals(True)
        self.steps.clear()
        verdicts = {}
        if self.result is not None:
            verdicts = {r.step: r.verdict for r in self.result.results}
        bad_steps = set()
        for p in self.problems:
            m = _WHERE.match(p)
            if m:
                bad_steps.add((m.group(1), int(m.group(2))))
        select_row = -1
        for sec in ("preprocess", "inspect"):
            head = QtWidgets.QListWidgetItem(sec.upper())
            head.setFlags(QtCore.Qt.NoItemFlags)
            head.setForeground(QtGui.QColor(theme.MUTED))
            f = head.font()
            f.setBold(True)
            f.setPointSizeF(f.pointSizeF() * 0.85)
            head.setFont(f)
            self.steps.addItem(head)
            items = self.doc.get(sec) or []
            if not items:
                e = QtWidgets.QListWidgetItem("   (none)")
                e.setFlags(QtCore.Qt.NoItemFlags)
                e.setForeground(QtGui.QColor("#5c6370"))
                self.steps.addItem(e)
            for i, s in enumerate(items):
                name = self._step_name(sec, i)
                it = QtWidgets.QListWidgetItem(f"  {i + 1}. {name}  ·  {s.get('tool', '?').split('.', 1)[-1]}")
                it.setToolTip(s.get("tool", "?"))
                it.setData(QtCore.Qt.UserRole, (sec, i))
                if (sec, i) in bad_steps:
                    it.setForeground(theme.status_color("fail"))
                    it.setText("⚠ " + it.text().lstrip())
                elif name in verdicts:
                    it.setForeground(theme.status_color(verdicts[name]))
                    it.setText(f"{verdicts[name].upper():<6} " + it.text().lstrip())
                self.steps.addItem(it)
                if self._selected == (sec, i):
                    select_row = self.steps.count() - 1
        if select_row >= 0:
            self.steps.setCurrentRow(select_row)
        self.steps.blockSignals(False)
        self._update_step_buttons()

    def _update_step_buttons(self):
        has = self._selected is not None
        for b in (self.btn_up, self.btn_down, self.btn_remove):
            b.setEnabled(has)

    def _pre_names(self) -> list[str]:
        return [self._step_name("preprocess", i) for i in range(len(self.doc.get("preprocess") or []))]

    def _step_selected(self, row: int) -> None:
        it = self.steps.item(row) if row >= 0 else None
        key = it.data(QtCore.Qt.UserRole) if it is not None else None
        self._selected = tuple(key) if key else None
        if self._selected:
            sec, i = self._selected
            if self.editor.step is not self.doc[sec][i]:  # keep the form (and the focus) while editing it
                self.editor.set_step(self.doc[sec][i], sec, self._pre_names())
        else:
            self.editor.set_step(None, "", [])
        self.editor.show_problems(self._problems_of(self._selected))
        self._show_step_measurements()
        self._update_rois()
        self._update_step_buttons()

    def select_step(self, section: str, index: int) -> None:
        for r in range(self.steps.count()):
            key = self.steps.item(r).data(QtCore.Qt.UserRole)
            if key and tuple(key) == (section, index):
                self.steps.setCurrentRow(r)
                return

    def add_step(self, tool_id: str) -> None:
        entry = self.catalogue.tool(tool_id)
        if entry is None:
            raise UsageError(f"unknown tool {tool_id!r}")
        sec = entry.cls.stage
        taken = {self._step_name(s, i) for s, i, _ in self._all_steps()}
        base = tool_id.rsplit(".", 1)[-1]
        name, n = base, 2
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        self.doc.setdefault(sec, []).append({"tool": tool_id, "name": name, "params": {}})
        self._selected = (sec, len(self.doc[sec]) - 1)
        self._changed(f"add {name}")
        self._refresh_steps()
        self._step_selected(self.steps.currentRow())

    def _add_from_tree(self, item) -> None:
        tid = item.data(0, QtCore.Qt.UserRole) if item is not None else None
        if tid:
            self.add_step(tid)

    def move_step(self, delta: int) -> None:
        if not self._selected:
            return
        sec, i = self._selected
        items = self.doc[sec]
        j = i + delta
        if not 0 <= j < len(items):
            return
        items[i], items[j] = items[j], items[i]
        self._selected = (sec, j)
        self._changed("move step")
        self._refresh_steps()

    def remove_step(self) -> None:
        if not self._selected:
            return
        sec, i = self._selected
        name = self._step_name(sec, i)
        del self.doc[sec][i]
        self._selected = None
        self._changed(f"remove {name}")
        self._refresh_steps()
        self._step_selected(-1)

    def _step_edited(self) -> None:
        name = self._step_name(*self._selected) if self._selected else "step"
        self._changed(f"edit {name}")

    def _changed(self, what: str = "edit") -> None:
        self._record(what)
        self.dirty = True
        self._update_title()
        self.schedule()

    # ------------------------------------------------------------ undo / redo

    def _record(self, what: str) -> None:
        """Put the edit just made on the undo stack (the document before and after it)."""
        after = copy.deepcopy(self.doc)
        if after == self._snapshot:
            return
        self.undo_stack.push(DocEdit(self, self._snapshot, after, what))
        self._snapshot = after

    def restore(self, doc: dict[str, Any]) -> None:
        """Show ``doc`` (a state from the undo stack) as the document being edited."""
        old_source = self.doc.get("source")
        self.doc = copy.deepcopy(doc)
        self._snapshot = copy.deepcopy(doc)
        for w in (self.recipe_name, self.source_edit, self.decision):
            w.blockSignals(True)
        self.recipe_name.setText(str(self.doc.get("name", "")))
        src = self.doc.get("source")
        self.source_edit.setText((src.get("spec") if isinstance(src, dict) else src) or "")
        self.decision.setCurrentIndex(max(self.decision.findData(self.doc.get("decision", "all")), 0))
        for w in (self.recipe_name, self.source_edit, self.decision):
            w.blockSignals(False)
        if self._selected:
            sec, i = self._selected
            n = len(self.doc.get(sec) or [])
            self._selected = (sec, min(i, n - 1)) if n else None
        self.editor.set_step(None, "", [])  # the editor held the replaced step: rebuild it on the restored one
        self._refresh_steps()
        self._step_selected(self.steps.currentRow() if self._selected else -1)
        self.dirty = True
        self._update_title()
        if self.doc.get("source") != old_source:
            self._load_source_frames()
        self.schedule()

    def _recipe_fields_changed(self, *_):
        self.doc["name"] = self.recipe_name.text().strip() or "recipe"
        self.doc["decision"] = self.decision.currentData()
        self._changed()

    def _source_changed(self):
        text = self.source_edit.text().strip()
        old = self.doc.get("source")
        old_spec = old.get("spec") if isinstance(old, dict) else old
        if text == (old_spec or ""):
            return
        if isinstance(old, dict):
            old["spec"] = text
            if not text:
                self.doc["source"] = None
        else:
            self.doc["source"] = text or None
        self._changed()
        self._load_source_frames()

    def _choose_source_folder(self):
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Choose the image folder", str(self.base_dir))
        if path:
            self.source_edit.setText(f"folder:{path}")
            self._source_changed()

    def _update_title(self):
        name = self.path.name if self.path else "untitled recipe"
        self.file_label.setText(f"{name}{' •' if self.dirty else ''} ")

    # ----------------------------------------------------------- open / save

    def new_recipe(self) -> None:
        self.set_document(empty_doc(), None)

    def set_document(self, doc: dict[str, Any], path: Path | None) -> None:
        self._close_pipeline()
        self.doc = doc
        for sec in ("preprocess", "inspect"):
            self.doc[sec] = [dict(s) if isinstance(s, dict) else {"tool": str(s)} for s in (doc.get(sec) or [])]
        self.undo_stack.clear()
        self._snapshot = copy.deepcopy(self.doc)
        self.path = Path(path) if path else None
        self.base_dir = self.path.resolve().parent if self.path else Path.cwd()
        self.recipe, self.result, self.problems = None, None, []
        self._selected = None
        self.dirty = False
        self.recipe_name.setText(str(doc.get("name", "")))
        src = doc.get("source")
        self.source_edit.setText((src.get("spec") if isinstance(src, dict) else src) or "")
        i = self.decision.findData(doc.get("decision", "all"))
        self.decision.setCurrentIndex(max(i, 0))
        self._update_title()
        self._validate()
        self._refresh_steps()
        self._step_selected(-1)
        self._load_source_frames()
        self.rebuild()

    def open_recipe(self, path: str | Path) -> list[str]:
        """Open a recipe file; returns the validation problems (also shown inline)."""
        path = Path(path)
        try:
            Recipe.load(path, self.catalogue)
        except RecipeError as exc:
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                data = None
            if not isinstance(data, dict):  # unreadable: nothing to edit
                QtWidgets.QMessageBox.warning(self, "Cannot open recipe", str(exc))
                return list(exc.problems)
            self.set_document(data, path)
            return list(self.problems)
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        self.set_document(data, path)
        return list(self.problems)

    def _open_dialog(self):
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open recipe", str(self.base_dir),
                                                        "Recipes (*.yaml *.yml);;All files (*)")
        if path:
            self.open_recipe(path)

    def save(self) -> bool:
        if self.path is None:
            return self._save_as_dialog()
        return self.save_to(self.path)

    def _save_as_dialog(self) -> bool:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save recipe", str(self.base_dir / "recipe.yaml"),
                                                        "Recipes (*.yaml *.yml)")
        return self.save_to(Path(path)) if path else False

    def save_to(self, path: Path, force: bool = False) -> bool:
        """Write the recipe as canonical YAML; an invalid recipe is only saved as typed, after asking."""
        path = Path(path)
        self._validate()
        if self.recipe is not None:
            text = self.recipe.to_yaml()
        else:
            if not force:
                answer = QtWidgets.QMessageBox.question(
                    self, "Recipe has problems",
                    f"The recipe has {len(self.problems)} problem(s) (see Validation). Save it anyway?")
                if answer != QtWidgets.QMessageBox.Yes:
                    return False
            text = yaml.safe_dump(self.doc, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        self.path = path
        self.base_dir = path.resolve().parent
        self.dirty = False
        self._update_title()
        self.status.emit(f"saved {path}")
        return True

    # ---------------------------------------------------------------- images

    def _open_image_dialog(self):
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open image", str(self.base_dir),
            "Images (" + " ".join(f"*{e}" for e in IMAGE_EXTENSIONS) + ");;All files (*)")
        if path:
            self.open_image(path)

    def open_image(self, path: str | Path) -> None:
        """Show ``path`` (an image, or a folder of images) and browse its folder."""
        p = Path(path).resolve()
        folder = p if p.is_dir() else p.parent
        try:
            self.frames.set_source(f"folder:{folder}", folder)
        except UsageError as exc:
            QtWidgets.QMessageBox.warning(self, "Cannot open images", str(exc))
            return
        self.show_frame(0 if p.is_dir() else self.frames.index_of(str(p)))

    def _load_source_frames(self) -> None:
        src = self.doc.get("source")
        if not src:
            return
        spec, opts = (src.get("spec"), {k: v for k, v in src.items() if k != "spec"}) if isinstance(src, dict) \
            else (src, {})
        try:
            n = self.frames.set_source(spec, self.base_dir, opts)
        except (UsageError, Exception) as exc:  # the source problem is also a validation problem
            self.status.emit(f"source: {exc}")
            return
        if n:
            self.show_frame(0)

    def show_frame(self, i: int) -> None:
        if not len(self.frames):
            return
        i = max(0, min(i, len(self.frames) - 1))
        try:
            self.frame = self.frames.frame(i)
        except Exception as exc:
            self.status.emit(str(exc))
            return
        self.frame_index = i
        name = Path(self.frame.path).name if self.frame.path else self.frame.key
        self.frame_label.setText(f"  {i + 1}/{len(self.frames)}  {name}  ")
        self.view.set_image(self.frame.image, keep_view=True)
        if self.frame.image is None:
            self.view.placeholder = f"cannot decode {name}: {self.frame.error}"
        self.run_current()
        self._settled()

    def set_frame(self, frame: Frame) -> None:
        """Show an image that does not come from a source (tests, the run view's failures)."""
        self.frame = frame
        self.view.set_image(frame.image, keep_view=True)
        self.frame_label.setText(f"  {Path(frame.path).name if frame.path else frame.key}  ")
        self.run_current()
        self._settled()

    # ------------------------------------------------------------ validation

    def schedule(self) -> None:
        if self.chk_live.isChecked():
            self._timer.start()
        else:
            self._validate()
            self._show_problems()

    def _validate(self) -> None:
        data = copy.deepcopy(self.doc)
        if not data.get("source"):
            data.pop("source", None)
        try:
            recipe = Recipe.from_dict(data, self.catalogue, base_dir=self.base_dir,
                                      file=self.path.name if self.path else "<unsaved>")
        except RecipeError as exc:
            self.recipe, self.problems = None, list(exc.problems)
            return
        self.recipe, self.problems = recipe, []

    def _close_pipeline(self):
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None

    def rebuild(self) -> None:
        """Validate the document, build the pipeline once, run it on the current image."""
        self._timer.stop()
        self._validate()
        self._close_pipeline()
        if self.recipe is not None:
            try:
                self.pipeline = Pipeline(self.recipe)
            except Exception as exc:  # a tool that cannot be built (model file, device) is a problem to show
                self.problems = [f"building the steps failed: {type(exc).__name__}: {exc}"]
                self.pipeline = None
            else:
                self.recipeValidated.emit(self.recipe)
        self._show_problems()
        self.yaml_view.setPlainText(self.recipe.to_yaml() if self.recipe is not None
                                    else yaml.safe_dump(self.doc, sort_keys=False))
        self.run_current()
        self._refresh_steps()
        self._settled()

    def is_idle(self) -> bool:
        return not self._timer.isActive()

    def _settled(self) -> None:
        """Emit ``idle`` when nothing is left to re-run."""
        if not self._timer.isActive():
            self.idle.emit()

    def _problems_of(self, key) -> list[str]:
        if not key:
            return []
        out = []
        for p in self.problems:
            m = _WHERE.match(p)
            if m and (m.group(1), int(m.group(2))) == tuple(key):
                out.append(p)
        return out

    def _show_problems(self) -> None:
        self.problem_list.clear()
        for p in self.problems:
            it = QtWidgets.QListWidgetItem(p)
            it.setForeground(theme.status_color("fail"))
            m = _WHERE.match(p)
            if m:
                it.setData(QtCore.Qt.UserRole, (m.group(1), int(m.group(2))))
            self.problem_list.addItem(it)
        if not self.problems:
            it = QtWidgets.QListWidgetItem("✓ the recipe is valid")
            it.setForeground(theme.status_color("pass"))
            self.problem_list.addItem(it)
        self.tabs.setTabText(1, f"Validation ({len(self.problems)})" if self.problems else "Validation ✓")
        if self.problems:
            self.tabs.setCurrentIndex(1)
        self.editor.show_problems(self._problems_of(self._selected))

    def _goto_problem(self, item):
        key = item.data(QtCore.Qt.UserRole)
        if key:
            self.select_step(*key)

    # --------------------------------------------------------------- running

    def run_current(self) -> None:
        if self.pipeline is None or self.frame is None:
            self.result = None
            self._show_result()
            return
        self.result = self.pipeline.process(self.frame)
        self._show_result()
        self.resultReady.emit(self.result)

    def _toggle_layers(self):
        self.view.show_overlays = self.chk_overlays.isChecked()
        self.view.show_heatmaps = self.chk_heat.isChecked()
        self.view.update()

    def _update_rois(self):
        rois = []
        for sec, i, s in self._all_steps():
            if s.get("roi") and sec == "inspect":
                rois.append((tuple(s["roi"]), self._step_name(sec, i), self._selected == (sec, i)))
        self.view.set_rois(rois)

    def _roi_drawn(self, rect):
        self.view.set_roi_mode(False)
        self.editor.set_roi(rect)

    def _show_step_measurements(self):
        if not self._selected or self.result is None:
            self.editor.show_measurements({}, {})
            return
        name = self._step_name(*self._selected)
        for r in self.result.results:
            if r.step == name:
                limits = (self.doc[self._selected[0]][self._selected[1]].get("limits") or {})
                self.editor.show_measurements(r.measurements, self._limit_verdicts(r.measurements, limits))
                return
        self.editor.show_measurements({}, {})

    @staticmethod
    def _limit_verdicts(measurements: dict, limits: dict) -> dict[str, str]:
        out = {}
        for m, lim in limits.items():
            try:
                limit = Limit.model_validate(lim)
            except Exception:
                continue
            out[m] = limit.check(measurements[m]) if m in measurements else "fail"
        return out

    def _show_result(self) -> None:
        res = self.result
        self._update_rois()
        self.table.setRowCount(0)
        if res is None:
            self.view.set_overlays([])
            self.view.set_heatmaps([])
            self.view.banner = ("INVALID", "fail") if self.problems else None
            self.view.update()
            return
        shapes, heat = [], []
        for r in res.results:
            shapes += resolved_overlays(r)  # deferred statuses take the step's verdict colour
            if r.heatmap is not None and res.image is not None:
                h, w = res.image.shape[:2]
                heat.append((r.heatmap, r.roi or (0, 0, w, h)))
        self.view.set_overlays(shapes)
        self.view.set_heatmaps(heat)
        self.view.banner = (f"{res.verdict.upper()}  {res.total_ms:.1f} ms", res.verdict)
        self.view.update()
        rows = []
        for r in res.results:
            limits = {}
            for sec, i, s in self._all_steps():
                if sec == "inspect" and self._step_name(sec, i) == r.step:
                    limits = s.get("limits") or {}
            verdicts = self._limit_verdicts(r.measurements, limits)
            if r.error:
                rows.append((r.step, "error", r.error, "", "error", r.ms))
            for m, v in r.measurements.items():
                lim = limits.get(m)
                rows.append((r.step, m, v, self._limit_text(lim), verdicts.get(m, ""), r.ms))
            if not r.measurements and not r.error:
                rows.append((r.step, "—", "", "", r.verdict, r.ms))
        if res.error:
            rows.append(("frame", "error", res.error, "", "error", 0.0))
        self.table.setRowCount(len(rows))
        for i, (step, m, v, lim, verdict, ms) in enumerate(rows):
            vals = [step, m, _fmt(v), lim, verdict.upper() if verdict else ""]
            for c, text in enumerate(vals):
                it = QtWidgets.QTableWidgetItem(text)
                if c == 0:
                    it.setToolTip(f"{step}: {ms:.2f} ms")
                if c == 2 and isinstance(v, (list, tuple)):
                    it.setToolTip(str(v))
                if c == 2:
                    it.setTextAlignment(QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter)
                if verdict and c in (2, 4):
                    it.setForeground(theme.status_color(verdict))
                self.table.setItem(i, c, it)
            if verdict in ("fail", "error"):
                for c in range(5):
                    self.table.item(i, c).setBackground(QtGui.QColor(90, 30, 30, 90))
        self.tabs.setTabText(0, f"Measurements ({len(rows)})")
        if not self.problems:
            self.tabs.setCurrentIndex(0)
        self._show_step_measurements()

    @staticmethod
    def _limit_text(lim: dict | None) -> str:
        if not lim:
            return ""
        lo, hi = lim.get("min"), lim.get("max")
        if lo is not None and hi is not None:
            s = f"{_fmt(lo)} … {_fmt(hi)}"
        elif lo is not None:
            s = f"≥ {_fmt(lo)}"
        elif hi is not None:
            s = f"≤ {_fmt(hi)}"
        else:
            s = ""
        if "equals" in lim:
            s = f"= {lim['equals']}"
        if "one_of" in lim:
            s = f"in {lim['one_of']}"
        return s

    def closeEvent(self, e):
        self._close_pipeline()
        super().closeEvent(e)
