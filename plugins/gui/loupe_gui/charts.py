"""The desktop app's charts: matplotlib in Qt (``FigureCanvasQTAgg``), drawn by the host's chart helpers.

Every chart Loupe draws (the ``loupe eval`` and ``loupe dataset`` PNGs, these widgets) goes through
``host.charts``: the same series and verdict colours, the same confusion-matrix rule
(``host.confusion_style``), and legends under the axes, outside them, so that at any width they cover
neither a title nor the data. Here only the palette differs (the app's dark theme).

The widgets keep their numbers (``curves``, ``groups``, ``labels`` / ``series``, ``sizes``, ``matrix``) and
redraw from them: a change marks the chart dirty and schedules a repaint; the figure is rebuilt once, at
the next paint (so a burst of training points costs one drawing), and again when the widget is resized
(the legend's columns follow the width).
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_qt5agg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from PyQt5 import QtCore, QtWidgets

from host import CONFUSION_PASS_AT, VERDICT_COLOURS, charts as hc

from . import theme

SERIES = hc.SERIES
PALETTE = hc.Palette(background=theme.BASE, text=theme.TEXT, muted=theme.MUTED, grid="#2f343d", cell="#22262d",
                     on_colour="#0f1114")
FONT = 8.5  # points: the app's 10 pt widgets, a little smaller in charts


class Chart(FigureCanvasQTAgg):
    """A titled matplotlib chart in a Qt widget, with an empty-state message; subclasses draw in
    ``plot(ax)`` and say whether they have data in ``has_data()``."""

    def __init__(self, title: str = "", parent=None):
        fig = Figure(dpi=96, layout="constrained")
        super().__init__(fig)
        if parent is not None:
            self.setParent(parent)
        self.title = title
        self.empty_text = "no data"
        self.x_label = ""
        self.y_label = ""
        self._dirty = True
        self._last_draw = 0.0
        self._throttle = QtCore.QTimer(self)
        self._throttle.setSingleShot(True)
        self._throttle.timeout.connect(self.update)
        self.setMinimumSize(220, 150)
        self.setSizePolicy(QtWidgets.QSizePolicy.Expanding, QtWidgets.QSizePolicy.Expanding)

    def has_data(self) -> bool:
        return False

    def plot(self, ax) -> None:  # pragma: no cover - abstract
        pass

    legend = True
    grid = "both"

    #: at most one drawing per this many ms while numbers keep coming (live training curves): drawing holds
    #: the GIL, and the trainer runs in a thread of the same process
    min_interval_ms = 400

    def refresh(self) -> None:
        """Redraw from the chart's numbers at the next paint (throttled to ``min_interval_ms``)."""
        self._dirty = True
        if self._throttle.isActive():
            return
        since = (time.monotonic() - self._last_draw) * 1e3
        if since >= self.min_interval_ms:
            self.update()
        else:
            self._throttle.start(int(self.min_interval_ms - since) + 1)

    def rebuild(self) -> None:
        """Build the figure again from the chart's numbers (called at paint time when dirty)."""
        self._dirty = False
        self._last_draw = time.monotonic()
        fig = self.figure
        fig.clear()
        fig.set_facecolor(PALETTE.background)
        if not self.has_data():
            hc.empty(fig, self.empty_text, PALETTE, self.title, FONT)
            return
        ax = fig.add_subplot()
        self.plot(ax)
        hc.style(fig, ax, PALETTE, self.title, self.x_label, self.y_label, FONT, grid=self.grid)
        if self.legend:
            hc.legend_below(fig, ax, PALETTE, FONT - 0.5)
        self.after_plot(ax)

    def after_plot(self, ax) -> None:
        pass

    def ensure_drawn(self) -> None:
        """Lay out and draw now if the numbers or the size changed since the last drawing (for coordinates of
        what is drawn: a cell's rectangle)."""
        if self._dirty:
            self.rebuild()
            self.draw()

    def paintEvent(self, e):
        if self._dirty:
            self.rebuild()
            self.draw()  # rendered now: the base class paints the buffer
        super().paintEvent(e)

    def resizeEvent(self, e):
        super().resizeEvent(e)
        self._dirty = True  # legend columns and title wrapping follow the width


