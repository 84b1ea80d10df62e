"""An image view with zoom, pan, ROI drawing, overlays (``host.Shape``) and heatmaps."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets

from host import read_image  # noqa: F401 (the host's one image reader)
from host import colormap, to_uint8

from . import theme


def to_qimage(image: np.ndarray) -> QtGui.QImage:
    """Any image the tools use (BGR or gray, 8/16-bit, float) as a QImage (owns its pixels)."""
    a = to_uint8(image)  # gray or RGB
    h, w = a.shape[:2]
    if a.ndim == 2:
        q = QtGui.QImage(a.data, w, h, a.strides[0], QtGui.QImage.Format_Grayscale8)
    else:
        q = QtGui.QImage(a.data, w, h, a.strides[0], QtGui.QImage.Format_RGB888)
    return q.copy()


def heatmap_qimage(heat: np.ndarray, alpha: float = 0.5) -> QtGui.QImage:
    """A [0, 1] float map as a translucent colour QImage (stretched by the painter)."""
    rgb = colormap(np.asarray(heat, dtype=np.float32))
    h, w = rgb.shape[:2]
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[..., :3] = rgb
    v = np.clip(np.nan_to_num(np.asarray(heat, np.float32)), 0, 1)
    rgba[..., 3] = (alpha * 255 * np.clip(v * 1.5, 0.15, 1.0)).astype(np.uint8)
    rgba = np.ascontiguousarray(rgba)
    return QtGui.QImage(rgba.data, w, h, rgba.strides[0], QtGui.QImage.Format_RGBA8888).copy()


class ImageView(QtWidgets.QWidget):
    """Shows one image with overlays.

    Mouse: wheel zooms around the cursor, the middle or right button (or the left
    button outside ROI mode) pans, double-click fits. In ROI mode the left
    button draws a rectangle and ``roiDrawn`` gives it as (x, y, w, h) in image
    pixels.
    """

    roiDrawn = QtCore.pyqtSignal(tuple)
    hovered = QtCore.pyqtSignal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setMinimumSize(240, 180)
        self.setSizePolicy(QtWidgets.QSizePolicy.Expanding, QtWidgets.QSizePolicy.Expanding)
        self._array: np.ndarray | None = None
        self._qimage: QtGui.QImage | None = None
        self._overlays: list[Any] = []
        self._heatmaps: list[tuple[QtGui.QImage, QtCore.QRectF]] = []
        self._rois: list[tuple[tuple[int, int, int, int], str, bool]] = []
        self._scale = 1.0
        self._offset = QtCore.QPointF(0, 0)
        self._fit = True
        self._pan_from: QtCore.QPointF | None = None
        self._roi_mode = False
        self._drag_from: QtCore.QPointF | None = None
        self._drag_to: QtCore.QPointF | None = None
        self.show_overlays = True
        self.show_heatmaps = True
        self.placeholder = "Open an image (File ▸ Open image) or a recipe with a folder source"
        self.banner: tuple[str, str] | None = None  # (text, status) drawn top-left

    # ---------------------------------------------------------------- data

    @property
    def image(self) -> np.ndarray | None:
        return self._array

    def set_image(self, image: np.ndarray | None, keep_view: bool = True) -> None:
        old = None if self._qimage is None else self._qimage.size()
        self._array = image
        self._qimage = None if image is None else to_qimage(image)
        if not keep_view or old is None or self._qimage is None or old != self._qimage.size():
            self._fit = True
        self.update()

    def set_overlays(self, shapes: list[Any]) -> None:
        self._overlays = list(shapes)
        self.update()

    def set_heatmaps(self, maps: list[tuple[np.ndarray, tuple[int, int, int, int]]]) -> None:
        """Heatmaps in [0, 1], each stretched over (x, y, w, h) of the image."""
        self._heatmaps = [(heatmap_qimage(h), QtCore.QRectF(*r)) for h, r in maps]
        self.update()

    def set_rois(self, rois: list[tuple[tuple[int, int, int, int], str, bool]]) -> None:
        """Step ROIs as (rect, label, selected); drawn dashed."""
        self._rois = list(rois)
        self.update()

    def set_roi_mode(self, on: bool) -> None:
        self._roi_mode = on
        self.setCursor(QtCore.Qt.CrossCursor if on else QtCore.Qt.ArrowCursor)

    @property
    def overlays(self) -> list[Any]:
        return list(self._overlays)

    # ------------------------------------------------------------ geometry

    def _fit_view(self) -> None:
        if self._qimage is None:
            return
        iw, ih = self._qimage.width(), self._qimage.height()
        s = min((self.width() - 8) / max(iw, 1), (self.height() - 8) / max(ih, 1))
        self._scale = max(s, 1e-3)
        self._offset = QtCore.QPointF((self.width() - iw * self._scale) / 2, (self.height() - ih * self._scale) / 2)

    def fit(self) -> None:
        self._fit = True
        self.update()

    def zoom(self, factor: float, anchor: QtCore.QPointF | None = None) -> None:
        if self._qimage is None:
            return
        if self._fit:
            self._fit_view()
        self._fit = False
        anchor = anchor or QtCore.QPointF(self.width() / 2, self.height() / 2)
        img_pt = self.to_image(anchor)
        self._scale = float(np.clip(self._scale * factor, 0.02, 64.0))
        self._offset = anchor - QtCore.QPointF(img_pt.x() * self._scale, img_pt.y() * self._scale)
        self.update()

    @property
    def scale(self) -> float:
        if self._fit:
            self._fit_view()
        return self._scale

    def to_image(self, p: QtCore.QPointF) -> QtCore.QPointF:
        return QtCore.QPointF((p.x() - self._offset.x()) / self._scale, (p.y() - self._offset.y()) / self._scale)

    def to_widget(self, x: float, y: float) -> QtCore.QPointF:
        return QtCore.QPointF(self._offset.x() + x * self._scale, self._offset.y() + y * self._scale)

    # -------------------------------------------------------------- events

    def resizeEvent(self, e):
        super().resizeEvent(e)
        if self._fit:
            self.update()

    def wheelEvent(self, e):
        steps = e.angleDelta().y() / 120.0
        self.zoom(1.25 ** steps, QtCore.QPointF(e.pos()))

    def mouseDoubleClickEvent(self, e):
        self.fit()

    def mousePressEvent(self, e):
        pos = QtCore.QPointF(e.pos())
        if e.button() == QtCore.Qt.LeftButton and self._roi_mode and self._qimage is not None:
            self._drag_from = self._drag_to = self._clamp(self.to_image(pos))
        elif e.button() in (QtCore.Qt.MiddleButton, QtCore.Qt.RightButton, QtCore.Qt.LeftButton):
            if self._fit:
                self._fit_view()
                self._fit = False
            self._pan_from = pos
            self.setCursor(QtCore.Qt.ClosedHandCursor)

    def mouseMoveEvent(self, e):
        pos = QtCore.QPointF(e.pos())
        if self._drag_from is not None:
            self._drag_to = self._clamp(self.to_image(pos))
            self.update()
        elif self._pan_from is not None:
            self._offset += pos - self._pan_from
            self._pan_from = pos
            self.update()
        if self._array is not None and self._qimage is not None:
            p = self.to_image(pos)
            x, y = int(math.floor(p.x())), int(math.floor(p.y()))
            if 0 <= x < self._array.shape[1] and 0 <= y < self._array.shape[0]:
                v = self._array[y, x]
                val = ", ".join(str(int(c)) for c in np.atleast_1d(v)[::-1]) if np.ndim(v) else str(v)
                self.hovered.emit(f"x {x}  y {y}  {'RGB' if np.ndim(v) else 'value'} {val}  zoom {self.scale:.2f}×")

    def mouseReleaseEvent(self, e):
        if self._drag_from is not None:
            a, b = self._drag_from, self._drag_to or self._drag_from
            self._drag_from = self._drag_to = None
            x0, y0 = int(round(min(a.x(), b.x()))), int(round(min(a.y(), b.y())))
            x1, y1 = int(round(max(a.x(), b.x()))), int(round(max(a.y(), b.y())))
            self.update()
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                self.roiDrawn.emit((x0, y0, x1 - x0, y1 - y0))
        if self._pan_from is not None:
            self._pan_from = None
            self.setCursor(QtCore.Qt.CrossCursor if self._roi_mode else QtCore.Qt.ArrowCursor)

    def _clamp(self, p: QtCore.QPointF) -> QtCore.QPointF:
        w, h = self._qimage.width(), self._qimage.height()
        return QtCore.QPointF(min(max(p.x(), 0), w), min(max(p.y(), 0), h))

    # --------------------------------------------------------------- paint

    def paintEvent(self, e):
        p = QtGui.QPainter(self)
        p.fillRect(self.rect(), QtGui.QColor(theme.BASE))
        if self._qimage is None:
            p.setPen(QtGui.QColor(theme.MUTED))
            p.drawText(self.rect(), QtCore.Qt.AlignCenter | QtCore.Qt.TextWordWrap, self.placeholder)
            return
        if self._fit:
            self._fit_view()
        p.save()
        p.translate(self._offset)
        p.scale(self._scale, self._scale)
        p.setRenderHint(QtGui.QPainter.SmoothPixmapTransform, self._scale < 1.0)
        p.drawImage(0, 0, self._qimage)
        if self.show_heatmaps:
            p.setRenderHint(QtGui.QPainter.SmoothPixmapTransform, True)
            for img, rect in self._heatmaps:
                p.drawImage(rect, img)
        p.restore()
        p.setRenderHint(QtGui.QPainter.Antialiasing, True)
        for rect, label, selected in self._rois:
            self._draw_roi(p, rect, label, selected)
        if self.show_overlays:
            for s in self._overlays:
                paint_shape(p, s, self.to_widget, self._scale)
        if self._drag_from is not None and self._drag_to is not None:
            pen = QtGui.QPen(QtGui.QColor(theme.ACCENT), 1.5, QtCore.Qt.DashLine)
            p.setPen(pen)
            p.setBrush(QtGui.QColor(61, 139, 253, 40))
            p.drawRect(QtCore.QRectF(self.to_widget(self._drag_from.x(), self._drag_from.y()),
                                     self.to_widget(self._drag_to.x(), self._drag_to.y())).normalized())
        if self.banner:
            text, status = self.banner
            f = p.font()
            f.setPointSizeF(f.pointSizeF() * 1.6)
            f.setBold(True)
            p.setFont(f)
            fm = QtGui.QFontMetrics(f)
            r = QtCore.QRectF(10, 10, fm.horizontalAdvance(text) + 24, fm.height() + 10)
            p.setPen(QtCore.Qt.NoPen)
            p.setBrush(theme.status_color(status))
            p.drawRoundedRect(r, 4, 4)
            p.setPen(QtGui.QColor("#101214"))
            p.drawText(r, QtCore.Qt.AlignCenter, text)

    def _draw_roi(self, p, rect, label, selected):
        x, y, w, h = rect
        color = QtGui.QColor(theme.ACCENT if selected else "#9aa4b5")
        pen = QtGui.QPen(color, 2 if selected else 1, QtCore.Qt.DashLine)
        pen.setCosmetic(True)
        p.setPen(pen)
        p.setBrush(QtCore.Qt.NoBrush)
        r = QtCore.QRectF(self.to_widget(x, y), self.to_widget(x + w, y + h))
        p.drawRect(r)
        if label:
            p.setPen(color)
            p.drawText(r.topLeft() + QtCore.QPointF(3, -4), label)


def paint_shape(p: QtGui.QPainter, s, to_widget, scale: float) -> None:
    """Draw one overlay (``host.Shape``) with ``p``; ``to_widget(x, y)`` maps image pixels to the
    painter's coordinates and ``scale`` is its zoom (radii and axes). The image view and the
    trainer's gallery tiles draw with it."""
    color = QtGui.QColor(s.color) if getattr(s, "color", "") else theme.status_color(getattr(s, "status", "info"))
    pen = QtGui.QPen(color, 2)
    pen.setCosmetic(True)
    p.setPen(pen)
    p.setBrush(QtCore.Qt.NoBrush)
    pts = [to_widget(x, y) for x, y in s.points]
    kind = s.kind
    if kind == "rect" and len(pts) >= 2:
        p.drawRect(QtCore.QRectF(pts[0], pts[1]).normalized())
    elif kind in ("polygon", "polyline") and len(pts) >= 2:
        poly = QtGui.QPolygonF(pts)
        (p.drawPolygon if kind == "polygon" else p.drawPolyline)(poly)
    elif kind == "line" and len(pts) >= 2:
        p.drawLine(pts[0], pts[1])
    elif kind == "circle" and pts:
        r = s.radius * scale
        p.drawEllipse(pts[0], r, r)
    elif kind == "ellipse" and pts:
        p.save()
        p.translate(pts[0])
        p.rotate(s.angle)
        a, b = s.axes
        p.drawEllipse(QtCore.QPointF(0, 0), a * scale, b * scale)
        p.restore()
    elif kind == "point" and pts:
        c = pts[0]
        p.drawLine(c + QtCore.QPointF(-5, 0), c + QtCore.QPointF(5, 0))
        p.drawLine(c + QtCore.QPointF(0, -5), c + QtCore.QPointF(0, 5))
    if s.label and pts:
        anchor = pts[0]
        if kind == "rect" and len(pts) >= 2:
            anchor = QtCore.QRectF(pts[0], pts[1]).normalized().topLeft() + QtCore.QPointF(0, -3)
        elif kind == "circle":
            anchor = pts[0] + QtCore.QPointF(s.radius * scale + 2, 0)
        p.setPen(color)
        p.drawText(anchor, s.label)
