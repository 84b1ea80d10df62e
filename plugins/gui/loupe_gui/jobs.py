"""Background jobs: a QThread that runs one host call, and a ``host.Progress`` that emits Qt signals.

Long work (training, evaluation, optimisation, dataset analysis, runs) never
runs on the GUI thread. ``GuiProgress.cancel()`` makes the job's next
``Progress.update`` raise ``host.Cancelled``.
"""
from __future__ import annotations

import traceback
from typing import Any, Callable

from PyQt5 import QtCore

from host import Cancelled, LoupeError, Progress


class ProgressSignals(QtCore.QObject):
    updated = QtCore.pyqtSignal(str, int, int, dict, bool)  # stage, done, total, metrics, part of training
    logged = QtCore.pyqtSignal(str)


class GuiProgress(Progress):
    """Forwards ``update``/``log`` from the worker thread to the GUI thread as signals."""

    def __init__(self) -> None:
        super().__init__()
        self.signals = ProgressSignals()
        #: False while the job evaluates or checks a model: the live training curves skip those updates
        #: (set on the worker thread; it travels with each signal, so no update is misattributed)
        self.training = True

    def on_update(self, stage: str, done: int, total: int, metrics: dict[str, float]) -> None:
        clean = {}
        for k, v in (metrics or {}).items():
            try:
                clean[k] = float(v)
            except (TypeError, ValueError):
                pass
        self.signals.updated.emit(str(stage), int(done), int(total or 0), clean, bool(self.training))

    def log(self, message: str) -> None:
        self.signals.logged.emit(str(message))


class Job(QtCore.QThread):
    """Runs ``fn(*args, **kwargs)`` in a worker thread.

    Emits ``succeeded(result)``, ``failed(message)`` (a user error keeps its
    own message; anything else gets its traceback logged) or ``cancelled()``.
    """

    succeeded = QtCore.pyqtSignal(object)
    failed = QtCore.pyqtSignal(str)
    cancelled = QtCore.pyqtSignal()

    def __init__(self, fn: Callable[..., Any], *args, parent=None, **kwargs):
        super().__init__(parent)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result: Any = None
        self.error: str | None = None
        self.was_cancelled = False

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args, **self.kwargs)
        except Cancelled:
            self.was_cancelled = True
            self.cancelled.emit()
            return
        except LoupeError as exc:
            self.error = str(exc)
        except Exception as exc:  # shown to the user, with the traceback in the log
            self.error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
        if self.error is not None:
            self.failed.emit(self.error)
        else:
            self.succeeded.emit(self.result)
