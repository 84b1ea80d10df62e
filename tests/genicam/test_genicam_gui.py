"""The desktop app's collect workspace on a GenICam camera (viky.cti): live view, camera settings written
to the camera while it streams, frames captured into class folders."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")


def test_collect_from_a_genicam_camera_with_live_settings(qtbot, genicam_pm, viky_cti, tmp_path, monkeypatch):
    import cv2

    from loupe_gui.collect_ws import CollectWorkspace

    monkeypatch.setenv("GENICAM_GENTL64_PATH", os.path.dirname(viky_cti))
    ws = CollectWorkspace(genicam_pm)
    qtbot.addWidget(ws)
    ws.resize(1400, 900)
    ws.set_source("genicam:0")
    ws.folder.setText(str(tmp_path / "dataset"))
    with qtbot.waitSignal(ws.frameShown, timeout=60000):
        assert ws.start()
    panel = ws.camera_panel
    assert {"AcquisitionFrameRate", "BouncingBallSize"} <= set(panel.boxes)
    with qtbot.waitSignal(panel.changed, timeout=10000) as got:
        panel.boxes["BouncingBallSize"].setValue(33)
    assert got.args == ["BouncingBallSize", 33]
    assert ws.worker.source._ia.remote_device.node_map.BouncingBallSize.value == 33
    with qtbot.waitSignal(panel.failed, timeout=10000) as bad:  # beyond the node's range: refused, said
        panel._write("BouncingBallSize", "int", 400)
    assert "out of range" in bad.args[0]
    with qtbot.waitSignal(ws.frameShown, timeout=60000):
        pass
    ws.label.setEditText("good")
    path = ws.capture()
    assert path.parent == tmp_path / "dataset" / "train" / "good"
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.shape[:2] == ws.current.image.shape[:2]
    out = Path(os.environ.get("LOUPE_SCREENSHOTS", tmp_path))
    ws.grab().save(str(out / "collect-genicam.png"))
    with qtbot.waitSignal(ws.idle, timeout=60000):
        ws.stop()
    assert not panel.boxes  # the panel empties when the camera closes
