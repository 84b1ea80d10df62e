"""Image sources: folders of image files, video files, cameras."""
from __future__ import annotations

import glob
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
from pydantic import Field

from host import Frame, Source, SourceParams

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file as stored (8/16-bit, gray or BGR); raises ValueError naming the file."""
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise ValueError(f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{path}: cannot decode image (corrupt, truncated or not an image)")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


class FolderParams(SourceParams):
    pattern: str = Field("*", description="glob pattern for file names, e.g. '*.png'")
    recursive: bool = Field(False, description="also look in sub-folders")


class FolderSource(Source):
    """Image files in a folder, in sorted order."""

    scheme = "folder"
    description = "image files in a folder (PNG, JPEG, BMP, TIFF; 8/16-bit, gray or colour)"
    Params = FolderParams

    def _files(self) -> list[str]:
        root = self.context.resolve(self.params.target)
        if root.is_file():
            return [str(root)]
        if not root.is_dir():
            from host import UsageError

            raise UsageError(f"source folder:{self.params.target}: folder not found ({root})")
        pattern = os.path.join(str(root), "**" if self.params.recursive else "", self.params.pattern)
        files = glob.glob(pattern, recursive=self.params.recursive)
        return sorted(f for f in files if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(f))

    def count(self) -> int | None:
        return len(self._files())

    def frames(self, skip: Callable[[str], bool] | None = None) -> Iterator[Frame]:
        name = f"folder:{self.params.target}"
        for i, path in enumerate(self._files()):
            if skip is not None and skip(path):
                continue
            try:
                image, error = read_image(path), None
            except (ValueError, OSError, cv2.error) as exc:
                image, error = None, str(exc)
            yield Frame(image=image, source=name, index=i, path=path, timestamp=time.time(), error=error)
