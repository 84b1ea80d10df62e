"""Image collection (Astrocyte's collection mode): frames from a source into a labelled dataset folder."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets

from host import open_source, thumbnail, to_uint8

from . import theme
from .dataset import IMAGE_EXTENSIONS
from .layout import workspace_split
from .imageview import ImageView, to_qimage
from .camera_panel import CameraPanel
from .sourcepick import PathEdit, SourcePicker


class GrabWorker(QtCore.QThread):
    """Reads frames from a source in a thread; keeps the latest one, signals at most ``fps`` times a second."""

    frame = QtCore.pyqtSignal(object)
    failed = QtCore.pyqtSignal(str)

    def __init__(self, catalogue, spec: str, base_dir: Path, fps: float = 25.0, options: dict | None = None,
                 parent=None):
        super().__init__(parent)
        self.catalogue, self.spec, self.base_dir = catalogue, spec, base_dir
        self.options = options or {}
        self.period = 1.0 / fps
        self._stop = threading.Event()
        self.latest = None
        self.count = 0
        self.source = None  # the open source, for live camera settings

    def stop(self):
        self._stop.set()

    def run(self):
        try:
            src = open_source(self.spec, self.catalogue, self.base_dir, self.options)
        except Exception as exc:
            self.failed.emit(str(exc))
            return
        self.source = src
        try:
            last = 0.0
            for f in src.frames():
                if self._stop.is_set():
                    break
                if f.image is None:
                    continue
                self.latest = f
                self.count += 1
                now = time.perf_counter()
                if now - last >= self.period:
                    last = now
                    self.frame.emit(f)
                    # a file source has no frame rate of its own: play it at the display rate
                    if getattr(src, "scheme", "") in ("folder",):
                        self._stop.wait(self.period)
        except Exception as exc:
            self.failed.emit(f"{type(exc).__name__}: {exc}")
        finally:
            self.source = None
            src.close()


def save_frame(image: np.ndarray, folder: Path, stem: str) -> Path:
    """Write ``image`` losslessly as PNG (8/16-bit as captured) into ``folder``; returns the path."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.png"
    n = 1
    while path.exists():
        path = folder / f"{stem}_{n}.png"
        n += 1
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"cannot encode the frame as PNG ({image.dtype}, {image.shape})")
    buf.tofile(str(path))
    return path


