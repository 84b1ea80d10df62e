"""Charts drawn with QPainter: bars, histograms, line curves, ROC, confusion matrix.

They only draw numbers they are given (from the host, a trainer or a runtime).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets

from . import theme

SERIES = ["#3d8bfd", "#f0b429", "#35c46a", "#ef4b4b", "#c05cf0", "#38c6e8", "#ff8a3d", "#9aa4b5"]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 10000 or a < 0.01:
        return f"{v:.2g}"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


class Chart(QtWidgets.QWidget):
    """Axes, title and an empty-state message; subclasses draw in ``plot(p, rect)``."""

    def __init__(self, title: str = "", parent=None):
        super().__init__(parent)
        self.title = title
        self.empty_text = "no data"
        self.x_label = ""
        self.y_label = ""
        self.setMinimumSize(220, 150)

    def has_data(self) -> bool:
        return False

    def paintEvent(self, e):
        p = QtGui.QPainter(self)
        p.setRenderHint(QtGui.QPainter.Antialiasing)
        p.fillRect(self.rect(), QtGui.QColor(theme.BASE))
        p.setPen(QtGui.QColor(theme.BORDER))
        p.drawRect(self.rect().adjusted(0, 0, -1, -1))
        top = 8
        if self.title:
            f = p.font()
            f.setBold(True)
            p.setFont(f)
            p.setPen(QtGui.QColor(theme.TEXT))
            p.drawText(QtCore.QRect(10, 6, self.width() - 20, 18), QtCore.Qt.AlignLeft | QtCore.Qt.AlignVCenter,
                       self.title)
            f.setBold(False)
            p.setFont(f)
            top = 28
        if not self.has_data():
            p.setPen(QtGui.QColor(theme.MUTED))
            p.drawText(self.rect().adjusted(12, top, -12, 0), QtCore.Qt.AlignCenter | QtCore.Qt.TextWordWrap,
                       self.empty_text)
            return
        f = p.font()
        f.setPointSizeF(max(7.0, f.pointSizeF() - 1.5))
        p.setFont(f)
        left = 46 if self.y_label else 40
        rect = QtCore.QRectF(left, top + 4, self.width() - left - 12, self.height() - top - 4 - (34 if self.x_label else 24))
        self.plot(p, rect)
        p.setPen(QtGui.QColor(theme.MUTED))
        if self.x_label:
            p.drawText(QtCore.QRectF(rect.left(), self.height() - 16, rect.width(), 14), QtCore.Qt.AlignCenter,
                       self.x_label)
        if self.y_label:
            p.save()
            p.translate(10, rect.center().y())
            p.rotate(-90)
            p.drawText(QtCore.QRectF(-rect.height() / 2, -6, rect.height(), 14), QtCore.Qt.AlignCenter, self.y_label)
            p.restore()

    def plot(self, p: QtGui.QPainter, rect: QtCore.QRectF) -> None:  # pragma: no cover - abstract
        pass

    # helpers
    @staticmethod
    def grid(p, rect, xs: Sequence[float], ys: Sequence[float], xmap, ymap, xlab=True, ylab=True):
        p.setPen(QtGui.QPen(QtGui.QColor("#2a2f37"), 1))
        for y in ys:
            yy = ymap(y)
            p.drawLine(QtCore.QPointF(rect.left(), yy), QtCore.QPointF(rect.right(), yy))
        for x in xs:
            xx = xmap(x)
            p.drawLine(QtCore.QPointF(xx, rect.top()), QtCore.QPointF(xx, rect.bottom()))
        p.setPen(QtGui.QColor(theme.MUTED))
        if ylab:
            for y in ys:
                p.drawText(QtCore.QRectF(0, ymap(y) - 7, rect.left() - 4, 14), QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter,
                           fmt(y))
        if xlab:
            for x in xs:
                p.drawText(QtCore.QRectF(xmap(x) - 30, rect.bottom() + 2, 60, 14), QtCore.Qt.AlignCenter, fmt(x))
        p.setPen(QtGui.QColor(theme.BORDER))
        p.drawLine(rect.bottomLeft(), rect.bottomRight())
        p.drawLine(rect.bottomLeft(), rect.topLeft())


class BarChart(Chart):
    """Labelled bars (class counts); optional stacked second series (e.g. train / test)."""

    def __init__(self, title="", parent=None):
        super().__init__(title, parent)
        self.labels: list[str] = []
        self.series: list[tuple[str, list[float], str]] = []

    def set_data(self, labels: list[str], series: list[tuple[str, list[float]]]) -> None:
        self.labels = list(labels)
        self.series = [(name, list(vals), SERIES[i % len(SERIES)]) for i, (name, vals) in enumerate(series)]
        self.update()

    def has_data(self):
        return bool(self.labels) and bool(self.series)

    def plot(self, p, rect):
        totals = [sum(s[1][i] for s in self.series) for i in range(len(self.labels))]
        hi = max(totals + [1])
        ticks = nice_ticks(0, hi)
        top = max(ticks[-1] if ticks else hi, hi)
        ymap = lambda v: rect.bottom() - v / top * rect.height()  # noqa: E731
        self.grid(p, rect, [], ticks, lambda x: x, ymap)
        n = len(self.labels)
        slot = rect.width() / n
        bw = min(slot * 0.7, 60)
        for i, label in enumerate(self.labels):
            x = rect.left() + slot * i + (slot - bw) / 2
            base = 0.0
            for name, vals, color in self.series:
                v = vals[i]
                r = QtCore.QRectF(x, ymap(base + v), bw, ymap(base) - ymap(base + v))
                p.fillRect(r, QtGui.QColor(color))
                base += v
            p.setPen(QtGui.QColor(theme.TEXT))
            p.drawText(QtCore.QRectF(x - 10, ymap(base) - 15, bw + 20, 14), QtCore.Qt.AlignCenter, f"{base:g}")
            p.setPen(QtGui.QColor(theme.MUTED))
            fm = p.fontMetrics()
            p.drawText(QtCore.QRectF(rect.left() + slot * i, rect.bottom() + 2, slot, 14), QtCore.Qt.AlignCenter,
                       fm.elidedText(label, QtCore.Qt.ElideRight, int(slot) - 2))
        if len(self.series) > 1:
            self._legend(p, rect, [(n, c) for n, _, c in self.series])

    @staticmethod
    def _legend(p, rect, items):
        """Legend in the title row, right-aligned (never over the data)."""
        x = rect.right() - 2
        fm = p.fontMetrics()
        y = rect.top() - 23
        for name, color in reversed(items):
            w = fm.horizontalAdvance(name)
            x -= w
            p.setPen(QtGui.QColor(theme.TEXT))
            p.drawText(QtCore.QPointF(x, y + 10), name)
            x -= 14
            p.fillRect(QtCore.QRectF(x, y + 1, 10, 10), QtGui.QColor(color))
            x -= 12


class LineChart(Chart):
    """Curves over a shared x axis (loss / metric per epoch or step, ROC)."""

    def __init__(self, title="", parent=None):
        super().__init__(title, parent)
        self.curves: dict[str, list[tuple[float, float]]] = {}
        self.colors: dict[str, str] = {}
        self.x_range: tuple[float, float] | None = None
        self.y_range: tuple[float, float] | None = None
        self.diagonal = False
        self.square = False
        #: one highlighted (x, y) point, e.g. the operating point of a threshold on a ROC curve
        self.marker: tuple[float, float] | None = None

    def clear(self):
        self.curves.clear()
        self.colors.clear()
        self.update()

    def add_point(self, name: str, x: float, y: float) -> None:
        if name not in self.curves:
            self.curves[name] = []
            self.colors[name] = SERIES[len(self.colors) % len(SERIES)]
        self.curves[name].append((float(x), float(y)))
        self.update()

    def set_curve(self, name: str, xs, ys, color: str | None = None) -> None:
        self.curves[name] = [(float(x), float(y)) for x, y in zip(xs, ys)]
        self.colors[name] = color or self.colors.get(name) or SERIES[len(self.colors) % len(SERIES)]
        self.update()

    def has_data(self):
        return any(self.curves.values())

    def plot(self, p, rect):
        if self.square:
            side = min(rect.width(), rect.height())
            rect = QtCore.QRectF(rect.left(), rect.top(), side, side)
        pts = [pt for c in self.curves.values() for pt in c if math.isfinite(pt[1])]
        xs = [x for x, _ in pts] or [0.0]
        ys = [y for _, y in pts] or [0.0]
        x0, x1 = self.x_range or (min(xs), max(xs))
        y0, y1 = self.y_range or (min(ys), max(ys))
        if x1 <= x0:
            x1 = x0 + 1
        if y1 <= y0:
            y0, y1 = y0 - 0.5, y1 + 0.5
        if not self.y_range:
            pad = (y1 - y0) * 0.08
            y0, y1 = y0 - pad, y1 + pad
        xmap = lambda v: rect.left() + (v - x0) / (x1 - x0) * rect.width()  # noqa: E731
        ymap = lambda v: rect.bottom() - (v - y0) / (y1 - y0) * rect.height()  # noqa: E731
        self.grid(p, rect, nice_ticks(x0, x1, 5), nice_ticks(y0, y1, 4), xmap, ymap)
        if self.diagonal:
            p.setPen(QtGui.QPen(QtGui.QColor(theme.MUTED), 1, QtCore.Qt.DashLine))
            p.drawLine(QtCore.QPointF(xmap(x0), ymap(y0)), QtCore.QPointF(xmap(x1), ymap(y1)))
        p.save()
        p.setClipRect(rect.adjusted(-2, -2, 2, 2))
        for name, c in self.curves.items():
            pen = QtGui.QPen(QtGui.QColor(self.colors[name]), 2)
            p.setPen(pen)
            good = [(x, y) for x, y in c if math.isfinite(y)]
            if len(good) == 1:
                p.setBrush(QtGui.QColor(self.colors[name]))
                p.drawEllipse(QtCore.QPointF(xmap(good[0][0]), ymap(good[0][1])), 3, 3)
            else:
                p.drawPolyline(QtGui.QPolygonF([QtCore.QPointF(xmap(x), ymap(y)) for x, y in good]))
        if self.marker is not None and self.curves:
            p.setPen(QtGui.QPen(QtGui.QColor(theme.TEXT), 2))
            p.setBrush(QtGui.QColor(theme.STATUS["review"]))
            p.drawEllipse(QtCore.QPointF(xmap(self.marker[0]), ymap(self.marker[1])), 5, 5)
        p.restore()
        legend = [(f"{n}  {c[-1][1]:.4g}" if c and not self.diagonal else n, self.colors[n])
                  for n, c in self.curves.items()]
        BarChart._legend(p, rect, legend)


class HistogramChart(Chart):
    """Overlaid histograms of scores per group (good / defect), with a movable threshold line."""

    thresholdMoved = QtCore.pyqtSignal(float)

    def __init__(self, title="", parent=None, bins: int = 30):
        super().__init__(title, parent)
        self.groups: list[tuple[str, np.ndarray, str]] = []
        self.bins = bins
        self.threshold: float | None = None
        #: fixed x range (e.g. the threshold slider's), so that moving the threshold does not re-bin
        self.x_range: tuple[float, float] | None = None
        self.categorical: list[tuple[str, float]] | None = None

    def set_groups(self, groups: list[tuple[str, Sequence[float]]], colors: list[str] | None = None) -> None:
        colors = colors or SERIES
        self.groups = [(n, np.asarray(v, float), colors[i % len(colors)]) for i, (n, v) in enumerate(groups)]
        self.update()

    def set_threshold(self, t: float | None) -> None:
        self.threshold = t
        self.update()

    def has_data(self):
        return any(len(v) for _, v, _ in self.groups)

    def _range(self):
        if self.x_range is not None:
            return self.x_range
        allv = np.concatenate([v for _, v, _ in self.groups if len(v)])
        lo, hi = float(allv.min()), float(allv.max())
        if self.threshold is not None:
            lo, hi = min(lo, self.threshold), max(hi, self.threshold)
        if hi <= lo:
            hi = lo + 1.0
        pad = (hi - lo) * 0.03
        return lo - pad, hi + pad

    def plot(self, p, rect):
        lo, hi = self._range()
        edges = np.linspace(lo, hi, self.bins + 1)
        hists = [(n, np.histogram(v, edges)[0], c) for n, v, c in self.groups]
        top = max(int(h.max()) for _, h, _ in hists) or 1
        ticks = nice_ticks(0, top, 4)
        ytop = max(ticks[-1], top) if ticks else top
        xmap = lambda v: rect.left() + (v - lo) / (hi - lo) * rect.width()  # noqa: E731
        ymap = lambda v: rect.bottom() - v / ytop * rect.height()  # noqa: E731
        self.grid(p, rect, nice_ticks(lo, hi, 5), ticks, xmap, ymap)
        for n, h, c in hists:
            color = QtGui.QColor(c)
            color.setAlpha(150)
            for i, count in enumerate(h):
                if count:
                    p.fillRect(QtCore.QRectF(xmap(edges[i]) + 0.5, ymap(count), xmap(edges[i + 1]) - xmap(edges[i]) - 1,
                                             ymap(0) - ymap(count)), color)
        if self.threshold is not None:
            x = xmap(self.threshold)
            p.setPen(QtGui.QPen(QtGui.QColor(theme.TEXT), 2, QtCore.Qt.DashLine))
            p.drawLine(QtCore.QPointF(x, rect.top()), QtCore.QPointF(x, rect.bottom()))
            p.drawText(QtCore.QPointF(x + 4, rect.top() + 24), f"threshold {fmt(self.threshold)}")
        BarChart._legend(p, rect, [(f"{n} ({len(v)})", c) for n, v, c in self.groups])


class SizeChart(Chart):
    """Image sizes: a scatter of width × height, dot area ~ how many images share the size."""

    def __init__(self, title="", parent=None):
        super().__init__(title, parent)
        self.sizes: dict[tuple[int, int], int] = {}
        self.x_label = "width (px)"
        self.y_label = "height (px)"

    def set_sizes(self, sizes: dict[tuple[int, int], int]) -> None:
        self.sizes = dict(sizes)
        self.update()

    def has_data(self):
        return bool(self.sizes)

    def plot(self, p, rect):
        ws = [w for w, _ in self.sizes]
        hs = [h for _, h in self.sizes]
        hi = max(ws + hs) * 1.15
        ticks = nice_ticks(0, hi, 4)
        top = max(ticks[-1], hi)
        xmap = lambda v: rect.left() + v / top * rect.width()  # noqa: E731
        ymap = lambda v: rect.bottom() - v / top * rect.height()  # noqa: E731
        self.grid(p, rect, ticks, ticks, xmap, ymap)
        most = max(self.sizes.values())
        color = QtGui.QColor(theme.ACCENT)
        color.setAlpha(170)
        for (w, h), n in sorted(self.sizes.items(), key=lambda kv: -kv[1]):
            r = 4 + 14 * math.sqrt(n / most)
            p.setPen(QtGui.QPen(QtGui.QColor(theme.ACCENT), 1))
            p.setBrush(color)
            c = QtCore.QPointF(xmap(w), ymap(h))
            p.drawEllipse(c, r, r)
        p.setPen(QtGui.QColor(theme.TEXT))
        for (w, h), n in sorted(self.sizes.items(), key=lambda kv: -kv[1])[:4]:
            c = QtCore.QPointF(xmap(w), ymap(h))
            text = f"{w}×{h}  ({n})"
            r = 10 + 14 * math.sqrt(n / most)
            tw = p.fontMetrics().horizontalAdvance(text)
            dx = r if c.x() + r + tw < rect.right() + 8 else -(r + tw)
            p.drawText(c + QtCore.QPointF(dx, 4), text)


#: the confusion-matrix colour rule (the same as ``loupe eval``'s PNG): a diagonal cell is green at or above
#: this recall, amber from REVIEW_AT, red below; an off-diagonal cell is redder as its share grows (full red
#: at FULL_RED_AT), and blank when empty
GREEN_AT, REVIEW_AT, FULL_RED_AT = 0.90, 0.70, 0.30


def cell_colour(i: int, j: int, rate: float, count: float) -> tuple[str | None, float]:
    """The status colour of a confusion-matrix cell and its strength in [0, 1] (0: the empty background)."""
    if i == j:
        if count <= 0:
            return None, 0.0
        return ("pass" if rate >= GREEN_AT else "review" if rate >= REVIEW_AT else "fail"), 1.0
    if count <= 0:
        return None, 0.0
    return "fail", min(1.0, 0.25 + 0.75 * rate / FULL_RED_AT)


class ConfusionMatrix(QtWidgets.QWidget):
    """Rows = true class, columns = predicted, coloured by :func:`cell_colour`; a click on a cell emits
    ``cellClicked(true index, predicted index)`` (the trainer workspace opens the cell's images)."""

    cellClicked = QtCore.pyqtSignal(int, int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.classes: list[str] = []
        self.matrix = np.zeros((0, 0), int)
        self.setMinimumSize(260, 220)
        self.setMouseTracking(True)

    def set_matrix(self, classes: list[str], matrix) -> None:
        self.classes = [str(c) for c in classes]
        self.matrix = np.asarray(matrix, dtype=float)
        self.update()

    def _geometry(self) -> tuple[float, float, float, float]:
        """(label width, left, top, cell side) of the grid in widget coordinates."""
        fm = self.fontMetrics()
        n = max(len(self.classes), 1)
        label_w = min(max((fm.horizontalAdvance(c) for c in self.classes), default=0) + 12, 140)
        left, top = label_w + 22, 44
        side = max(min((self.width() - left - 10) / n, (self.height() - top - 10) / n), 8)
        return label_w, left, top, side

    def cell_rect(self, i: int, j: int) -> QtCore.QRectF:
        _, left, top, side = self._geometry()
        return QtCore.QRectF(left + side * j, top + side * i, side - 2, side - 2)

    def cell_at(self, pos: QtCore.QPointF) -> tuple[int, int] | None:
        n = len(self.classes)
        if n == 0 or self.matrix.shape != (n, n):
            return None
        _, left, top, side = self._geometry()
        j, i = int((pos.x() - left) // side), int((pos.y() - top) // side)
        return (i, j) if 0 <= i < n and 0 <= j < n else None

    def mousePressEvent(self, e):
        cell = self.cell_at(QtCore.QPointF(e.pos()))
        if cell is not None and e.button() == QtCore.Qt.LeftButton:
            self.cellClicked.emit(*cell)
        super().mousePressEvent(e)

    def mouseMoveEvent(self, e):
        cell = self.cell_at(QtCore.QPointF(e.pos()))
        self.setCursor(QtCore.Qt.PointingHandCursor if cell else QtCore.Qt.ArrowCursor)
        if cell:
            i, j = cell
            self.setToolTip(f"true {self.classes[i]}, predicted {self.classes[j]}: {int(self.matrix[i, j])} "
                            f"image(s) — click to open them")
        super().mouseMoveEvent(e)

    def paintEvent(self, e):
        p = QtGui.QPainter(self)
        p.setRenderHint(QtGui.QPainter.Antialiasing)
        p.fillRect(self.rect(), QtGui.QColor(theme.BASE))
        n = len(self.classes)
        if n == 0 or self.matrix.shape != (n, n):
            p.setPen(QtGui.QColor(theme.MUTED))
            p.drawText(self.rect(), QtCore.Qt.AlignCenter, "no confusion matrix yet")
            return
        fm = p.fontMetrics()
        label_w, left, top, side = self._geometry()
        p.setPen(QtGui.QColor(theme.MUTED))
        p.drawText(QtCore.QRectF(left, 2, side * n, 16), QtCore.Qt.AlignCenter,
                   f"predicted  ·  green: recall ≥ {GREEN_AT:.0%}  ·  click a cell for its images")
        p.save()
        p.translate(8, top + side * n / 2)
        p.rotate(-90)
        p.drawText(QtCore.QRectF(-side * n / 2, -6, side * n, 14), QtCore.Qt.AlignCenter, "true")
        p.restore()
        rows = self.matrix.sum(axis=1, keepdims=True)
        share = np.divide(self.matrix, rows, out=np.zeros_like(self.matrix), where=rows > 0)
        base = QtGui.QColor("#22262d")
        for i in range(n):
            p.setPen(QtGui.QColor(theme.TEXT))
            p.drawText(QtCore.QRectF(20, top + side * i, label_w - 4, side), QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter,
                       fm.elidedText(self.classes[i], QtCore.Qt.ElideRight, int(label_w) - 6))
            p.drawText(QtCore.QRectF(left + side * i, 20, side, 20), QtCore.Qt.AlignCenter,
                       fm.elidedText(self.classes[i], QtCore.Qt.ElideRight, int(side) - 2))
            for j in range(n):
                s = float(share[i, j])
                status, t = cell_colour(i, j, s, float(self.matrix[i, j]))
                c = QtGui.QColor(theme.STATUS[status]) if status else base
                mix = QtGui.QColor(int(base.red() + (c.red() - base.red()) * t),
                                   int(base.green() + (c.green() - base.green()) * t),
                                   int(base.blue() + (c.blue() - base.blue()) * t))
                r = self.cell_rect(i, j)
                p.fillRect(r, mix)
                p.setPen(QtGui.QColor("#0f1114") if t > 0.55 else QtGui.QColor(theme.TEXT))
                if side > 26:
                    p.drawText(r, QtCore.Qt.AlignCenter, f"{int(self.matrix[i, j])}" +
                               (f"\n{100 * s:.0f}%" if side > 48 and rows[i, 0] else ""))
