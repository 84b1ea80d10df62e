"""Trainer workspace: dataset analysis, a tiny classifier trained to completion with the real trainer
(confusion matrix and heatmap gallery shown), and a cancelled training run; the UI keeps responding."""
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PyQt5")

from host import create_plugin_manager  # noqa: E402

TINY = {"epochs": 2, "input_size": 32, "batch_size": 8, "patience": 2, "finetune_blocks": 1, "augment": False,
        "val_fraction": 0.2, "max_minutes": 1.5, "threads": 2}


@pytest.fixture(scope="module")
def pm():
    pm = create_plugin_manager()
    if "classify" not in pm.catalogue.trainers or "classify" not in pm.catalogue.runtimes:
        pytest.skip("needs the classify trainer and runtime")
    return pm


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    from loupe_gui.demo_data import FASHION, fashion_classes

    if not FASHION.is_dir():
        pytest.skip("needs /usr/share/datasets/fashion-mnist")
    import cv2

    root = fashion_classes(tmp_path_factory.mktemp("fashion"), classes=(1, 7, 8), n_train=10, n_test=5)
    # images without a class (the test images mirrored), which the classifier pseudo-labels for its head
    (root / "unlabelled").mkdir()
    for f in sorted((root / "test").rglob("*.png")):
        cv2.imwrite(str(root / "unlabelled" / f"u_{f.name}"), cv2.imread(str(f))[:, ::-1])
    return root


class Heartbeat:
    """Counts timer ticks on the GUI thread while a job runs, and which threads the job's progress came from.

    The event loop keeps ticking while the training runs in its worker thread; had the training run on the
    GUI thread, no tick would come until it ended. (The longest gap between ticks is no test: on a loaded
    machine a thread can wait seconds for a core whatever the code does.)
    """

    def __init__(self, qtbot):
        from PyQt5 import QtCore

        self.last = time.perf_counter()
        self.max_gap = 0.0
        self.ticks = 0
        self.gui_thread = threading.get_ident()
        self.job_threads: set[int] = set()
        self.timer = QtCore.QTimer()
        self.timer.timeout.connect(self._tick)
        self.timer.start(20)

    def watch(self, signals) -> None:
        from PyQt5 import QtCore

        signals.updated.connect(lambda *_: self.job_threads.add(threading.get_ident()), QtCore.Qt.DirectConnection)

    def _tick(self):
        self.ticks += 1
        now = time.perf_counter()
        self.max_gap = max(self.max_gap, now - self.last)
        self.last = now


