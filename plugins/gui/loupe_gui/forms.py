"""Parameter forms generated from pydantic models (``Params`` of tools, trainers, sources, optimisers).

No form is written by hand per tool: each field's annotation, default, bounds
(``ge``/``gt``/``le``/``lt``) and description give its editor and tooltip, and
the model itself validates the values (errors are shown under the field).
"""
from __future__ import annotations

import enum
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import BaseModel, ValidationError
from PyQt5 import QtCore, QtWidgets

from . import theme

_UNION = (typing.Union, getattr(types, "UnionType", typing.Union))


def _bounds(field) -> tuple[float | None, float | None, bool, bool]:
    lo = hi = None
    lo_open = hi_open = False
    for m in getattr(field, "metadata", []) or []:
        for attr, is_lo, open_ in (("ge", True, False), ("gt", True, True), ("le", False, False), ("lt", False, True)):
            v = getattr(m, attr, None)
            if v is not None:
                if is_lo:
                    lo, lo_open = v, open_
                else:
                    hi, hi_open = v, open_
    return lo, hi, lo_open, hi_open


def humanize(name: str) -> str:
    return name.replace("_", " ")


class FieldEditor(QtWidgets.QWidget):
    """One field's editor: ``value()`` / ``set_value()`` and a ``changed`` signal."""

    changed = QtCore.pyqtSignal()

    def __init__(self, getter: Callable[[], Any], setter: Callable[[Any], None], widget: QtWidgets.QWidget,
                 parent=None):
        super().__init__(parent)
        self._get, self._set, self.widget = getter, setter, widget
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(widget)

    def value(self) -> Any:
        return self._get()

    def set_value(self, v: Any) -> None:
        self._set(v)


def _text_value(text: str) -> Any:
    """A typed value from a line edit: YAML scalars / flow lists (``[1, 2]``), empty is None."""
    text = text.strip()
    if text == "":
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _text_of(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple, dict)):
        return yaml.safe_dump(list(v) if isinstance(v, tuple) else v, default_flow_style=True).strip()
    if isinstance(v, enum.Enum):
        return str(v.value)
    return str(v)


class FloatBox(QtWidgets.QDoubleSpinBox):
    """A float spin box that shows 0.5 rather than 0.5000 (4 decimals are kept for editing)."""

    def textFromValue(self, v: float) -> str:
        text = f"{v:.{self.decimals()}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text


def make_editor(name: str, field, annotation=None, default: Any = None) -> FieldEditor:
    """The editor for one pydantic field."""
    ann = field.annotation if annotation is None else annotation
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    nullable = False
    if origin in _UNION:
        non_none = [a for a in args if a is not type(None)]
        nullable = len(non_none) < len(args)
        if len(non_none) == 1:
            ann = non_none[0]
            origin, args = typing.get_origin(ann), typing.get_args(ann)
        else:
            return _choice_or_text(non_none, nullable)
    if nullable:
        inner = make_editor(name, field, ann)
        return _nullable(inner, default)
    if ann is bool:
        w = QtWidgets.QCheckBox()
        ed = FieldEditor(w.isChecked, lambda v: w.setChecked(bool(v)), w)
        w.toggled.connect(lambda *_: ed.changed.emit())
        return ed
    if origin is typing.Literal or (isinstance(ann, type) and issubclass(ann, enum.Enum)):
        items = list(args) if origin is typing.Literal else [m.value for m in ann]
        w = QtWidgets.QComboBox()
        for it in items:
            w.addItem(str(it), it)

        def set_combo(v, w=w):
            v = v.value if isinstance(v, enum.Enum) else v
            i = w.findData(v)
            w.setCurrentIndex(max(i, 0))

        ed = FieldEditor(lambda: w.currentData(), set_combo, w)
        w.currentIndexChanged.connect(lambda *_: ed.changed.emit())
        return ed
    if ann is int:
        lo, hi, lo_open, hi_open = _bounds(field)
        w = QtWidgets.QSpinBox()
        w.setRange(int(lo + (1 if lo_open else 0)) if lo is not None else -2_000_000_000,
                   int(hi - (1 if hi_open else 0)) if hi is not None else 2_000_000_000)
        w.setKeyboardTracking(False)
        w.setAccelerated(True)
        ed = FieldEditor(w.value, lambda v: w.setValue(int(v if v is not None else 0)), w)
        w.valueChanged.connect(lambda *_: ed.changed.emit())
        return ed
    if ann is float:
        lo, hi, lo_open, hi_open = _bounds(field)
        w = FloatBox()
        w.setDecimals(4)
        eps = 1e-4
        w.setRange(float(lo + (eps if lo_open else 0)) if lo is not None else -1e12,
                   float(hi - (eps if hi_open else 0)) if hi is not None else 1e12)
        d = field.get_default(call_default_factory=True) if default is None else default
        try:
            mag = abs(float(d)) if d not in (None, 0) else 1.0
            w.setSingleStep(10 ** math.floor(math.log10(mag)) / 10 if mag > 0 else 0.1)
        except (TypeError, ValueError):
            w.setSingleStep(0.1)
        w.setKeyboardTracking(False)
        ed = FieldEditor(w.value, lambda v: w.setValue(float(v if v is not None else 0.0)), w)
        w.valueChanged.connect(lambda *_: ed.changed.emit())
        return ed
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return _nested(ann)
    if ann is Path or (isinstance(ann, type) and issubclass(ann, Path)):
        return _path_editor()
    if ann is str:
        w = QtWidgets.QLineEdit()
        ed = FieldEditor(w.text, lambda v: w.setText("" if v is None else str(v)), w)
        w.editingFinished.connect(ed.changed.emit)
        return ed
    return _yaml_text()