class CollectWorkspace(QtWidgets.QWidget):
    """Live view of a source; captures frames into ``DATASET/<split>/<label>/``.

    ``frameShown(Frame)`` is emitted once a live frame is on screen; ``idle`` once the live source has
    stopped and the buttons show it.
    """

    status = QtCore.pyqtSignal(str)
    captured = QtCore.pyqtSignal(str)
    frameShown = QtCore.pyqtSignal(object)
    idle = QtCore.pyqtSignal()

    def __init__(self, pm, parent=None):
        super().__init__(parent)
        self.pm = pm
        self.catalogue = pm.catalogue
        self.worker: GrabWorker | None = None
        self.current = None
        self._since_auto = 0
        self._build_ui()
        self._update_buttons()

    def _build_ui(self):
        split, left, ll = workspace_split(self)
        ll.addWidget(self._build_source_box())
        self.camera_panel = CameraPanel()  # exposure, gain, ... of a GenICam camera while live
        self.camera_panel.failed.connect(self.message_error)
        ll.addWidget(self.camera_panel)
        ll.addWidget(self._build_dataset_box())
        ll.addWidget(self._build_capture_box())
        ll.addWidget(self._build_counts_box(), 1)
        column = QtWidgets.QScrollArea()  # a camera brings many options and settings: scroll, never squash
        column.setWidgetResizable(True)
        column.setFrameShape(QtWidgets.QFrame.NoFrame)
        column.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
        column.setWidget(left)
        column.setMinimumWidth(left.minimumSizeHint().width() + column.verticalScrollBar().sizeHint().width())
        split.addWidget(column)
        split.addWidget(self._build_live_view())
        split.setSizes([column.minimumWidth(), 1040])
        split.setStretchFactor(1, 1)

    def _build_source_box(self) -> QtWidgets.QGroupBox:
        sbox = QtWidgets.QGroupBox("Source")
        sf = QtWidgets.QFormLayout(sbox)
        self.source = SourcePicker(self.catalogue, default="camera")
        self.scheme, self.target = self.source.scheme, self.source.target
        sf.addRow(self.source)
        brow = QtWidgets.QHBoxLayout()
        self.start_btn = QtWidgets.QPushButton("▶  Live")
        self.start_btn.setObjectName("primary")
        self.start_btn.clicked.connect(self.start)
        self.stop_btn = QtWidgets.QPushButton("■  Stop")
        self.stop_btn.clicked.connect(self.stop)
        brow.addWidget(self.start_btn)
        brow.addWidget(self.stop_btn)
        sf.addRow(brow)
        return sbox

    def _build_dataset_box(self) -> QtWidgets.QGroupBox:
        dbox = QtWidgets.QGroupBox("Dataset")
        df = QtWidgets.QFormLayout(dbox)
        self.folder_edit = PathEdit("dataset folder", "folder", "Dataset folder")
        self.folder = self.folder_edit.edit
        self.folder_edit.chosen.connect(lambda _path: self.refresh_counts())
        df.addRow("folder", self.folder_edit)
        self.split = QtWidgets.QComboBox()
        self.split.addItems(["train", "test", "(none)"])
        self.split.currentIndexChanged.connect(self.refresh_counts)
        df.addRow("split", self.split)
        self.label = QtWidgets.QComboBox()
        self.label.setEditable(True)
        self.label.setInsertPolicy(QtWidgets.QComboBox.InsertAlphabetically)
        self.label.lineEdit().setPlaceholderText("class label, e.g. good")
        df.addRow("label", self.label)
        return dbox

    def _build_capture_box(self) -> QtWidgets.QGroupBox:
        cbox = QtWidgets.QGroupBox("Capture")
        cl = QtWidgets.QVBoxLayout(cbox)
        self.capture_btn = QtWidgets.QPushButton("Capture  (Space)")
        self.capture_btn.setObjectName("primary")
        self.capture_btn.setMinimumHeight(40)
        self.capture_btn.clicked.connect(self.capture)
        QtWidgets.QShortcut(QtGui.QKeySequence(QtCore.Qt.Key_Space), self, self.capture)
        cl.addWidget(self.capture_btn)
        arow = QtWidgets.QHBoxLayout()
        self.auto = QtWidgets.QCheckBox("auto: every")
        self.auto_n = QtWidgets.QSpinBox()
        self.auto_n.setRange(1, 10000)
        self.auto_n.setValue(10)
        self.auto_n.setSuffix(" frames")
        arow.addWidget(self.auto)
        arow.addWidget(self.auto_n, 1)
        cl.addLayout(arow)
        self.message = QtWidgets.QLabel("")
        self.message.setObjectName("muted")
        self.message.setWordWrap(True)
        cl.addWidget(self.message)
        return cbox

    def _build_counts_box(self) -> QtWidgets.QGroupBox:
        self.counts = QtWidgets.QTableWidget(0, 3)
        self.counts.setHorizontalHeaderLabels(["split", "label", "images"])
        self.counts.verticalHeader().hide()
        self.counts.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.Stretch)
        self.counts.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        box = QtWidgets.QGroupBox("In the dataset")
        QtWidgets.QVBoxLayout(box).addWidget(self.counts)
        return box

    def _build_live_view(self) -> QtWidgets.QWidget:
        centre = QtWidgets.QWidget()
        cv = QtWidgets.QVBoxLayout(centre)
        cv.setContentsMargins(4, 0, 0, 0)
        self.view = ImageView()
        self.view.placeholder = "Start a live source, then capture frames into a label."
        self.view.hovered.connect(self.status.emit)
        cv.addWidget(self.view, 1)
        self.strip = QtWidgets.QListWidget()
        self.strip.setViewMode(QtWidgets.QListView.IconMode)
        self.strip.setFlow(QtWidgets.QListView.LeftToRight)
        self.strip.setWrapping(False)
        self.strip.setIconSize(QtCore.QSize(96, 72))
        self.strip.setFixedHeight(118)
        self.strip.setMovement(QtWidgets.QListView.Static)
        cv.addWidget(QtWidgets.QLabel("Last captures"))
        cv.addWidget(self.strip)
        return centre

    def _update_buttons(self):
        live = self.worker is not None and self.worker.isRunning()
        self.start_btn.setEnabled(not live)
        self.stop_btn.setEnabled(live)
        self.capture_btn.setEnabled(self.current is not None)

    def _split_dir(self) -> Path:
        root = Path(self.folder.text().strip())
        s = self.split.currentText()
        return root if s == "(none)" else root / s

    # ------------------------------------------------------------------ live

    def set_source(self, spec: str) -> None:
        self.source.set_spec(spec)

    def start(self) -> bool:
        if self.worker is not None and self.worker.isRunning():
            return False
        spec = self.source.spec()
        try:
            options = self.source.options()
        except Exception as exc:
            self.message.setText(str(exc))
            return False
        self.worker = GrabWorker(self.catalogue, spec, Path.cwd(), options=options)
        self.worker.frame.connect(self._on_frame)
        self.worker.failed.connect(lambda m: self.message.setText(
            f"<span style='color:{theme.STATUS['fail']}'>{m}</span>"))
        self.worker.finished.connect(self._worker_done)
        self.worker.start()
        self.message.setText(f"live: {spec}")
        self._update_buttons()
        return True

    def is_idle(self) -> bool:
        return self.worker is None or self.worker.isFinished()

    def message_error(self, text: str) -> None:
        self.message.setText(f"<span style='color:{theme.STATUS['fail']}'>{text}</span>")

    def _worker_done(self) -> None:
        self.camera_panel.detach()
        self._update_buttons()
        self.idle.emit()

    def stop(self):
        if self.worker is not None:
            self.worker.stop()
            self.worker.wait(3000)
        self._update_buttons()

    def _on_frame(self, frame):
        if self.camera_panel.source is None and self.worker is not None and self.worker.source is not None:
            self.camera_panel.attach(self.worker.source)  # the camera is open once its first frame is here
        self.current = frame
        self.view.set_image(frame.image)
        self._since_auto += 1
        if self.auto.isChecked() and self._since_auto >= self.auto_n.value():
            self._since_auto = 0
            self.capture()
        self._update_buttons()
        self.frameShown.emit(frame)

    # --------------------------------------------------------------- capture

    def capture(self) -> Path | None:
        frame = self.current
        label = self.label.currentText().strip()
        if frame is None or frame.image is None:
            self.message.setText("no frame to capture: start a live source")
            return None
        if not self.folder.text().strip():
            self.message.setText("choose a dataset folder first")
            return None
        if not label or any(c in label for c in "/\\:") or label.startswith("."):
            self.message.setText("give a label (a folder name: no slashes)")
            return None
        stem = time.strftime("%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"
        try:
            path = save_frame(frame.image, self._split_dir() / label, stem)
        except (OSError, ValueError) as exc:
            self.message.setText(f"capture failed: {exc}")
            return None
        if self.label.findText(label) < 0:
            self.label.addItem(label)
        small, _ = thumbnail(to_uint8(frame.image), 120)
        it = QtWidgets.QListWidgetItem(QtGui.QIcon(QtGui.QPixmap.fromImage(
            to_qimage(small[..., ::-1] if small.ndim == 3 else small))), label)
        it.setToolTip(str(path))
        self.strip.insertItem(0, it)
        while self.strip.count() > 40:
            self.strip.takeItem(self.strip.count() - 1)
        self.message.setText(f"saved {path}")
        self.refresh_counts()
        self.captured.emit(str(path))
        return path

    def refresh_counts(self):
        root = Path(self.folder.text().strip() or ".")
        rows = []
        if self.folder.text().strip() and root.is_dir():
            splits = [d for d in ("train", "val", "test") if (root / d).is_dir()]
            for split, d in ([(s, root / s) for s in splits] or [("—", root)]):
                for c in sorted(p for p in d.iterdir() if p.is_dir()):
                    n = sum(1 for f in c.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
                    rows.append((split, c.name, n))
                    if self.label.findText(c.name) < 0:
                        self.label.addItem(c.name)
        self.counts.setRowCount(len(rows))
        for i, r in enumerate(rows):
            for j, v in enumerate(r):
                self.counts.setItem(i, j, QtWidgets.QTableWidgetItem(str(v)))

    def shutdown(self):
        self.stop()