def test_train_to_completion(qtbot, pm, fashion, tmp_path):
    from loupe_gui.train_ws import TrainWorkspace

    ws = TrainWorkspace(pm)
    qtbot.addWidget(ws)
    ws.resize(1500, 900)
    ws.show()
    with qtbot.waitSignal(ws.idle, timeout=120000):
        ws.set_data(fashion, task="classify")
    # dataset analysis: the known class counts and the one image size
    assert sorted(ws.counts_chart.labels) == ["bag", "sneaker", "trouser"]
    series = dict((name, vals) for name, vals, _ in ws.counts_chart.series)
    assert series["train"] == [10, 10, 10] and series["test"] == [5, 5, 5]
    assert ws.sizes_chart.sizes == {(28, 28): 60}
    assert "15 unlabelled" in ws.data_info.text()       # counted, but not a split or a class

    # the advanced panel is generated from the trainer's Params
    assert set(ws.form.editors) == set(pm.catalogue.trainers["classify"].cls.Params.model_fields)
    ws.out.setText(str(tmp_path / "tiny.bundle"))
    beat = Heartbeat(qtbot)
    with qtbot.waitSignal(ws.idle, timeout=1200000):
        assert ws.train(TINY)
        beat.watch(ws.progress.signals)
        ticks_at_start = beat.ticks
    beat.timer.stop()
    assert ws.job.error is None, ws.job.error
    assert (tmp_path / "tiny.bundle" / "manifest.json").is_file()
    from host import Bundle

    assert Bundle.load(tmp_path / "tiny.bundle").meta["metrics"]["self_training"]["unlabelled"] == 15
    assert ws.loss_chart.has_data()                       # the live curve got points during training
    # training and validation curves, one point per epoch for validation
    assert {"training loss", "validation loss"} <= set(ws.loss_chart.curves)
    assert {"training acc", "validation acc"} <= set(ws.metric_chart.curves)
    val_x = [x for x, _ in ws.loss_chart.curves["validation loss"]]
    assert val_x and val_x == [float(e) for e in range(1, len(val_x) + 1)]   # at the end of each epoch run
    assert max(x for x, _ in ws.loss_chart.curves["training loss"]) == pytest.approx(val_x[-1])
    assert ws.curves.currentWidget() is not ws.score_dist
    assert ws.bar.value() == ws.bar.maximum()
    # confusion matrix: rows = true class, 5 test images each
    m = ws.result["metrics"]
    cm = np.asarray(ws.cm.matrix)
    assert ws.cm.classes == m["classes"] and cm.shape == (3, 3)
    assert cm.sum() == 15 and list(cm.sum(axis=1)) == [5, 5, 5]
    assert abs(m["accuracy"] - np.trace(cm) / 15) < 1e-9
    assert ws.tabs.isTabEnabled(0) and ws.tabs.isTabVisible(0)
    # heatmap gallery from the classify inspect tool over the test images
    gal = ws.result["gallery"]
    assert gal["tool"] == "classify.cnn"
    assert ws.gallery.count() == len(gal["tiles"]) >= 6
    assert all(t["measurements"]["class"] in m["classes"] for t in gal["tiles"])
    # export copies the bundle and re-checks its hashes
    b = ws.export_bundle(tmp_path / "exported.bundle")
    assert b.sha256 == ws.bundle.sha256
    # the training ran in a worker thread, and the GUI thread kept handling events meanwhile
    assert beat.job_threads and beat.gui_thread not in beat.job_threads
    assert beat.ticks - ticks_at_start >= 10, f"{beat.ticks - ticks_at_start} ticks (longest gap {beat.max_gap:.1f} s)"
    ws.tabs.setCurrentIndex(0)
    img = ws.cm.grab().toImage()
    assert not img.isNull()

    # a click on a confusion-matrix cell opens the images of that cell
    from PyQt5 import QtCore

    classes = m["classes"]
    for i in range(3):
        for j in range(3):
            rows = ws.cell_images(i, j)
            assert all(r["label"] == classes[i] and r["measurements"]["class"] == classes[j] for r in rows)
            assert len(rows) == cm[i, j], (i, j)
    i, j = max(((i, j) for i in range(3) for j in range(3)), key=lambda c: cm[c])
    with qtbot.waitSignal(ws.cm.cellClicked) as clicked:
        qtbot.mouseClick(ws.cm, QtCore.Qt.LeftButton, pos=ws.cm.cell_rect(i, j).center().toPoint())
    assert clicked.args == [i, j]
    dlg = ws.cell_dialog
    assert dlg.isVisible() and dlg.gallery.count() == cm[i, j]
    assert f"true {classes[i]}" in dlg.windowTitle()
    dlg.close()


def test_cancel_training(qtbot, pm, fashion, tmp_path):
    from loupe_gui.train_ws import TrainWorkspace

    ws = TrainWorkspace(pm)
    qtbot.addWidget(ws)
    with qtbot.waitSignal(ws.idle, timeout=120000):
        ws.set_data(fashion, task="classify")
    out = tmp_path / "never.bundle"
    ws.out.setText(str(out))
    assert ws.train({**TINY, "epochs": 200, "patience": 200, "max_minutes": 10})
    # training is under way once a stage after the image loading has reported
    with qtbot.waitSignal(ws.progress.signals.updated, timeout=300000,
                          check_params_cb=lambda stage, *_: not stage.startswith("loading")):
        pass
    t0 = time.perf_counter()
    with qtbot.waitSignal(ws.idle, timeout=300000):
        ws.cancel()
    assert ws.job.was_cancelled
    assert ws.stage.text() == "cancelled"
    assert not out.exists()
    assert time.perf_counter() - t0 < 300                  # the next progress step, even on a loaded machine
    assert ws.train_btn.isEnabled() and not ws.cancel_btn.isEnabled()
