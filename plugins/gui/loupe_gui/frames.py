"""Browse the frames of a source spec through the source plugins (the same decoding as a production run)."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from host import Frame, UsageError, open_source


class FrameBrowser:
    """Lists the frame keys of a ``folder:`` source without decoding them, and decodes one on demand.

    For other source kinds (video, camera) the first ``max_frames`` frames are
    read once and kept.
    """

    def __init__(self, catalogue, max_frames: int = 60) -> None:
        self.catalogue = catalogue
        self.max_frames = max_frames
        self.spec: Any = None
        self.base_dir = Path.cwd()
        self.keys: list[str] = []
        self._cached: list[Frame] | None = None

    def set_source(self, spec: Any, base_dir: Path | None = None, options: dict | None = None) -> int:
        """Open ``spec`` (``folder:PATH`` ...); returns how many frames it has. Raises UsageError."""
        self.spec, self.base_dir, self._options = spec, base_dir or Path.cwd(), options or {}
        self.keys, self._cached = [], None
        src = open_source(spec, self.catalogue, self.base_dir, self._options)
        try:
            if getattr(src, "scheme", "") == "folder":
                keys: list[str] = []
                for _ in src.frames(skip=lambda k: keys.append(k) or True):
                    pass  # the folder source never yields a skipped frame
                self.keys = keys
            else:
                self._cached = list(itertools.islice(src.frames(), self.max_frames))
                self.keys = [f.key for f in self._cached]
        finally:
            src.close()
        return len(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def frame(self, i: int) -> Frame:
        if not self.keys:
            raise UsageError("the source has no frames")
        i = max(0, min(i, len(self.keys) - 1))
        if self._cached is not None:
            return self._cached[i]
        want = self.keys[i]
        src = open_source(self.spec, self.catalogue, self.base_dir, self._options)
        try:
            for f in src.frames(skip=lambda k: k != want):
                return f
        finally:
            src.close()
        raise UsageError(f"{want}: the source no longer has this frame")

    def index_of(self, key: str) -> int:
        try:
            return self.keys.index(key)
        except ValueError:
            return 0