class BarChart(Chart):
    """Labelled bars (class counts); stacked series (e.g. train / test), each bar's total above it."""

    grid = "y"

    def __init__(self, title="", parent=None):
        super().__init__(title, parent)
        self.labels: list[str] = []
        self.series: list[tuple[str, list[float], str]] = []

    def set_data(self, labels: list[str], series: list[tuple[str, list[float]]]) -> None:
        self.labels = list(labels)
        self.series = [(name, list(vals), SERIES[i % len(SERIES)]) for i, (name, vals) in enumerate(series)]
        self.refresh()

    def has_data(self):
        return bool(self.labels) and bool(self.series)

    def plot(self, ax):
        hc.draw_bars(ax, self.labels, [(n, v) for n, v, _ in self.series], [c for *_, c in self.series], PALETTE,
                     FONT - 1)
        self.legend = len(self.series) > 1


class LineChart(Chart):
    """Curves over a shared x axis (loss / metric per epoch or step), or a ROC (``roc = True``: the chance
    diagonal, [0, 1] axes and the ``marker``, the threshold's operating point)."""

    def __init__(self, title="", parent=None):
        super().__init__(title, parent)
        self.curves: dict[str, list[tuple[float, float]]] = {}
        self.colors: dict[str, str] = {}
        self.roc = False
        #: legend labels end with each curve's last value (loss / metric curves), or not (precision-recall)
        self.last_value = True
        #: both axes span [0, 1] (precision-recall)
        self.unit_box = False
        #: one highlighted (false positive rate, true positive rate): the operating point of the threshold
        self.marker: tuple[float, float] | None = None

    def clear(self):
        self.curves.clear()
        self.colors.clear()
        self.refresh()

    def add_point(self, name: str, x: float, y: float) -> None:
        if name not in self.curves:
            self.curves[name] = []
            self.colors[name] = SERIES[len(self.colors) % len(SERIES)]
        self.curves[name].append((float(x), float(y)))
        self.refresh()

    def set_curve(self, name: str, xs, ys, color: str | None = None) -> None:
        self.curves[name] = [(float(x), float(y)) for x, y in zip(xs, ys)]
        self.colors[name] = color or self.colors.get(name) or SERIES[len(self.colors) % len(SERIES)]
        self.refresh()

    def set_marker(self, point: tuple[float, float] | None) -> None:
        self.marker = point
        self.refresh()

    def has_data(self):
        return any(self.curves.values())

    def plot(self, ax):
        if self.roc:
            name, pts = next((n, c) for n, c in self.curves.items() if c)
            auc = float(name.split()[-1]) if name.startswith("AUROC") else float("nan")
            fpr, tpr = zip(*pts)
            hc.draw_roc(ax, fpr, tpr, auc, self.marker, PALETTE)
            ax.set_aspect("equal", adjustable="box")
            return
        hc.draw_lines(ax, {n: tuple(zip(*c)) for n, c in self.curves.items() if c}, self.colors, self.last_value)
        if self.unit_box:
            ax.set_xlim(0, 1.02)
            ax.set_ylim(0, 1.02)


class HistogramChart(Chart):
    """Overlaid histograms of scores per group (good / defect) with the threshold line."""

    grid = "y"

    def __init__(self, title="", parent=None, bins: int = 30):
        super().__init__(title, parent)
        self.groups: list[tuple[str, np.ndarray, str]] = []
        self.bins = bins
        self.threshold: float | None = None
        #: fixed x range (e.g. the threshold slider's), so that moving the threshold does not re-bin
        self.x_range: tuple[float, float] | None = None

    def set_groups(self, groups: list[tuple[str, Sequence[float]]], colors: list[str] | None = None) -> None:
        colors = colors or [VERDICT_COLOURS["pass"], VERDICT_COLOURS["fail"]]
        self.groups = [(n, np.asarray(v, float), colors[i % len(colors)]) for i, (n, v) in enumerate(groups)]
        self.refresh()

    def set_threshold(self, t: float | None) -> None:
        self.threshold = t
        self.refresh()

    def has_data(self):
        return any(len(v) for _, v, _ in self.groups)

    def plot(self, ax):
        hc.draw_score_histogram(ax, [(n, v) for n, v, _ in self.groups], self.threshold, self.x_range, self.bins,
                                [c for *_, c in self.groups], PALETTE)
        ax.set_ylabel("images", color=PALETTE.muted, fontsize=FONT)


