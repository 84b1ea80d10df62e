"""Sources: folder (patterns, recursion, 8/16-bit, gray, formats, bad files), hot-folder watch, video, camera."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from host import StepContext, UsageError
from host.testing import run_loupe
from loupe_classical.sources import CameraSource, FolderSource, VideoSource

from classical_helpers import read_jsonl, write_video


def _folder(target, **kw) -> FolderSource:
    return FolderSource(FolderSource.Params(target=str(target), **kw), StepContext(step="source"))


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    cv2.imwrite(str(d / "b_color.png"), rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    cv2.imwrite(str(d / "a_gray.png"), np.full((20, 30), 77, np.uint8))
    img16 = (np.arange(20 * 30, dtype=np.uint32).reshape(20, 30) * 100).astype(np.uint16)
    cv2.imwrite(str(d / "c_16bit.tif"), img16)
    cv2.imwrite(str(d / "d.bmp"), np.full((10, 10, 3), 200, np.uint8))
    cv2.imwrite(str(d / "e.jpg"), np.full((16, 16, 3), 128, np.uint8))
    cv2.imwrite(str(d / "sub" / "f.png"), np.zeros((5, 5), np.uint8))
    (d / "notes.txt").write_text("not an image")
    (d / "z_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return d


def test_folder_sorted_formats_bitdepth_and_broken_file(image_dir: Path):
    frames = list(_folder(image_dir).frames())
    names = [Path(f.path).name for f in frames]
    assert names == ["a_gray.png", "b_color.png", "c_16bit.tif", "d.bmp", "e.jpg", "z_broken.png"]
    by = {Path(f.path).name: f for f in frames}
    assert by["a_gray.png"].image.ndim == 2 and by["a_gray.png"].image[0, 0] == 77
    assert by["b_color.png"].image.shape == (20, 30, 3)
    t = by["c_16bit.tif"].image
    assert t.dtype == np.uint16 and t.shape == (20, 30) and int(t.max()) == 599 * 100
    assert by["e.jpg"].image.shape == (16, 16, 3)
    broken = by["z_broken.png"]
    assert broken.image is None and "z_broken.png" in broken.error and broken.path.endswith("z_broken.png")
    # keys are the paths (stable for --resume)
    assert [f.key for f in frames] == [f.path for f in frames]


def test_folder_pattern_recursive_and_spec_glob(image_dir: Path):
    assert [Path(f.path).name for f in _folder(image_dir, pattern="*.png").frames()] == [
        "a_gray.png", "b_color.png", "z_broken.png"]
    rec = [os.path.relpath(f.path, image_dir) for f in _folder(image_dir, pattern="*.png", recursive=True).frames()]
    assert rec == sorted(rec) and os.path.join("sub", "f.png") in rec and len(rec) == 4
    assert [Path(f.path).name for f in _folder(f"{image_dir}/*.tif").frames()] == ["c_16bit.tif"]
    assert _folder(image_dir, pattern="*.png").count() == 3
    skipped = [Path(f.path).name for f in _folder(image_dir, pattern="*.png").frames(
        skip=lambda key: key.endswith("a_gray.png"))]
    assert skipped == ["b_color.png", "z_broken.png"]
    with pytest.raises(UsageError, match="folder not found"):
        list(_folder(image_dir / "missing").frames())


def _write_slowly(path: Path, data: bytes, pause: float) -> None:
    """Write a file in two halves with a pause, like a slow network copy."""
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        time.sleep(pause)
        f.write(data[len(data) // 2:])


def test_watch_reads_new_files_only_once_complete_and_stops_on_stop_file(tmp_path: Path):
    hot = tmp_path / "hot"
    hot.mkdir()
    cv2.imwrite(str(hot / "000_existing.png"), np.full((40, 40), 5, np.uint8))
    ok, enc = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8))
    data = enc.tobytes()

    def producer():
        time.sleep(0.3)
        _write_slowly(hot / "001_slow.png", data, pause=0.6)  # half-written for 0.6 s > settle_s
        time.sleep(0.2)
        cv2.imwrite(str(hot / "002_fast.png"), np.full((40, 40), 9, np.uint8))
        time.sleep(0.8)
        (hot / "STOP").write_text("")

    src = _folder(hot, pattern="*.png", watch=True, settle_s=0.3, poll_s=0.05, stop_file="STOP")
    assert src.count() is None
    th = threading.Thread(target=producer)
    t0 = time.monotonic()
    th.start()
    frames = list(src.frames())
    th.join()
    assert [Path(f.path).name for f in frames] == ["000_existing.png", "001_slow.png", "002_fast.png"]
    assert all(f.error is None for f in frames), [f.error for f in frames]
    assert frames[1].image.shape == (300, 300)
    assert time.monotonic() - t0 < 5


def test_watch_reports_a_corrupt_file_as_an_error_frame(tmp_path: Path):
    hot = tmp_path / "hotc"
    hot.mkdir()
    (hot / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cv2.imwrite(str(hot / "good.png"), np.zeros((8, 8), np.uint8))
    src = _folder(hot, watch=True, poll_s=0.05, settle_s=0.05, retry_s=0.3, idle_timeout_s=0.5)
    frames = list(src.frames())
    assert sorted(Path(f.path).name for f in frames) == ["bad.png", "good.png"]
    bad = next(f for f in frames if f.path.endswith("bad.png"))
    assert bad.image is None and "bad.png" in bad.error
    assert sorted(f.index for f in frames) == [0, 1]


def test_watch_stop_from_another_thread_and_idle_timeout(tmp_path: Path):
    hot = tmp_path / "hot2"
    hot.mkdir()
    src = _folder(hot, watch=True, poll_s=0.05, settle_s=0.0)
    threading.Timer(0.3, src.stop).start()
    t0 = time.monotonic()
    assert list(src.frames()) == []
    assert time.monotonic() - t0 < 2.0
    cv2.imwrite(str(hot / "a.png"), np.zeros((4, 4), np.uint8))
    time.sleep(0.05)
    src = _folder(hot, watch=True, poll_s=0.05, settle_s=0.0, idle_timeout_s=0.4, existing=False)
    t0 = time.monotonic()
    assert list(src.frames()) == []  # the existing file is not reprocessed, then idle
    assert 0.3 < time.monotonic() - t0 < 3.0


def test_watch_cli_stops_on_ctrl_c_while_idle(tmp_path: Path):
    """A hot-folder run waiting for files ends promptly on Ctrl-C and keeps what it processed."""
    hot = tmp_path / "hot3"
    hot.mkdir()
    cv2.imwrite(str(hot / "a.png"), np.full((20, 20), 50, np.uint8))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "loupe_recipe: 1\nname: hot\n"
        f"source: {{spec: 'folder:{hot}', watch: true, poll_s: 0.05, settle_s: 0.1}}\n"
        "inspect:\n  - tool: classical.intensity\n")
    out = tmp_path / "out.jsonl"
    exe = Path(sys.executable).with_name("loupe")
    proc = subprocess.Popen([str(exe), "run", str(recipe), "--report", f"jsonl:{out}", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (out.exists() and out.read_text().strip()):
            time.sleep(0.1)
        assert out.exists() and out.read_text().strip(), "the existing file was not processed"
        time.sleep(0.3)  # idle: waiting for new files
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        assert time.monotonic() - t0 < 3
        assert proc.returncode == 130  # stopped by the operator, reporters closed
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = read_jsonl(out)
    assert len(rows) == 1 and rows[0]["verdict"] == "pass"


def test_video_source_frames_keys_step_and_resume(tmp_path: Path):
    path = tmp_path / "clip.avi"
    levels = write_video(path, n=12)
    src = VideoSource(VideoSource.Params(target=str(path)), StepContext())
    assert src.count() == 12
    frames = list(src.frames())
    assert len(frames) == 12
    got = [float(np.median(f.image[60:, 60:])) for f in frames]
    assert np.allclose(got, levels, atol=4), got
    assert frames[3].key == f"video:{path.resolve()}#3" and frames[3].index == 3
    # every 3rd frame from frame 2, skipping a stored key (not decoded)
    src = VideoSource(VideoSource.Params(target=str(path), start=2, step=3), StepContext())
    assert src.count() == 4
    stored = f"video:{path.resolve()}#5"
    sel = list(src.frames(skip=lambda k: k == stored))
    assert [f.index for f in sel] == [2, 8, 11]
    assert np.allclose([np.median(f.image[60:, 60:]) for f in sel], [levels[2], levels[8], levels[11]], atol=4)
    with pytest.raises(UsageError, match="not found"):
        list(VideoSource(VideoSource.Params(target=str(tmp_path / "none.avi")), StepContext()).frames())


def test_camera_source_driven_by_a_video_file(tmp_path: Path):
    """No camera here: VideoCapture on a file path stands in for a device/URL."""
    path = tmp_path / "cam.avi"
    levels = write_video(path, n=8)
    cam = CameraSource(CameraSource.Params(target=str(path), gray=True, max_frames=5), StepContext())
    frames = list(cam.frames())
    assert len(frames) == 5 and all(f.image.ndim == 2 for f in frames)
    assert np.allclose([np.median(f.image[60:, 60:]) for f in frames], levels[:5], atol=4)
    assert [f.key for f in frames] == [f"camera:{path}#{i}" for i in range(5)]
    # a file ends the run at its end (no reconnect for files)
    rel = CameraSource(CameraSource.Params(target="cam.avi"), StepContext(base_dir=tmp_path))
    assert len(list(rel.frames())) == 8
    with pytest.raises(UsageError, match="cannot open"):
        list(CameraSource(CameraSource.Params(target=str(tmp_path / "nope.avi")), StepContext()).frames())


def test_cli_runs_video_and_camera_sources(tmp_path: Path):
    path = tmp_path / "clip.avi"
    write_video(path, n=6)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("loupe_recipe: 1\nname: vid\ninspect:\n  - tool: classical.intensity\n"
                      "    limits: {mean: {max: 80}}\n")
    for spec in (f"video:{path}", f"camera:{path}"):
        out = tmp_path / f"{spec.split(':')[0]}.jsonl"
        r = run_loupe("run", recipe, "--source", spec, "--report", f"jsonl:{out}", "--quiet")
        assert r.returncode == 0, r.stderr
        rows = read_jsonl(out)
        # levels 10, 30, 50, 70, 90, 110 plus a small white square: the first four pass
        assert [row["verdict"] for row in rows] == ["pass"] * 4 + ["fail"] * 2