def _yaml_text() -> FieldEditor:
    w = QtWidgets.QLineEdit()
    w.setPlaceholderText("YAML value, e.g. [3, 3]")
    ed = FieldEditor(lambda: _text_value(w.text()), lambda v: w.setText(_text_of(v)), w)
    w.editingFinished.connect(ed.changed.emit)
    return ed


def _choice_or_text(options: list, nullable: bool) -> FieldEditor:
    """A union such as ``int | Literal['otsu']``: an editable combo with the literal choices."""
    literals = [a for opt in options if typing.get_origin(opt) is typing.Literal for a in typing.get_args(opt)]
    w = QtWidgets.QComboBox()
    w.setEditable(True)
    if nullable:
        w.addItem("")
    for it in literals:
        w.addItem(str(it))
    ed = FieldEditor(lambda: _text_value(w.currentText()), lambda v: w.setEditText(_text_of(v)), w)
    w.lineEdit().editingFinished.connect(ed.changed.emit)
    w.activated.connect(lambda *_: ed.changed.emit())
    return ed


def _nullable(inner: FieldEditor, default: Any) -> FieldEditor:
    box = QtWidgets.QWidget()
    lay = QtWidgets.QHBoxLayout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    check = QtWidgets.QCheckBox()
    check.setToolTip("set a value (unchecked: none / automatic)")
    lay.addWidget(check)
    lay.addWidget(inner, 1)

    def get():
        return inner.value() if check.isChecked() else None

    def set_(v):
        check.setChecked(v is not None)
        inner.setEnabled(v is not None)
        if v is not None:
            inner.set_value(v)

    ed = FieldEditor(get, set_, box)

    def toggled(on):
        inner.setEnabled(on)
        ed.changed.emit()

    check.toggled.connect(toggled)
    inner.changed.connect(lambda: check.isChecked() and ed.changed.emit())
    inner.setEnabled(False)
    return ed


def _path_editor() -> FieldEditor:
    box = QtWidgets.QWidget()
    lay = QtWidgets.QHBoxLayout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    line = QtWidgets.QLineEdit()
    btn = QtWidgets.QToolButton()
    btn.setText("…")
    lay.addWidget(line, 1)
    lay.addWidget(btn)
    ed = FieldEditor(lambda: line.text() or None, lambda v: line.setText("" if v is None else str(v)), box)
    line.editingFinished.connect(ed.changed.emit)

    def browse():
        path = QtWidgets.QFileDialog.getExistingDirectory(box, "Choose a folder", line.text() or ".")
        if path:
            line.setText(path)
            ed.changed.emit()

    btn.clicked.connect(browse)
    return ed


def _nested(model: type[BaseModel]) -> FieldEditor:
    """A sub-form; for a ``ModelRef`` (path + sha256) picking the path fills in its sha256 from the host."""
    form = ParamForm(model, compact=True)
    ed = FieldEditor(form.values, lambda v: form.set_values(v.model_dump() if isinstance(v, BaseModel) else (v or {})),
                     form)
    form.changed.connect(lambda *_: ed.changed.emit())
    if set(model.model_fields) >= {"path", "sha256"}:
        btn = QtWidgets.QPushButton("Choose model…")
        form.layout().addRow("", btn)

        def choose():
            path = QtWidgets.QFileDialog.getExistingDirectory(form, "Choose a model bundle")
            if path:
                from host import model_sha256

                try:
                    digest = model_sha256(path)
                except Exception as exc:  # a user mistake: show it, do not crash
                    form.set_errors({"path": str(exc)})
                    return
                form.set_values({"path": path, "sha256": digest})
                ed.changed.emit()

        btn.clicked.connect(choose)
    return ed


