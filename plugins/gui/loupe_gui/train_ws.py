"""The trainer workspace (Astrocyte-style): data, analysis, train, results, export and optimise.

Works with whatever the catalogue holds: ``catalogue.trainers[task]`` trains,
``catalogue.runtimes[task]`` evaluates, ``catalogue.optimizers`` optimise, and
the task's inspect tool (``<task>.*`` with a ``ModelRef`` parameter) gives the
heatmaps through an ordinary ``Pipeline``.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets

from host import (Bundle, ModelRef, Pipeline, Recipe, UsageError, blend_heatmap, open_source, resolved_overlays,
                  thumbnail, to_uint8)

from . import theme
from .charts import BarChart, ConfusionMatrix, HistogramChart, LineChart, SizeChart
from .dataset import analyze_with
from .forms import ParamForm
from .layout import workspace_split
from .imageview import paint_shape, read_image, to_qimage
from .jobs import GuiProgress, Job
from .sourcepick import PathEdit

GOOD = ("good", "ok", "pass", "normal")


# ----------------------------------------------------------------- host calls


def model_tool(catalogue, task: str) -> str | None:
    """The inspect tool that runs bundles of ``task`` (its id is namespaced by the task, it takes a ModelRef)."""
    for tid, e in sorted(catalogue.tools.items()):
        if e.cls.stage != "inspect" or not tid.startswith(task + "."):
            continue
        for name, f in e.cls.Params.model_fields.items():
            if f.annotation is ModelRef:
                return tid
    return None


def model_field(catalogue, tool_id: str) -> str:
    for name, f in catalogue.tools[tool_id].cls.Params.model_fields.items():
        if f.annotation is ModelRef:
            return name
    raise UsageError(f"{tool_id} takes no model")


#: the evaluation's headline figures, by task, and how the results header names them
HEADLINE = {"map50": "mAP50", "map50_95": "mAP50:95", "count_accuracy": "count accuracy", "defect_iou": "defect IoU",
            "mean_iou": "mean IoU", "image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "f1": "F1"}


def test_folder(data: Path) -> Path:
    return data / "test" if (data / "test").is_dir() else data


def inspect_images(pm, bundle: Bundle, data: Path, progress, gallery: int = 24, all_scores: bool = False
                   ) -> dict[str, Any]:
    """Run the task's inspect tool over the test images: heatmap tiles, and per-image measurements."""
    cat = pm.catalogue
    tid = model_tool(cat, bundle.task)
    if tid is None:
        return {"tool": None, "tiles": [], "rows": []}
    doc = {"loupe_recipe": 1, "name": "gui-gallery",
           "inspect": [{"tool": tid, "name": "model",
                        "params": {model_field(cat, tid): {"path": str(bundle.path), "sha256": bundle.sha256}}}]}
    recipe = Recipe.from_dict(doc, cat, base_dir=bundle.path.parent, file="<gallery>")
    root = test_folder(data)
    keys: list[str] = []
    src = open_source(f"folder:{root}", cat, root, {"recursive": True})
    for _ in src.frames(skip=lambda k: keys.append(k) or True):
        pass
    keys = [k for k in keys if "ground_truth" not in Path(k).parts
            and not (Path(k).parent.name == "masks" and Path(k).parent.with_name("images").is_dir())]  # segmentation
    by_class: dict[str, list[str]] = {}
    for k in keys:
        by_class.setdefault(Path(k).parent.name, []).append(k)
    chosen: set[str] = set()
    per = max(1, gallery // max(1, len(by_class)))
    for c, ks in by_class.items():
        chosen.update(ks[i] for i in np.linspace(0, len(ks) - 1, min(per, len(ks))).astype(int))
    wanted = set(keys) if all_scores else chosen
    pipe = Pipeline(recipe)
    rows, tiles = [], []
    try:
        src = open_source(f"folder:{root}", cat, root, {"recursive": True})
        n = len(wanted)
        for i, frame in enumerate(src.frames(skip=lambda k: k not in wanted)):
            res = pipe.process(frame)
            label = Path(frame.path).parent.name
            r = res.results[0] if res.results else None
            rows.append({"path": frame.path, "label": label, "measurements": dict(r.measurements) if r else {},
                         "verdict": res.verdict})
            if frame.path in chosen and frame.image is not None:
                rgb = to_uint8(frame.image)
                small, scale = thumbnail(rgb, 220)
                if r is not None and r.heatmap is not None:
                    small = blend_heatmap(small, np.asarray(r.heatmap, np.float32), 0.45)
                # the tool's overlays (detection boxes, segmentation regions...) in image pixels; the
                # gallery draws them on the tile, scaled as the thumbnail is
                tiles.append({"image": small, "label": label, "path": frame.path, "scale": scale,
                              "overlays": resolved_overlays(r) if r is not None else [],
                              "measurements": dict(r.measurements) if r else {}, "verdict": res.verdict})
            progress.update("heatmaps", i + 1, n)
    finally:
        pipe.close()
    return {"tool": tid, "tiles": tiles, "rows": rows}


def evaluate_bundle(pm, bundle_path: Path, data: Path, out_dir: Path, progress) -> dict[str, Any]:
    bundle = Bundle.load(bundle_path)
    entry = pm.catalogue.runtimes.get(bundle.task)
    if entry is None:
        raise UsageError(f"no model runtime for task {bundle.task!r} is installed")
    metrics = entry.cls().evaluate(bundle, data, out_dir, progress)
    # every test image's prediction: the scores of the ROC / histogram (anomaly runtimes give none), and the
    # images behind each confusion-matrix cell (classification)
    per_image = "confusion_matrix" in metrics or not ("scores" in metrics and "labels" in metrics)
    gallery = inspect_images(pm, bundle, data, progress, all_scores=per_image)
    return {"bundle": bundle, "metrics": metrics, "gallery": gallery}


def train_and_evaluate(pm, task: str, data: Path, out: Path, params, progress) -> dict[str, Any]:
    trainer = pm.catalogue.trainers[task].cls()
    t0 = time.perf_counter()
    bundle = trainer.train(data, out, params, progress)
    seconds = time.perf_counter() - t0
    progress.log(f"bundle written to {bundle.path} in {seconds:.1f} s")
    result = {"bundle": bundle, "metrics": {}, "gallery": {"tiles": [], "rows": []}, "train_seconds": seconds}
    if bundle.task in pm.catalogue.runtimes:
        progress.training = False  # evaluation: its running figures are not training curves
        result.update(evaluate_bundle(pm, bundle.path, data, out.parent / f"{out.name}-eval", progress))
    return result


def roc_points(scores, labels) -> tuple[np.ndarray, np.ndarray, float]:
    """False and true positive rates over every threshold, and the area under the curve (for the chart)."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.where(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[distinct]
    fp = np.cumsum(~y)[distinct]
    tpr = np.r_[0, tp / max(y.sum(), 1)]
    fpr = np.r_[0, fp / max((~y).sum(), 1)]
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it
    return fpr, tpr, float(trapezoid(tpr, fpr))


def curve_name(group: str, key: str) -> str:
    """The legend of a live curve: ``loss`` -> ``training loss``, ``val_loss`` -> ``validation loss``;
    a non-epoch stage keeps its name (``recover: loss``)."""
    if group != "train":
        return f"{group}: {key}"
    low = key.lower()
    for prefix in ("val_", "val ", "validation_", "validation "):
        if low.startswith(prefix):
            return "validation " + key[len(prefix):].replace("_", " ")
    for prefix in ("train_", "train ", "training_", "training "):
        if low.startswith(prefix):
            return "training " + key[len(prefix):].replace("_", " ")
    return "training " + key.replace("_", " ")


EPOCH_STAGE = re.compile(r"^epoch\s+(\d+)(?:\s*/\s*(\d+))?$", re.I)


def curve_point(stage: str, done: int, total: int, step: int) -> tuple[str, float, bool]:
    """Where a progress update goes on the live curves: (stage group, x, x is in epochs).

    Trainers name their epoch stages ``epoch 3/20``: those are one group, ``train``,
    with x in epochs (epoch 3 at 2/3 done -> 2.67). Any other stage is its own group,
    at x = ``step`` (that group's update count).
    """
    m = EPOCH_STAGE.match(stage.strip())
    if m:
        return "train", int(m.group(1)) - 1 + (done / total if total else 1.0), True
    return stage.strip(), float(step), False


# ----------------------------------------------------------------- widgets


class Gallery(QtWidgets.QListWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setViewMode(QtWidgets.QListView.IconMode)
        self.setIconSize(QtCore.QSize(180, 180))
        self.setResizeMode(QtWidgets.QListView.Adjust)
        self.setMovement(QtWidgets.QListView.Static)
        self.setSpacing(6)
        self.setWordWrap(True)
        self.setUniformItemSizes(True)
        self.setGridSize(QtCore.QSize(200, 232))

    def set_tiles(self, tiles: list[dict], caption) -> None:
        self.clear()
        for t in tiles:
            img = t["image"]
            q = to_qimage(img[..., ::-1] if img.ndim == 3 else img)  # tiles are RGB; to_qimage expects BGR
            pix = QtGui.QPixmap.fromImage(q).scaled(180, 180, QtCore.Qt.KeepAspectRatio, QtCore.Qt.SmoothTransformation)
            text, status = caption(t)
            canvas = QtGui.QPixmap(pix.width() + 6, pix.height() + 6)
            canvas.fill(theme.status_color(status))
            p = QtGui.QPainter(canvas)
            p.drawPixmap(3, 3, pix)
            if t.get("overlays"):
                k = t.get("scale", 1.0) * pix.width() / max(1, img.shape[1])  # image pixels -> tile pixels
                p.setRenderHint(QtGui.QPainter.Antialiasing, True)
                font = p.font()
                font.setPointSizeF(max(6.0, font.pointSizeF() * 0.8))
                p.setFont(font)
                for shape in t["overlays"]:
                    paint_shape(p, shape, lambda x, y: QtCore.QPointF(3 + x * k, 3 + y * k), k)
            p.end()
            it = QtWidgets.QListWidgetItem(QtGui.QIcon(canvas), text)
            it.setToolTip(t["path"])
            self.addItem(it)


class CellDialog(QtWidgets.QDialog):
    """The images of one confusion-matrix cell, as thumbnails with their confidence."""

    def __init__(self, title: str, rows: list[dict], parent=None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.resize(760, 520)
        lay = QtWidgets.QVBoxLayout(self)
        head = QtWidgets.QLabel(title)
        head.setObjectName("heading")
        lay.addWidget(head)
        self.gallery = Gallery()
        lay.addWidget(self.gallery, 1)
        self.rows = rows
        tiles = []
        for r in rows:
            try:
                img = read_image(r["path"])
            except (OSError, ValueError):
                continue
            small, _ = thumbnail(to_uint8(img), 220)
            tiles.append({"image": small, "label": r["label"], "path": r["path"],
                          "measurements": r["measurements"], "verdict": r["verdict"]})

        def caption(t):
            meas = t["measurements"]
            conf = meas.get("confidence")
            return (f"{Path(t['path']).name}\n→ {meas.get('class')}" + (f" {conf:.2f}" if conf is not None else ""),
                    "pass" if str(meas.get("class")) == t["label"] else "fail")

        self.gallery.set_tiles(tiles, caption)
        close = QtWidgets.QPushButton("Close")
        close.clicked.connect(self.close)
        lay.addWidget(close, 0, QtCore.Qt.AlignRight)


class TrainWorkspace(QtWidgets.QWidget):
    """Train, evaluate and optimise models of any registered task.

    ``idle`` is emitted once a job (analysis, training, evaluation, optimisation) has ended and every one of
    its results is on screen, buttons included: tests and callers wait on it, never on a proxy such as
    ``result is not None``.
    """

    status = QtCore.pyqtSignal(str)
    trainingFinished = QtCore.pyqtSignal(object)
    evaluationFinished = QtCore.pyqtSignal(object)
    idle = QtCore.pyqtSignal()

    def __init__(self, pm, parent=None):
        super().__init__(parent)
        self.pm = pm
        self.catalogue = pm.catalogue
        self.job: Job | None = None
        self._job_active = False
        self.progress: GuiProgress | None = None
        self.summary = None
        self.bundle: Bundle | None = None
        self.result: dict | None = None
        self.form: ParamForm | None = None
        self._steps: dict[str, int] = {}
        self._pending: dict[str, list] = {}
        # an opened bundle's evaluation report (images, PR curves) goes to a temporary folder: the newest one is kept
        # while its results are shown, older ones are removed (and all of them when the app exits)
        self._eval_dirs: list[tempfile.TemporaryDirectory] = []
        self._t0 = 0.0
        self._build_ui()
        self._task_changed()

    # -------------------------------------------------------------------- UI

    def _build_ui(self):
        split, left, ll = workspace_split(self)
        self._build_data_column(ll)
        split.addWidget(left)
        midwrap = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        midwrap.addWidget(self._build_training_column())
        midwrap.addWidget(self._build_advanced_panel())
        midwrap.setSizes([520, 300])
        split.addWidget(midwrap)
        split.addWidget(self._build_results_column())
        split.setSizes([330, 640, 620])
        split.setStretchFactor(2, 1)
        self._update_buttons()

    def _build_data_column(self, ll: QtWidgets.QVBoxLayout) -> None:
        """Left: the task, the data folder and the dataset analysis charts."""
        dbox = QtWidgets.QGroupBox("Data")
        df = QtWidgets.QFormLayout(dbox)
        self.task = QtWidgets.QComboBox()
        for task, e in sorted(self.catalogue.trainers.items()):
            self.task.addItem(task, task)
            self.task.setItemData(self.task.count() - 1, e.cls.description, QtCore.Qt.ToolTipRole)
        if not self.catalogue.trainers:
            self.task.addItem("no trainer installed (pip install loupe-trainer)", None)
        self.task.currentIndexChanged.connect(self._task_changed)
        df.addRow("task", self.task)
        self.data_edit = PathEdit("class folders, or an MVTec AD category", "folder", "Data folder")
        self.data = self.data_edit.edit
        self.data_edit.chosen.connect(lambda _path: self.analyse())
        df.addRow("folder", self.data_edit)
        self.data_info = QtWidgets.QLabel("")
        self.data_info.setObjectName("muted")
        self.data_info.setWordWrap(True)
        ll.addWidget(dbox)
        ll.addWidget(self.data_info)
        self.counts_chart = BarChart("Images per class")
        self.counts_chart.empty_text = "choose a data folder"
        self.sizes_chart = SizeChart("Image sizes")
        self.sizes_chart.empty_text = "choose a data folder"
        ll.addWidget(self.counts_chart, 1)
        ll.addWidget(self.sizes_chart, 1)

    def _build_training_column(self) -> QtWidgets.QWidget:
        """Middle: the bundle path, the buttons, the progress, the live curves and the log."""
        mid = QtWidgets.QWidget()
        ml = QtWidgets.QVBoxLayout(mid)
        ml.setContentsMargins(4, 0, 4, 0)
        ml.addWidget(self._build_training_box())
        ml.addWidget(self._build_curves(), 2)
        self.log = QtWidgets.QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setFont(QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.FixedFont))
        self.log.setPlaceholderText("training log: what the trainer reports (split sizes, epochs, early stopping, "
                                    "export checks) appears here")
        ml.addWidget(self.log, 1)
        return mid

    def _build_training_box(self) -> QtWidgets.QGroupBox:
        tbox = QtWidgets.QGroupBox("Training")
        tl = QtWidgets.QVBoxLayout(tbox)
        orow = QtWidgets.QHBoxLayout()
        orow.addWidget(QtWidgets.QLabel("bundle"))
        self.out = QtWidgets.QLineEdit()
        self.out.setPlaceholderText("where the model bundle is written")
        orow.addWidget(self.out, 1)
        self.open_btn = QtWidgets.QPushButton("Open bundle…")
        self.open_btn.clicked.connect(self._open_bundle_dialog)
        orow.addWidget(self.open_btn)
        tl.addLayout(orow)
        brow = QtWidgets.QHBoxLayout()
        self.train_btn = QtWidgets.QPushButton("Train")
        self.train_btn.setObjectName("primary")
        self.train_btn.setMinimumHeight(34)
        self.train_btn.clicked.connect(self.train)
        self.cancel_btn = QtWidgets.QPushButton("Cancel")
        self.cancel_btn.setObjectName("danger")
        self.cancel_btn.setMinimumHeight(34)
        self.cancel_btn.clicked.connect(self.cancel)
        self.adv_btn = QtWidgets.QPushButton("Advanced ▸")
        self.adv_btn.setCheckable(True)
        self.adv_btn.toggled.connect(self._toggle_advanced)
        brow.addWidget(self.train_btn, 2)
        brow.addWidget(self.cancel_btn, 1)
        brow.addWidget(self.adv_btn, 1)
        tl.addLayout(brow)
        self.stage = QtWidgets.QLabel("idle")
        self.stage.setObjectName("muted")
        tl.addWidget(self.stage)
        self.bar = QtWidgets.QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        tl.addWidget(self.bar)
        return tbox

    def _build_curves(self) -> QtWidgets.QStackedWidget:
        """The live training curves (training and validation), or, for a trainer without epochs (anomaly),
        the score distribution of the test images."""
        self.curves = QtWidgets.QStackedWidget()
        page = QtWidgets.QWidget()
        curves = QtWidgets.QHBoxLayout(page)
        curves.setContentsMargins(0, 0, 0, 0)
        self.loss_chart = LineChart("Loss")
        self.loss_chart.empty_text = "the loss curve appears while training"
        self.metric_chart = LineChart("Metrics")
        self.metric_chart.empty_text = "accuracy / validation metrics appear while training"
        curves.addWidget(self.loss_chart)
        curves.addWidget(self.metric_chart)
        self.curves.addWidget(page)
        self.score_dist = HistogramChart("Score distribution of the test images")
        self.score_dist.x_label = "score"
        self.score_dist.empty_text = "this trainer has no epochs: the scores of the test images appear here"
        self.curves.addWidget(self.score_dist)
        return self.curves

    def _build_advanced_panel(self) -> QtWidgets.QGroupBox:
        """The trainer's parameters (a form generated from its Params), beside the training panel."""
        self.adv = QtWidgets.QGroupBox("Advanced (trainer parameters)")
        al = QtWidgets.QVBoxLayout(self.adv)
        self.adv_scroll = QtWidgets.QScrollArea()
        self.adv_scroll.setWidgetResizable(True)
        al.addWidget(self.adv_scroll)
        reset = QtWidgets.QPushButton("Reset to defaults")
        reset.clicked.connect(self._task_changed)
        al.addWidget(reset)
        self.adv.setVisible(False)
        return self.adv

    def _build_results_column(self) -> QtWidgets.QWidget:
        """Right: the evaluation (confusion, ROC / scores, heatmaps, metrics, optimised) and export."""
        res = QtWidgets.QWidget()
        rl2 = QtWidgets.QVBoxLayout(res)
        rl2.setContentsMargins(4, 0, 0, 0)
        self.res_title = QtWidgets.QLabel("Results")
        self.res_title.setObjectName("heading")
        rl2.addWidget(self.res_title)
        self.res_info = QtWidgets.QLabel("Train a model, or open a bundle, to see its evaluation.")
        self.res_info.setObjectName("muted")
        self.res_info.setWordWrap(True)
        rl2.addWidget(self.res_info)
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.setElideMode(QtCore.Qt.ElideNone)   # tab titles are never cut short
        self.tabs.setUsesScrollButtons(True)
        self.cm = ConfusionMatrix()
        self.cm.cellClicked.connect(self.open_cell)
        self.tabs.addTab(self.cm, "Confusion")
        self.tabs.addTab(self._build_scores_tab(), "ROC / scores")
        self.pr = LineChart("Precision–recall per class (IoU 0.5)")
        self.pr.x_label, self.pr.y_label = "recall", "precision"
        self.pr.last_value, self.pr.unit_box = False, True
        self.tabs.addTab(self.pr, "Precision–recall")
        self.gallery = Gallery()
        self.tabs.addTab(self.gallery, "Images")
        self.metrics_table = QtWidgets.QTableWidget(0, 2)
        self.metrics_table.setHorizontalHeaderLabels(["metric", "value"])
        self.metrics_table.verticalHeader().hide()
        self.metrics_table.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.Stretch)
        self.tabs.addTab(self.metrics_table, "Metrics")
        self.tabs.addTab(self._build_optimised_tab(), "Optimised")
        rl2.addWidget(self.tabs, 1)
        rl2.addLayout(self._build_export_row())
        self.results_column = res
        return res

    def showEvent(self, e):
        # the results column is never narrower than its tab bar (measured once the theme's font applies)
        self.results_column.setMinimumWidth(self.tabs.tabBar().sizeHint().width() + 12)
        super().showEvent(e)

    def _build_scores_tab(self) -> QtWidgets.QWidget:
        """ROC, score histogram and the threshold slider (anomaly bundles)."""
        an = QtWidgets.QWidget()
        anl = QtWidgets.QVBoxLayout(an)
        anl.setContentsMargins(4, 4, 4, 4)
        charts = QtWidgets.QVBoxLayout()
        self.roc = LineChart("ROC")
        self.roc.roc = True
        self.roc.x_label = "false positive rate"
        self.roc.y_label = "true positive rate"
        self.hist = HistogramChart("Scores of the test images")
        self.hist.x_label = "score"
        charts.addWidget(self.roc, 1)
        charts.addWidget(self.hist, 1)
        anl.addLayout(charts, 1)
        srow = QtWidgets.QHBoxLayout()
        srow.addWidget(QtWidgets.QLabel("threshold"))
        self.slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.slider.setRange(0, 1000)
        self.slider.valueChanged.connect(self._threshold_moved)
        srow.addWidget(self.slider, 1)
        anl.addLayout(srow)
        self.thr_label = QtWidgets.QLabel("")
        self.thr_label.setWordWrap(True)
        anl.addWidget(self.thr_label)
        return an

    def _build_optimised_tab(self) -> QtWidgets.QWidget:
        """The optimised bundle beside its parent."""
        self.opt_tab = QtWidgets.QWidget()
        otl = QtWidgets.QVBoxLayout(self.opt_tab)
        self.opt_info = QtWidgets.QLabel("Optimise the bundle (below) to compare it with its parent here.")
        self.opt_info.setObjectName("muted")
        self.opt_info.setWordWrap(True)
        otl.addWidget(self.opt_info)
        self.opt_table = QtWidgets.QTableWidget(0, 3)
        self.opt_table.setHorizontalHeaderLabels(["", "parent", "optimised"])
        self.opt_table.verticalHeader().hide()
        self.opt_table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.opt_table.horizontalHeader().setStretchLastSection(True)
        otl.addWidget(self.opt_table, 1)
        self.opt_result = None
        return self.opt_tab

    def _build_export_row(self) -> QtWidgets.QHBoxLayout:
        erow = QtWidgets.QHBoxLayout()
        self.export_btn = QtWidgets.QPushButton("Export bundle…")
        self.export_btn.clicked.connect(self._export_dialog)
        self.opt_method = QtWidgets.QComboBox()
        for m, e in sorted(self.catalogue.optimizers.items()):
            self.opt_method.addItem(m, m)
            self.opt_method.setItemData(self.opt_method.count() - 1, e.cls.description, QtCore.Qt.ToolTipRole)
        self.opt_btn = QtWidgets.QPushButton("Optimise")
        self.opt_btn.clicked.connect(self.optimise)
        if not self.catalogue.optimizers:
            self.opt_method.addItem("no optimiser installed", None)
        elif self.opt_method.findData("int8") >= 0:  # the one that pays off on a CPU line (fp16 is for GPUs)
            self.opt_method.setCurrentIndex(self.opt_method.findData("int8"))
        erow.addWidget(self.export_btn)
        erow.addStretch(1)
        erow.addWidget(self.opt_method)
        erow.addWidget(self.opt_btn)
        return erow

    # ----------------------------------------------------------------- state

    def _busy(self) -> bool:
        # busy until the job's ``finished`` has been handled on this (the GUI) thread: the worker's
        # isRunning() turns false before its queued succeeded/failed signal reaches our slots
        return self.job is not None and self._job_active

    def is_idle(self) -> bool:
        return not self._busy()

    def _job_finished(self) -> None:
        # the job's succeeded/failed/cancelled slot has run before this one (queued in emission order)
        self._job_active = False
        self._update_buttons()
        self.idle.emit()

    def _update_buttons(self):
        busy = self._busy()
        have_trainer = self.task.currentData() is not None
        self.train_btn.setEnabled(not busy and have_trainer)
        self.cancel_btn.setEnabled(busy)
        self.open_btn.setEnabled(not busy)
        self.export_btn.setEnabled(not busy and self.bundle is not None)
        self.opt_btn.setEnabled(not busy and self.bundle is not None and self.opt_method.currentData() is not None)

    def _task_changed(self, *_):
        task = self.task.currentData()
        if self.form is not None:
            self.form.deleteLater()
            self.form = None
        if task is None:
            return
        cls = self.catalogue.trainers[task].cls
        self.form = ParamForm(cls.Params)
        holder = QtWidgets.QWidget()
        hl = QtWidgets.QVBoxLayout(holder)
        hl.addWidget(self.form)
        hl.addStretch(1)
        self.adv_scroll.setWidget(holder)
        self._update_buttons()

    def _toggle_advanced(self, on):
        self.adv.setVisible(on)
        self.adv_btn.setText("Advanced ◂" if on else "Advanced ▸")

    def set_data(self, path: str | Path, task: str | None = None) -> None:
        if task is not None:
            i = self.task.findData(task)
            if i >= 0:
                self.task.setCurrentIndex(i)
        self.data.setText(str(path))
        if not self.out.text():
            self.out.setText(str(Path(path).resolve().parent / f"{Path(path).name}-{self.task.currentData()}.bundle"))
        self.analyse()

    def _start(self, job: Job, on_done) -> None:
        self.job = job
        job.succeeded.connect(on_done)
        job.failed.connect(self._job_failed)
        job.cancelled.connect(self._job_cancelled)
        job.finished.connect(self._job_finished)
        self._job_active = True
        job.start()
        self._update_buttons()

    def _new_progress(self) -> GuiProgress:
        self.progress = GuiProgress()
        self.progress.signals.updated.connect(self._on_update)
        self.progress.signals.logged.connect(self._on_log)
        return self.progress

    # -------------------------------------------------------------- analysis

    def analyse(self) -> None:
        path = self.data.text().strip()
        if not path or self._busy():
            return
        self.data_info.setText("analysing…")
        self._start(Job(analyze_with, self.catalogue, Path(path), progress=self._new_progress()), self._analysed)

    def _analysed(self, summary) -> None:
        self.summary = summary
        labels = summary.classes
        series = [(split, [counts.get(c, 0) for c in labels]) for split, counts in summary.splits.items()]
        self.counts_chart.set_data(labels, series)
        self.sizes_chart.set_sizes(summary.sizes)
        msg = (f"{summary.total} images, {len(labels)} classes, splits: {', '.join(summary.splits)}; "
               f"sizes from {summary.sampled} decoded images")
        if summary.unlabelled:
            msg += f"; {summary.unlabelled} unlabelled"
        if summary.unreadable:
            msg += f"; {len(summary.unreadable)} unreadable"
        if summary.duplicates:
            msg += f"; {summary.duplicates} groups of duplicate files"
        self.data_info.setText(msg)
        self.stage.setText("ready")
        self.bar.setRange(0, 1)
        self.bar.setValue(0)

    # -------------------------------------------------------------- training

    def train(self, params: dict | None = None) -> bool:
        task = self.task.currentData()
        data = Path(self.data.text().strip())
        out = self.out.text().strip()
        if task is None or self._busy():
            return False
        if not data.is_dir():
            self._on_log(f"data folder not found: {data}")
            return False
        if not out:
            out = str(data.resolve().parent / f"{data.name}-{task}.bundle")
            self.out.setText(out)
        if params:
            self.form.set_values(params)
        p = self.form.validate()
        if p is None:
            self.adv_btn.setChecked(True)
            self._on_log("fix the highlighted trainer parameters")
            return False
        for chart in (self.loss_chart, self.metric_chart):
            chart.clear()
            chart.x_label = ""
        self.score_dist.set_groups([], [])
        self.score_dist.set_threshold(None)
        self.curves.setCurrentWidget(self.loss_chart.parentWidget() if self._has_epochs(task) else self.score_dist)
        self.loss_chart.empty_text = "the loss curve appears while training"
        self.metric_chart.empty_text = "accuracy / validation metrics appear while training"
        self._steps, self._pending = {}, {}
        self._t0 = time.perf_counter()
        self._on_log(f"training {task} on {data} → {out}")
        self.stage.setText("starting…")
        self._start(Job(train_and_evaluate, self.pm, task, data, Path(out), p, self._new_progress()), self._trained)
        return True

    def _has_epochs(self, task: str | None) -> bool:
        """A trainer whose parameters have ``epochs`` reports loss curves; others (PatchCore) have none."""
        entry = self.catalogue.trainers.get(task) if task else None
        return entry is not None and "epochs" in entry.cls.Params.model_fields

    def cancel(self) -> None:
        if self.progress is not None and self._busy():
            self.progress.cancel()
            self.stage.setText("cancelling at the next progress step…")

    def _on_update(self, stage: str, done: int, total: int, metrics: dict, training: bool = True) -> None:
        if total:
            self.bar.setRange(0, total)
            self.bar.setValue(min(done, total))
        else:
            self.bar.setRange(0, 0)
        elapsed = time.perf_counter() - self._t0 if self._t0 else 0.0
        mtxt = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self.stage.setText(f"{stage}  {done}/{total or '?'}   {mtxt}   {elapsed:.0f} s")
        if not metrics or not training or stage in ("analyse", "heatmaps"):
            return
        # one curve per (stage group, metric): an evaluation's running accuracy or a calibration figure never
        # continues a training curve
        group = curve_point(stage, done, total, 0)[0]
        for k, v in metrics.items():
            if not math.isfinite(v):
                continue
            name = curve_name(group, k)
            self._steps[name] = self._steps.get(name, 0) + 1
            _, x, epochs = curve_point(stage, done, total, self._steps[name])
            chart = self.loss_chart if "loss" in k.lower() else self.metric_chart
            if not epochs:
                # a stage's one-off figure (a bank size, a calibrated threshold) is no curve: it is in the
                # stage line and the log; it becomes a curve (x = update count) once it repeats
                pending = self._pending.setdefault(name, [])
                pending.append((x, v))
                if len(pending) < 2:
                    continue
                for px, pv in pending[:-1]:
                    chart.add_point(name, px, pv)
                pending[:-1] = []
                chart.x_label = chart.x_label or "update"
            else:
                chart.x_label = "epoch"
            chart.add_point(name, x, v)

    def _on_log(self, msg: str) -> None:
        self.log.appendPlainText(msg)

    def _job_failed(self, msg: str) -> None:
        self.stage.setText("failed")
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self._on_log("error: " + msg)
        self.data_info.setText(msg.split("\n")[0]) if "analys" in self.data_info.text() else None

    def _job_cancelled(self) -> None:
        self.stage.setText("cancelled")
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self._on_log("cancelled by the user; no bundle was written")

    def _trained(self, result: dict) -> None:
        self.stage.setText(f"done in {result.get('train_seconds', 0):.1f} s")
        task = result["bundle"].task if result.get("bundle") is not None else "this"
        for chart, what in ((self.loss_chart, "loss"), (self.metric_chart, "metric")):
            if not chart.has_data():
                chart.empty_text = f"the {task} trainer reported no {what} curve (see the log)"
                chart.refresh()
        self.bar.setValue(self.bar.maximum())
        self.show_result(result)
        self.trainingFinished.emit(result)

    # --------------------------------------------------------------- results

    def open_bundle(self, path: str | Path, data: str | Path | None = None) -> bool:
        data = Path(data) if data else Path(self.data.text().strip())
        if not data.is_dir():
            self._on_log("choose the data folder first: the bundle is evaluated on its test split")
            return False
        self.data.setText(str(data))
        self._eval_dirs.append(tempfile.TemporaryDirectory(prefix="loupe-eval-"))
        out_dir = Path(self._eval_dirs[-1].name)
        self.stage.setText("evaluating…")
        self._start(Job(evaluate_bundle, self.pm, Path(path), data, out_dir, self._new_progress()), self._evaluated)
        return True

    def _open_bundle_dialog(self):
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Open a model bundle")
        if path:
            self.open_bundle(path)

    def _evaluated(self, result: dict) -> None:
        self.stage.setText("evaluated")
        self.bar.setRange(0, 1)
        self.bar.setValue(1)
        self.show_result(result)
        for old in self._eval_dirs[:-1]:
            old.cleanup()
        del self._eval_dirs[:-1]
        self.evaluationFinished.emit(result)

    def show_result(self, result: dict) -> None:
        self.result = result
        self.bundle = result.get("bundle")
        m = result.get("metrics") or {}
        task = self.bundle.task if self.bundle else m.get("task", "")
        if self.task.findData(task) >= 0:
            self.task.setCurrentIndex(self.task.findData(task))   # an opened bundle's task is the one shown
        self.res_title.setText(f"Results — {task}")
        head = []
        if "accuracy" in m:
            head.append(f"accuracy <b>{m['accuracy']:.3f}</b>")
        for k, label in HEADLINE.items():
            if isinstance(m.get(k), (int, float)):
                head.append(f"{label} <b>{m[k]:.3f}</b>")
        if "n_images" in m:
            head.append(f"{m['n_images']} test images")
        if "ms_per_image" in m:
            head.append(f"{m['ms_per_image']:.1f} ms/image")
        if self.bundle is not None:
            head.append(f"<span style='color:{theme.MUTED}'>{self.bundle.path}</span>")
        self.res_info.setText(" · ".join(head))
        # metrics table: every scalar the runtime and the bundle report
        rows = [(k, v) for k, v in m.items() if isinstance(v, (int, float, str)) and k not in ("bundle", "data")]
        if self.bundle is not None:
            rows += [(f"bundle.{k}", v) for k, v in (self.bundle.meta.get("metrics") or {}).items()
                     if isinstance(v, (int, float, str))]
        for c, pc in (m.get("per_class") or {}).items():
            rows += [(f"{c}.{k}", v) for k, v in pc.items()]
        self.metrics_table.setRowCount(len(rows))
        for i, (k, v) in enumerate(rows):
            self.metrics_table.setItem(i, 0, QtWidgets.QTableWidgetItem(str(k)))
            self.metrics_table.setItem(i, 1, QtWidgets.QTableWidgetItem(f"{v:.4g}" if isinstance(v, float) else str(v)))
        gallery = result.get("gallery") or {}
        if "confusion_matrix" in m:
            self.cm.set_matrix(m.get("classes") or [], m["confusion_matrix"])
            self.tabs.setCurrentIndex(0)
        self._scores(m, gallery)
        self.gallery.set_tiles(gallery.get("tiles") or [], self._caption)
        # a task without a confusion matrix (anomaly) has no Confusion tab at all
        self.tabs.setTabVisible(0, "confusion_matrix" in m)
        self.tabs.setTabEnabled(0, "confusion_matrix" in m)
        self.tabs.setTabVisible(1, self._score_data is not None)
        self.tabs.setTabEnabled(1, self._score_data is not None)
        pr = self._pr_curves(m)
        self.tabs.setTabVisible(self.tabs.indexOf(self.pr), pr)
        self.tabs.setTabEnabled(self.tabs.indexOf(self.pr), pr)
        self._show_score_distribution()
        if "confusion_matrix" not in m and self._score_data is not None:
            self.tabs.setCurrentIndex(1)
        elif pr:
            self.tabs.setCurrentWidget(self.pr)
        self.opt_result = None
        self.opt_table.setRowCount(0)
        self.tabs.setTabEnabled(self.tabs.indexOf(self.opt_tab), False)
        self._update_buttons()

    def _pr_curves(self, m: dict) -> bool:
        """Detection: one precision-recall curve per class (``pr_curves.json`` of the evaluation's report
        folder), named with its AP50. False when the evaluation has none."""
        self.pr.clear()
        path = Path(m["report"]) / "pr_curves.json" if m.get("task") == "detect" and m.get("report") else None
        if path is None or not path.is_file():
            return False
        ap = m.get("per_class_ap50") or {}
        for name, c in json.loads(path.read_text()).items():
            a = ap.get(name)
            # the precision envelope (the best precision at this recall or more), as AP integrates it
            env = np.maximum.accumulate(np.asarray(c["precision"], float)[::-1])[::-1]
            self.pr.set_curve(f"{name} AP50 {a:.3f}" if isinstance(a, (int, float)) else name, c["recall"], env)
        return self.pr.has_data()

    def _show_score_distribution(self) -> None:
        """Where a trainer has no loss curves, the middle panel shows the scores of the test images instead."""
        if self._score_data is None:
            return
        scores, labels = self._score_data
        self.score_dist.x_label = self._score_unit
        self.score_dist.x_range = self._thr_range
        self.score_dist.set_groups([("good", scores[~labels]), ("defect", scores[labels])],
                                   [theme.STATUS["pass"], theme.STATUS["fail"]])
        self.score_dist.set_threshold(self.model_threshold)
        if not self.loss_chart.has_data():
            self.curves.setCurrentWidget(self.score_dist)

    # ------------------------------------------------------ confusion cells

    def cell_images(self, i: int, j: int) -> list[dict]:
        """The test images of the confusion cell (true class ``i``, predicted ``j``), from the task's
        inspect tool run over every test image."""
        m = (self.result or {}).get("metrics") or {}
        classes = [str(c) for c in m.get("classes") or []]
        if not (0 <= i < len(classes) and 0 <= j < len(classes)):
            return []
        rows = ((self.result or {}).get("gallery") or {}).get("rows") or []
        return [r for r in rows if r["label"] == classes[i] and str(r["measurements"].get("class")) == classes[j]]

    def open_cell(self, i: int, j: int) -> "CellDialog | None":
        """Open a window with the images of one confusion-matrix cell (a click on the cell does this)."""
        m = (self.result or {}).get("metrics") or {}
        classes = [str(c) for c in m.get("classes") or []]
        if not classes:
            return None
        rows = self.cell_images(i, j)
        dlg = CellDialog(f"true {classes[i]} → predicted {classes[j]}: {len(rows)} image(s)", rows, self)
        dlg.show()
        self.cell_dialog = dlg
        return dlg

    @staticmethod
    def _score_of(meas: dict) -> float | None:
        for k in ("score", "anomaly_score", "image_score"):
            if isinstance(meas.get(k), (int, float)):
                return float(meas[k])
        return None

    def _caption(self, t: dict) -> tuple[str, str]:
        meas = t["measurements"]
        name = Path(t["path"]).name
        if "class" in meas:
            ok = meas["class"] == t["label"]
            conf = meas.get("confidence")
            return (f"{name}\ntrue {t['label']} → {meas['class']}" + (f" {conf:.2f}" if conf is not None else ""),
                    "pass" if ok else "fail")
        if "count" in meas:  # detection: what was found, per class
            per = [f"{k[6:]} {int(v)}" for k, v in meas.items() if k.startswith("count_") and v]
            return f"{name}\n{int(meas['count'])} found" + (": " + ", ".join(per) if per else ""), t["verdict"]
        s = self._score_of(meas)
        if s is None:
            return f"{name}\n{t['label']}", t["verdict"]
        defect = t["label"].lower() not in GOOD
        thr = getattr(self, "model_threshold", None) if getattr(self, "_score_data", None) else None
        flagged = s > thr if thr is not None else t["verdict"] != "pass"  # at the trained threshold
        if defect == flagged:
            return f"{name}\n{t['label']}  score {s:.2f}", "pass"
        return f"{name}\n{t['label']}  score {s:.2f}  " + ("missed" if defect else "false reject"), "fail"

    def _scores(self, m: dict, gallery: dict) -> None:
        """Per-image scores for the ROC, the histogram and the threshold slider.

        From the runtime's ``evaluate`` when it returns ``scores``/``labels`` (in the units of its
        ``threshold``); otherwise from the task's inspect tool run over every test image, whose ``score``
        is normalised (1.0 = the bundle's threshold; the anomaly runtime returns no per-image scores)."""
        self._score_data = None
        self.auroc = None
        if "scores" in m and "labels" in m:
            scores = np.asarray(m["scores"], float)
            labels = np.asarray(m["labels"]).astype(bool)
            thr = m.get("threshold")
            self._score_unit = "score"
        else:
            pairs = [(self._score_of(r["measurements"]), r["label"].lower() not in GOOD)
                     for r in gallery.get("rows") or []]
            pairs = [(s, y) for s, y in pairs if s is not None]
            if not pairs or "confusion_matrix" in m:
                return
            scores = np.array([s for s, _ in pairs])
            labels = np.array([y for _, y in pairs])
            thr = 1.0
            self._score_unit = "score / trained threshold"
        self._score_data = (scores, labels)
        self.hist.x_label = self._score_unit
        self.hist.set_groups([("good", scores[~labels]), ("defect", scores[labels])],
                             [theme.STATUS["pass"], theme.STATUS["fail"]])
        self.roc.clear()
        if labels.any() and (~labels).any():
            fpr, tpr, self.auroc = roc_points(scores, labels)
            self.roc.set_curve(f"AUROC {self.auroc:.3f}", fpr, tpr, theme.ACCENT)
        lo, hi = float(scores.min()), float(scores.max())
        if isinstance(thr, (int, float)):
            lo, hi = min(lo, float(thr)), max(hi, float(thr))
        pad = 0.05 * (hi - lo) if hi > lo else 0.5
        self._thr_range = (lo - pad, hi + pad)
        self.hist.x_range = self._thr_range
        self.model_threshold = float(thr) if isinstance(thr, (int, float)) else float(np.median(scores))
        self.set_threshold(self.model_threshold)

    def set_threshold(self, t: float) -> None:
        """Move the threshold slider to the step nearest ``t``."""
        lo, hi = self._thr_range
        v = int(round((t - lo) / (hi - lo) * 1000))
        self._exact = (v, float(t))  # the slider shows this step as exactly t (e.g. the trained 1.0)
        if v == self.slider.value():
            self._threshold_moved(v)
        self.slider.setValue(v)

    def threshold(self) -> float:
        exact = getattr(self, "_exact", None)
        if exact is not None and exact[0] == self.slider.value():
            return exact[1]
        lo, hi = self._thr_range
        return lo + (hi - lo) * self.slider.value() / 1000.0

    def _threshold_moved(self, v: int) -> None:
        if not getattr(self, "_score_data", None):
            return
        t = self.threshold()
        scores, labels = self._score_data
        pred = scores > t  # anomalous above the threshold, as the tool's is_anomalous
        tp, fp = int((pred & labels).sum()), int((pred & ~labels).sum())
        fn, tn = int((~pred & labels).sum()), int((~pred & ~labels).sum())
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        self.threshold_counts = {"threshold": t, "tp": tp, "fp": fp, "fn": fn, "tn": tn, "f1": f1}
        self.hist.set_threshold(t)
        self.roc.set_marker((fp / max(fp + tn, 1), tp / max(tp + fn, 1)))
        trained = " (the trained threshold)" if t == getattr(self, "model_threshold", None) else ""
        self.thr_label.setText(f"threshold <b>{t:.3f}</b>{trained}: &nbsp; missed defects <b>{fn}</b>/{tp + fn} · "
                               f"false rejects <b>{fp}</b>/{fp + tn} · F1 <b>{f1:.3f}</b>")

    # ------------------------------------------------------ export, optimise

    def export_bundle(self, dest: str | Path) -> Bundle:
        """Copy the bundle to ``dest`` and re-check every file hash there."""
        if self.bundle is None:
            raise UsageError("no bundle to export")
        dest = Path(dest)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(self.bundle.path, dest)
        b = Bundle.load(dest)
        self._on_log(f"exported {self.bundle.path} → {dest} (sha256 {b.sha256[:16]})")
        return b

    def _export_dialog(self):
        path = QtWidgets.QFileDialog.getSaveFileName(self, "Export bundle", str(self.bundle.path) + "-export")[0]
        if path:
            try:
                self.export_bundle(path)
            except Exception as exc:
                self._on_log(f"export failed: {exc}")

    def optimise(self, params: dict | None = None) -> bool:
        """Optimise the current bundle with the chosen method in the worker thread (``params`` override the
        optimiser's defaults); the result is compared with the parent in the Optimised tab."""
        method = self.opt_method.currentData()
        if method is None or self.bundle is None or self._busy():
            return False
        cls = self.catalogue.optimizers[method].cls
        try:
            p = cls.Params(**(params or {}))
        except Exception as exc:  # pydantic ValidationError: show it, do not start
            self._on_log(f"optimiser parameters: {exc}")
            return False
        out = self.bundle.path.parent / f"{self.bundle.path.name}-{method}"
        bundle = self.bundle

        def run(progress):
            progress.training = False
            return cls().optimize(bundle, out, p, progress)

        self.opt_result = None
        self._on_log(f"optimising with {method} → {out}")
        self.stage.setText(f"optimising ({method})…")
        self._start(Job(run, self._new_progress()), self._optimised)
        return True

    @staticmethod
    def _bundle_mb(b: Bundle) -> float:
        return sum(f.stat().st_size for f in Path(b.path).iterdir() if f.is_file()) / 1e6

    def _optimised(self, b: Bundle) -> None:
        rec = b.meta.get("optimization") or {}
        acc = rec.get("accuracy") or {}
        par, opt = dict(acc.get("parent") or {}), dict(acc.get("optimized") or {})
        timing = b.log.get("optimization") or {}  # wall times live in log.json (not hashed)
        for side, d in (("parent", par), ("optimized", opt)):
            if side in (timing.get("ms_per_image") or {}):
                d["ms_per_image"] = timing["ms_per_image"][side]
        rows = [("method", rec.get("method", "?"), ""),
                ("bundle size (MB)", f"{self._bundle_mb(self.bundle):.2f}", f"{self._bundle_mb(b):.2f}")]
        for k, label in (("ms_per_image", "ms / image"), ("accuracy", "accuracy"), ("image_auroc", "image AUROC"),
                         ("pixel_auroc", "pixel AUROC"), ("f1", "F1")):
            if k in par or k in opt:
                f = lambda v: f"{v:.4g}" if isinstance(v, (int, float)) else "—"  # noqa: E731
                rows.append((label, f(par.get(k)), f(opt.get(k))))
        if acc.get("checked"):
            ok = acc.get("within_tolerance")
            rows.append((f"{acc['metric']} lost (points)", "", f"{acc['drop_points']:+.2f}"
                         + ("" if ok else f"  (> {acc['max_drop_points']:g} allowed)")))
        else:
            rows.append(("accuracy check", "", acc.get("reason", "not run")))
        rows.append(("optimise time (s)", "", f"{timing.get('seconds', rec.get('seconds', float('nan'))):.1f}"))
        self.opt_table.setRowCount(len(rows))
        for i, (k, a, c) in enumerate(rows):
            for j, v in enumerate((k, a, c)):
                self.opt_table.setItem(i, j, QtWidgets.QTableWidgetItem(v))
        self.opt_table.resizeColumnsToContents()
        self.opt_result = {"bundle": b, "parent": self.bundle, "record": rec, "rows": rows}
        self.tabs.setTabEnabled(self.tabs.indexOf(self.opt_tab), True)
        self.tabs.setCurrentWidget(self.opt_tab)
        self.opt_info.setText(f"{b.path}")
        self._on_log(f"optimised bundle {b.path}: {self._bundle_mb(b):.2f} MB (was {self._bundle_mb(self.bundle):.2f} MB)")
        self.stage.setText("optimised")

    def shutdown(self) -> None:
        if self._busy():
            self.progress.cancel()
            self.job.wait(5000)
