"""Camera settings while the live view runs (Astrocyte + Sapera's acquisition panel): exposure, gain and the
camera's other writable numbers, for any source that offers them (``camera_settings()`` / ``set_feature()``,
as the GenICam source does)."""
from __future__ import annotations

from PyQt5 import QtCore, QtWidgets


class CameraPanel(QtWidgets.QGroupBox):
    """One spin box per writable feature, exposure and gain first; a change is written to the camera at once."""

    changed = QtCore.pyqtSignal(str, object)   # feature, value the camera reports
    failed = QtCore.pyqtSignal(str)

    def __init__(self, parent=None):
        super().__init__("Camera settings", parent)
        self.form = QtWidgets.QFormLayout(self)
        self.source = None
        self.boxes: dict[str, QtWidgets.QDoubleSpinBox] = {}
        self.hint = QtWidgets.QLabel("Start the live view of a GenICam camera to adjust it here.")
        self.hint.setWordWrap(True)
        self.form.addRow(self.hint)

    def attach(self, source) -> None:
        """Show the settings of ``source`` (a live source with ``camera_settings``); hide for others."""
        self.detach()
        settings = source.camera_settings() if hasattr(source, "camera_settings") else []
        if not settings:
            return
        self.source = source
        self.hint.hide()
        for s in settings:
            box = QtWidgets.QDoubleSpinBox()
            box.setDecimals(0 if s["kind"] == "int" else 2)
            box.setRange(float(s["min"]), float(s["max"]))
            box.setValue(float(s["value"]))
            box.setKeyboardTracking(False)  # write when the operator has finished typing, not per digit
            box.valueChanged.connect(lambda v, name=s["name"], kind=s["kind"]: self._write(name, kind, v))
            self.boxes[s["name"]] = box
            self.form.addRow(s["name"], box)

    def detach(self) -> None:
        self.source = None
        for name in list(self.boxes):
            self.form.removeRow(self.boxes.pop(name))
        self.hint.show()

    def _write(self, name: str, kind: str, value: float) -> None:
        if self.source is None:
            return
        try:
            got = self.source.set_feature(name, int(round(value)) if kind == "int" else float(value))
        except Exception as exc:  # the camera refused it: say why, keep the live view running
            self.failed.emit(str(exc))
            return
        self.changed.emit(name, got)