class ParamForm(QtWidgets.QWidget):
    """A form for every field of a pydantic model.

    ``values()`` returns the field values as edited (a dict); ``validate()``
    runs the model and shows each error under its field.
    """

    changed = QtCore.pyqtSignal(dict)

    def __init__(self, model: type[BaseModel], values: dict[str, Any] | None = None, compact: bool = False,
                 skip: tuple[str, ...] = (), parent=None):
        super().__init__(parent)
        self.model = model
        self.editors: dict[str, FieldEditor] = {}
        self.errors: dict[str, QtWidgets.QLabel] = {}
        self._loading = False
        lay = QtWidgets.QFormLayout(self)
        lay.setContentsMargins(0, 0, 0, 0) if compact else lay.setContentsMargins(2, 2, 2, 2)
        lay.setLabelAlignment(QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter)
        lay.setFieldGrowthPolicy(QtWidgets.QFormLayout.AllNonFixedFieldsGrow)
        lay.setVerticalSpacing(4)
        fields = {k: f for k, f in model.model_fields.items() if k not in skip}
        if not fields:
            lab = QtWidgets.QLabel("no parameters")
            lab.setObjectName("muted")
            lay.addRow(lab)
        for name, field in fields.items():
            default = field.get_default(call_default_factory=True)
            ed = make_editor(name, field, default=default)
            tip = field.description or ""
            label = QtWidgets.QLabel(humanize(name))
            label.setToolTip(f"{name}: {tip}" if tip else name)
            ed.setToolTip(tip)
            err = QtWidgets.QLabel()
            err.setObjectName("error")
            err.setWordWrap(True)
            err.hide()
            col = QtWidgets.QWidget()
            cl = QtWidgets.QVBoxLayout(col)
            cl.setContentsMargins(0, 0, 0, 0)
            cl.setSpacing(1)
            cl.addWidget(ed)
            cl.addWidget(err)
            lay.addRow(label, col)
            self.editors[name] = ed
            self.errors[name] = err
            ed.changed.connect(self._emit)
            self._loading = True
            try:
                ed.set_value(default)
            except Exception:
                pass
            finally:
                self._loading = False
        if values:
            self.set_values(values)

    def _emit(self):
        if not self._loading:
            self.changed.emit(self.values())

    def values(self) -> dict[str, Any]:
        return {k: ed.value() for k, ed in self.editors.items()}

    def set_values(self, values: dict[str, Any]) -> None:
        """Show ``values``; one its editor cannot hold (a typo in a YAML file) is reported under the field."""
        self._loading = True
        bad = {}
        try:
            for k, v in (values or {}).items():
                if k in self.editors:
                    try:
                        self.editors[k].set_value(v)
                    except (TypeError, ValueError, OverflowError):
                        bad[k] = f"{v!r} is not a valid value here; showing the default"
        finally:
            self._loading = False
        if bad:
            self.set_errors(bad)

    def set_errors(self, errors: dict[str, str]) -> None:
        """Show ``errors`` (field -> message) under their fields; clear the others."""
        for k, lab in self.errors.items():
            msg = errors.get(k)
            lab.setText(msg or "")
            lab.setVisible(bool(msg))
            w = self.editors[k].widget
            w.setProperty("invalid", bool(msg))
            theme.repolish(w)
        for k, ed in self.editors.items():
            if isinstance(ed.widget, ParamForm):
                ed.widget.set_errors({key.split(".", 1)[1]: m for key, m in errors.items()
                                      if key.startswith(k + ".")})

    def validate(self) -> BaseModel | None:
        """The validated model, or None with the errors shown inline."""
        try:
            m = self.model.model_validate({k: v for k, v in self.values().items()})
        except ValidationError as exc:
            errs: dict[str, str] = {}
            for e in exc.errors():
                loc = [str(x) for x in e["loc"]]
                if loc:
                    errs.setdefault(loc[0], e["msg"])
                    if len(loc) > 1:
                        errs.setdefault(".".join(loc[:2]), e["msg"])
            self.set_errors(errs)
            return None
        self.set_errors({})
        return m