class SizeChart(Chart):
    """Image sizes: a scatter of width x height, dot area ~ how many images share the size."""

    legend = False

    def __init__(self, title="", parent=None):
        super().__init__(title, parent)
        self.sizes: dict[tuple[int, int], int] = {}
        self.x_label = "width (px)"
        self.y_label = "height (px)"

    def set_sizes(self, sizes: dict[tuple[int, int], int]) -> None:
        self.sizes = dict(sizes)
        self.refresh()

    def has_data(self):
        return bool(self.sizes)

    def plot(self, ax):
        hc.draw_sizes(ax, self.sizes, PALETTE, fontsize=FONT - 1)


class ConfusionMatrix(Chart):
    """Rows = true class, columns = predicted, coloured by ``host.confusion_style`` (as ``loupe eval``'s PNG);
    a click on a cell emits ``cellClicked(true index, predicted index)`` (the trainer workspace opens the
    cell's images)."""

    cellClicked = QtCore.pyqtSignal(int, int)
    legend = False
    grid = None

    def __init__(self, parent=None):
        super().__init__(f"Confusion matrix · green: recall ≥ {CONFUSION_PASS_AT:.0%} · click a cell for its "
                         f"images", parent)
        self.classes: list[str] = []
        self.matrix = np.zeros((0, 0), float)
        self.empty_text = "no confusion matrix yet"
        self.setMinimumSize(260, 220)
        self._ax = None
        self.mpl_connect("button_press_event", self._on_press)
        self.mpl_connect("motion_notify_event", self._on_move)

    def set_matrix(self, classes: list[str], matrix) -> None:
        self.classes = [str(c) for c in classes]
        self.matrix = np.asarray(matrix, dtype=float)
        self.refresh()

    def has_data(self):
        n = len(self.classes)
        return n > 0 and self.matrix.shape == (n, n)

    def plot(self, ax):
        n = len(self.classes)
        hc.draw_confusion(ax, self.matrix, self.classes, PALETTE, fontsize=FONT if n <= 12 else 7,
                          show_rate=n <= 8)

    def after_plot(self, ax):
        self._ax = ax

    def rebuild(self):
        self._ax = None
        super().rebuild()

    def _cell(self, x: float | None, y: float | None) -> tuple[int, int] | None:
        if x is None or y is None or not self.has_data():
            return None
        j, i = int(round(x)), int(round(y))
        n = len(self.classes)
        return (i, j) if 0 <= i < n and 0 <= j < n else None

    def cell_at(self, pos: QtCore.QPointF) -> tuple[int, int] | None:
        """The (true, predicted) cell under a point in widget coordinates, or None."""
        self.ensure_drawn()
        if self._ax is None:
            return None
        ratio = self.devicePixelRatioF()
        disp = (pos.x() * ratio, (self.height() - pos.y()) * ratio)
        if not self._ax.get_window_extent().contains(*disp):
            return None
        x, y = self._ax.transData.inverted().transform(disp)
        return self._cell(x, y)

    def cell_rect(self, i: int, j: int) -> QtCore.QRectF:
        """Cell (i, j)'s rectangle in widget coordinates (as drawn now)."""
        self.ensure_drawn()
        if self._ax is None:
            return QtCore.QRectF()
        ratio = self.devicePixelRatioF()
        (x0, y0), (x1, y1) = self._ax.transData.transform([(j - 0.5, i - 0.5), (j + 0.5, i + 0.5)])
        h = self.height()
        left, right = sorted((x0 / ratio, x1 / ratio))
        top, bottom = sorted((h - y0 / ratio, h - y1 / ratio))
        return QtCore.QRectF(left, top, right - left, bottom - top)

    def _on_press(self, event) -> None:
        if event.inaxes is not self._ax or event.button != 1:
            return
        cell = self._cell(event.xdata, event.ydata)
        if cell is not None:
            self.cellClicked.emit(*cell)

    def _on_move(self, event) -> None:
        cell = self._cell(event.xdata, event.ydata) if event.inaxes is self._ax else None
        self.setCursor(QtCore.Qt.PointingHandCursor if cell else QtCore.Qt.ArrowCursor)
        if cell:
            i, j = cell
            self.setToolTip(f"true {self.classes[i]}, predicted {self.classes[j]}: {int(self.matrix[i, j])} "
                            f"image(s) — click to open them")
        else:
            self.setToolTip("")
