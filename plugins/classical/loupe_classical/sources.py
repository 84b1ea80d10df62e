"""Image sources: folders of image files (with a hot-folder watch mode), video files, cameras.

Frame keys are stable across runs so ``loupe run --resume`` can skip stored frames:
a folder frame's key is its file path; a video frame's is ``video:<absolute path>#<frame number>``;
a camera frame's is ``camera:<target>#<n>`` (a live camera is not resumable, but keys stay unique
within a run).
"""
from __future__ import annotations

import fnmatch
import os
import stat
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
from pydantic import Field

from host import (IMAGE_EXTENSIONS, Frame, Source, SourceParams, UsageError, read_image,  # noqa: F401
                  use_opencv)

# OpenCV's decoders print warnings on corrupt files; the error frame already says what went wrong
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
# the host's one image reader (header budget, alpha, errors) decodes with OpenCV
use_opencv(cv2)

_GLOB_CHARS = set("*?[")


class _Stopper:
    """A stop request for long-running sources, set from any thread by ``Source.stop()``.

    The host's runner calls ``source.stop()`` on Ctrl-C/SIGTERM (and a GUI calls it from its
    Stop button), so a source that waits for files or frames ends promptly.
    """

    def __init__(self) -> None:
        self.event = threading.Event()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; true when a stop was requested."""
        return self.event.wait(seconds)


# --------------------------------------------------------------------- folder


class FolderParams(SourceParams):
    pattern: str = Field("*", description="glob pattern for file names, e.g. '*.png' (a pattern in the spec's path, "
                                          "folder:images/*.png, works too)")
    recursive: bool = Field(False, description="also look in sub-folders (the pattern applies at every depth)")
    watch: bool = Field(False, description="hot folder: after the files present, keep processing new files as they "
                                           "arrive, until stopped (Ctrl-C, stop file, idle timeout)")
    settle_s: float = Field(0.5, ge=0, le=600, description="watch: a file is read once its size and modification "
                                                           "time have not changed for this long (not still written)")
    poll_s: float = Field(0.2, gt=0, le=60, description="watch: how often the folder is scanned")
    idle_timeout_s: float | None = Field(None, gt=0, description="watch: stop after this long without a new file")
    stop_file: str | None = Field(None, description="watch: stop when a file of this name appears in the folder "
                                                    "(it is not processed)")
    existing: bool = Field(True, description="watch: also process the files already there at start")
    retry_s: float = Field(2.0, ge=0, le=3600, description="watch: a file that fails to decode is held back; if it "
                                                           "changes again it was still being written and is re-read, "
                                                           "else it becomes an error frame after this long")


class FolderSource(Source):
    """Image files in a folder, in sorted order; optionally a hot folder that is watched for new files."""

    scheme = "folder"
    description = ("image files in a folder (PNG, JPEG, BMP, TIFF, PNM; 8/16-bit, gray or colour), sorted; "
                   "glob pattern, recursive, watch mode for hot folders")
    Params = FolderParams

    def __init__(self, params, context=None):
        super().__init__(params, context)
        self._stopper = _Stopper()
        target = self.params.target
        pattern = self.params.pattern
        # folder:images/*.png -> root images, pattern *.png
        if any(ch in _GLOB_CHARS for ch in target):
            head, tail = os.path.split(target)
            if not any(ch in _GLOB_CHARS for ch in head):
                target, pattern = head or ".", tail
        self._root = self.context.resolve(target)
        self._pattern = pattern
        self._name = f"folder:{self.params.target}"

    def stop(self) -> None:
        """Ask a watching source to end (thread-safe); it returns within ``poll_s``."""
        self._stopper.event.set()

    def _files(self) -> list[str]:
        """The matching image file names, sorted. Each real folder and file is visited once (symbolic
        link loops end); entries that match but cannot be images (a FIFO, a broken link, a folder
        named x.png) are listed too and recorded in ``self._bad`` with the reason, so they become
        error frames. Listing ends early when a stop is requested."""
        root = self._root
        self._bad: dict[str, str] = {}
        if root.is_file():
            return [str(root)]
        if not root.is_dir():
            raise UsageError(f"source folder:{self.params.target}: folder not found ({root})")
        recursive = self.params.recursive
        pattern = self._pattern
        hidden_ok = pattern.startswith(".")
        nested = "/" in pattern  # a pattern such as sub/*.png matches the path below the folder
        stop_name = self.params.stop_file
        stopped = self._stopper.event.is_set
        seen_dirs: set[tuple[int, int]] = set()
        seen_files: set[tuple[int, int]] = set()
        out: list[str] = []
        todo = [str(root)]
        while todo and not stopped():
            folder = todo.pop()
            try:
                st = os.stat(folder)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen_dirs:
                continue  # a symbolic link loop or a second link to a folder already listed
            seen_dirs.add((st.st_dev, st.st_ino))
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for e in entries:
                name = e.name
                if name.startswith(".") and not hidden_ok:
                    continue
                try:
                    is_dir = e.is_dir()
                except OSError:
                    is_dir = False
                if is_dir and recursive:
                    todo.append(e.path)
                if not fnmatch.fnmatchcase(os.path.relpath(e.path, root) if nested else name, pattern) \
                        or not name.lower().endswith(IMAGE_EXTENSIONS) or name == stop_name:
                    continue
                try:
                    fst = e.stat()
                except OSError as exc:
                    self._bad[e.path] = (f"{e.path}: broken symbolic link" if e.is_symlink()
                                         else f"{e.path}: cannot read ({exc.strerror})")
                    out.append(e.path)
                    continue
                if not stat.S_ISREG(fst.st_mode):
                    kind = ("a folder" if stat.S_ISDIR(fst.st_mode) else "a FIFO (named pipe)"
                            if stat.S_ISFIFO(fst.st_mode) else "a socket" if stat.S_ISSOCK(fst.st_mode)
                            else "a device" if stat.S_ISCHR(fst.st_mode) or stat.S_ISBLK(fst.st_mode)
                            else "not a regular file")
                    self._bad[e.path] = f"{e.path}: {kind}, not an image file"
                    out.append(e.path)
                    continue
                if (fst.st_dev, fst.st_ino) in seen_files:
                    continue  # the same file through a second link
                seen_files.add((fst.st_dev, fst.st_ino))
                out.append(e.path)
        return sorted(out)

    def count(self) -> int | None:
        if self.params.watch:
            return None
        return len(self._files())

    @property
    def stored(self) -> bool:
        return not self.params.watch

    def _frame(self, i: int, path: str) -> Frame:
        bad = getattr(self, "_bad", None)
        if bad and path in bad:
            return Frame(image=None, source=self._name, index=i, path=path, timestamp=time.time(), error=bad[path])
        try:
            image, error = read_image(path), None
        except (ValueError, OSError, cv2.error) as exc:
            image, error = None, str(exc)
        return Frame(image=image, source=self._name, index=i, path=path, timestamp=time.time(), error=error)

    def frames(self, skip: Callable[[str], bool] | None = None) -> Iterator[Frame]:
        if self.params.watch:
            yield from self._watch(skip)
            return
        for i, path in enumerate(self._files()):
            if skip is not None and skip(path):
                continue
            yield self._frame(i, path)

    def _watch(self, skip: Callable[[str], bool] | None) -> Iterator[Frame]:
        p = self.params
        if not self._root.is_dir():
            raise UsageError(f"source folder:{p.target}: watch mode needs a folder ({self._root} is not one)")
        seen: set[str] = set()
        pending: dict[str, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, since when unchanged)
        suspects: dict[str, tuple[int, int, float, Frame]] = {}  # failed to decode: (size, mtime_ns, when, frame)
        if not p.existing:
            seen.update(self._files())
        index = 0
        last_new = time.monotonic()
        stopper = self._stopper
        while not stopper.event.is_set():
            if p.stop_file and (self._root / p.stop_file).exists():
                return
            now = time.monotonic()
            ready: list[tuple[str, Frame | None]] = []
            for path in self._files():
                if path in seen:
                    continue
                if path in self._bad:
                    ready.append((path, None))
                    continue
                try:
                    st = os.stat(path)
                except OSError:  # removed meanwhile
                    pending.pop(path, None)
                    suspects.pop(path, None)
                    continue
                sig = (st.st_size, st.st_mtime_ns)
                if path in suspects:
                    s_size, s_mtime, s_when, s_frame = suspects[path]
                    if (s_size, s_mtime) != sig:  # still being written: settle and read again
                        del suspects[path]
                        pending[path] = (*sig, now)
                    elif now - s_when >= p.retry_s:
                        del suspects[path]
                        ready.append((path, s_frame))
                    continue
                old = pending.get(path)
                if old is None or old[:2] != sig:
                    pending[path] = (*sig, now)
                    continue
                # unchanged since old[2]; the mtime itself must be old enough too, so a file whose
                # writer pauses is not taken between two polls
                if now - old[2] >= p.settle_s and time.time() - st.st_mtime_ns / 1e9 >= p.settle_s \
                        and st.st_size > 0:
                    ready.append((path, None))
            for path, held in ready:  # sorted, as _files() is
                pending.pop(path, None)
                if skip is not None and skip(path):
                    seen.add(path)
                    continue
                frame = held or self._frame(index, path)
                if frame.image is None and held is None and p.retry_s > 0 and path not in self._bad:
                    try:
                        st = os.stat(path)
                        suspects[path] = (st.st_size, st.st_mtime_ns, time.monotonic(), frame)
                        continue
                    except OSError:
                        pass
                seen.add(path)
                last_new = time.monotonic()
                frame.index = index
                yield frame
                index += 1
                if stopper.event.is_set():
                    return
            if p.idle_timeout_s is not None and time.monotonic() - last_new >= p.idle_timeout_s \
                    and not pending and not suspects:
                return
            if stopper.wait(p.poll_s):
                return



# ---------------------------------------------------------------------- video


class VideoParams(SourceParams):
    start: int = Field(0, ge=0, description="first frame number to process")
    step: int = Field(1, ge=1, description="process every n-th frame")
    max_frames: int | None = Field(None, ge=1, description="stop after this many frames")
    gray: bool = Field(False, description="convert frames to grayscale")


def _open_capture(target: str | int, what: str) -> "cv2.VideoCapture":
    cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        cap.release()
        raise UsageError(f"source {what}: cannot open {target!r} (not found, unsupported codec or device busy)")
    return cap


class VideoSource(Source):
    """Frames of a video file."""

    scheme = "video"
    description = "frames of a video file (any format FFmpeg reads); keys are path#frame for resume"
    Params = VideoParams

    def __init__(self, params, context=None):
        super().__init__(params, context)
        self._path = self.context.resolve(params.target)
        self._cap = None

    stored = True  # a recorded file: its frames are there before anyone asks

    def count(self) -> int | None:
        if not self._path.is_file():
            return None
        cap = cv2.VideoCapture(str(self._path))
        try:
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()
        if n <= 0:
            return None
        p = self.params
        n = max(0, (n - p.start + p.step - 1) // p.step)
        return min(n, p.max_frames) if p.max_frames else n

    def frames(self, skip: Callable[[str], bool] | None = None) -> Iterator[Frame]:
        p = self.params
        if not self._path.is_file():
            raise UsageError(f"source video:{p.target}: file not found ({self._path})")
        cap = self._cap = _open_capture(str(self._path), f"video:{p.target}")
        name = f"video:{self._path}"
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        n = 0
        try:
            pos = 0
            if p.start:
                # seeking is codec-dependent; grabbing is exact
                while pos < p.start and cap.grab():
                    pos += 1
            while p.max_frames is None or n < p.max_frames:
                key = f"{name}#{pos}"
                want = (pos - p.start) % p.step == 0
                if want and not (skip is not None and skip(key)):
                    ok, image = cap.read()
                    if not ok:
                        break
                    if p.gray and image.ndim == 3:
                        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
                    yield Frame(image=image, source=name, index=pos, path=None, timestamp=time.time(),
                                meta={"t_s": pos / fps if fps else None})
                    n += 1
                else:
                    if not cap.grab():  # skipped frames are not decoded
                        break
                    if want:
                        n += 1
                pos += 1
        finally:
            self.close()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# --------------------------------------------------------------------- camera


class CameraParams(SourceParams):
    width: int | None = Field(None, ge=1, description="requested frame width (the device may refuse)")
    height: int | None = Field(None, ge=1, description="requested frame height")
    fps: float | None = Field(None, gt=0, description="requested frame rate")
    max_frames: int | None = Field(None, ge=1, description="stop after this many frames (default: until stopped)")
    gray: bool = Field(False, description="convert frames to grayscale")
    reconnect_s: float = Field(2.0, ge=0, description="on a read failure from a device or stream, wait this long and "
                                                      "reopen it once (0 = end the run instead)")


class CameraSource(Source):
    """A camera or stream through OpenCV's VideoCapture: a device index (camera:0) or a URL/path."""

    scheme = "camera"
    description = "camera by index (camera:0) or stream URL (camera:rtsp://...) via OpenCV VideoCapture"
    Params = CameraParams

    def __init__(self, params, context=None):
        super().__init__(params, context)
        t = params.target.strip()
        if t.isdigit():
            self._target: str | int = int(t)
        elif "://" in t:
            self._target = t
        else:  # a file path (e.g. a recorded sequence standing in for the camera)
            self._target = str(self.context.resolve(t))
        self._cap = None
        self._stopper = _Stopper()

    def stop(self) -> None:
        self._stopper.event.set()

    def _open(self):
        p = self.params
        cap = _open_capture(self._target, f"camera:{p.target}")
        if p.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, p.width)
        if p.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, p.height)
        if p.fps:
            cap.set(cv2.CAP_PROP_FPS, p.fps)
        return cap

    def frames(self, skip: Callable[[str], bool] | None = None) -> Iterator[Frame]:
        p = self.params
        cap = self._cap = self._open()
        name = f"camera:{p.target}"
        n = 0
        retried = False
        try:
            while (p.max_frames is None or n < p.max_frames) and not self._stopper.event.is_set():
                ok, image = cap.read()
                if not ok:
                    # a file or a finished stream ends the run; a live device gets one reopen
                    if p.reconnect_s <= 0 or retried or not self._is_live():
                        break
                    retried = True
                    cap.release()
                    if self._stopper.wait(p.reconnect_s):
                        break
                    cap = self._cap = self._open()
                    continue
                retried = False
                if p.gray and image.ndim == 3:
                    image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
                key = f"{name}#{n}"
                if not (skip is not None and skip(key)):
                    yield Frame(image=image, source=name, index=n, path=None, timestamp=time.time())
                n += 1
        finally:
            self.close()

    def _is_live(self) -> bool:
        t = self._target
        return isinstance(t, int) or str(t).lower().startswith(("rtsp:", "rtmp:", "http:", "https:", "udp:", "tcp:"))

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
