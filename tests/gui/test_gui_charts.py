"""The desktop app's charts (matplotlib in Qt, drawn by host.charts): legends clear of titles and data at
narrow and normal widths, titles never cut, the confusion rule's colours, and clicks on confusion cells."""
from __future__ import annotations

import numpy as np
import pytest


def _charts():
    from loupe_gui.charts import BarChart, ConfusionMatrix, HistogramChart, LineChart, SizeChart

    bars = BarChart("Images per class")
    bars.set_data(["bag", "sneaker", "trouser", "pullover", "coat"], [("train", [10] * 5), ("test", [5] * 5)])
    loss = LineChart("Loss")
    loss.x_label = "epoch"
    for e in range(1, 6):
        for k in range(4):
            loss.add_point("training loss", e - 1 + (k + 1) / 4, 1.5 / (e + k / 4))
        loss.add_point("validation loss", e, 1.6 / e)
    roc = LineChart("ROC")
    roc.roc = True
    roc.set_curve("AUROC 0.917", [0, 0, 0.2, 0.4, 1], [0, 0.6, 0.8, 1, 1])
    roc.set_marker((0.2, 0.8))
    hist = HistogramChart("Score distribution of the test images")
    rng = np.random.default_rng(0)
    hist.set_groups([("good", rng.normal(0.6, 0.15, 30)), ("defect", rng.normal(1.4, 0.3, 30))])
    hist.set_threshold(1.0)
    sizes = SizeChart("Image sizes")
    sizes.set_sizes({(28, 28): 45, (32, 30): 5})
    cm = ConfusionMatrix()
    cm.set_matrix(["bag", "sneaker", "trouser"], [[5, 0, 0], [1, 4, 0], [0, 2, 3]])
    return [bars, loss, roc, hist, sizes, cm]


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 - 1 and b.x0 < a.x1 - 1 and a.y0 < b.y1 - 1 and b.y0 < a.y1 - 1


@pytest.mark.parametrize("size", [(260, 220), (640, 320)])
def test_legends_clear_of_titles_and_data(qtbot, size):
    for chart in _charts():
        qtbot.addWidget(chart)
        chart.resize(*size)
        chart.show()
        img = chart.grab().toImage()          # paints: the figure is built and drawn for this size
        assert not img.isNull() and img.width() == size[0]
        fig = chart.figure
        r = fig.canvas.get_renderer()
        (ax,) = fig.axes
        box = ax.get_window_extent(r)
        title = fig._suptitle
        assert title is not None and title.get_text().replace("\n", " ") == chart.title
        tb = title.get_window_extent(r)
        assert tb.x0 >= 0 and tb.x1 <= fig.bbox.width + 1, (chart.title, size)   # the title is not cut
        assert not _overlap(tb, box), (chart.title, size)
        for leg in fig.legends + ([ax.get_legend()] if ax.get_legend() else []):
            lb = leg.get_window_extent(r)
            assert not _overlap(lb, box), (chart.title, size, "legend over the data")
            assert not _overlap(lb, tb), (chart.title, size, "legend over the title")
            assert lb.x0 >= -1 and lb.x1 <= fig.bbox.width + 1
        chart.close()


def test_confusion_cells_follow_the_rule_and_open_on_click(qtbot):
    from PyQt5 import QtCore, QtGui

    from host import VERDICT_COLOURS, confusion_style
    from loupe_gui.charts import ConfusionMatrix

    m = np.array([[5, 0, 0], [1, 4, 0], [0, 2, 3]])
    cm = ConfusionMatrix()
    qtbot.addWidget(cm)
    cm.set_matrix(["bag", "sneaker", "trouser"], m)
    for size in ((270, 230), (520, 440)):
        cm.resize(*size)
        cm.show()
        img = cm.grab().toImage()
        style = confusion_style(m)
        for i in range(3):
            for j in range(3):
                r = cm.cell_rect(i, j)
                assert r.width() > 10 and cm.rect().contains(r.toRect())
                status, strength = style[i][j]
                if strength == 1.0:   # full-strength cells are exactly the verdict colour (near a corner: no text)
                    px = QtGui.QColor(img.pixel(int(r.left() + 4), int(r.top() + 4))).name()
                    assert px == VERDICT_COLOURS[status], (i, j, px)
                assert cm.cell_at(r.center()) == (i, j)
                if i == j or m[i, j]:
                    with qtbot.waitSignal(cm.cellClicked) as clicked:
                        qtbot.mouseClick(cm, QtCore.Qt.LeftButton, pos=r.center().toPoint())
                    assert clicked.args == [i, j]
    # outside the grid: no cell
    assert cm.cell_at(QtCore.QPointF(2, 2)) is None
