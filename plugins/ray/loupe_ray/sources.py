"""Sources at archive scale: paths are streamed, never all held in memory at once.

* ``manifest:FILE.csv`` / ``manifest:FILE.parquet``: a table with a path column (``path``
  by default) and optionally a label column; relative paths resolve against the manifest's
  folder. CSV is read with pyarrow's streaming reader, Parquet batch by batch.
* ``archive:DIR`` (``archive:DIR/*.png``): a folder tree walked directory by directory
  (``os.scandir``), files sorted within each directory. Memory is bounded by the largest
  single directory, not by the archive (``folder:`` sorts the whole listing first).

Both also serve the Ray executor, which asks them only for ``(index, path, label)`` rows
(``iter_paths``) and reads the images in its workers. Keys are the files' paths, as for
``folder:``, so ``--resume`` works the same way.
"""
from __future__ import annotations

import fnmatch
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
from pydantic import Field

from host import IMAGE_EXTENSIONS, Frame, Source, SourceParams, UsageError, read_image, use_opencv

use_opencv(cv2)  # the host's one image reader decodes with OpenCV (header budgets checked first)
_GLOB_CHARS = set("*?[")


def read_frame(index: int, path: str, source: str, label: Any = None) -> Frame:
    """A frame for ``path``; a file that cannot be read becomes an error frame (image None)."""
    try:
        image, error = read_image(path), None
    except (ValueError, OSError, cv2.error) as exc:
        image, error = None, str(exc)
    meta = {} if label is None else {"label": label}
    return Frame(image=image, source=source, index=index, path=path, timestamp=time.time(), error=error, meta=meta)


class _PathSource(Source):
    """A source that can list its frames as paths without decoding them."""

    name: str

    def iter_paths(self) -> Iterator[tuple[int, str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def frames(self, skip: Callable[[str], bool] | None = None) -> Iterator[Frame]:
        for index, path, label in self.iter_paths():
            if skip is not None and skip(path):
                continue
            yield read_frame(index, path, self.name, label)


# -------------------------------------------------------------------- archive


class ArchiveParams(SourceParams):
    pattern: str = Field("*", description="glob pattern for file names, e.g. '*.png' (archive:DIR/*.png works too)")
    recursive: bool = Field(True, description="walk sub-folders too (the pattern applies at every depth)")


def walk_files(root: Path, pattern: str, recursive: bool, stop_file: str | None = None) -> Iterator[str]:
    """Image files under ``root`` matching ``pattern``, streamed: one directory listed at a time.

    Files come sorted within each directory, then each sub-directory in name order
    (depth first). Only one directory's names are in memory at a time per level.
    """
    if root.is_file():
        yield str(root)
        return
    stack = [str(root)]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=True)) for e in it]
        except OSError:
            continue
        entries.sort()
        subdirs = []
        for name, is_dir in entries:
            if is_dir:
                subdirs.append(os.path.join(d, name))
            elif (name.lower().endswith(IMAGE_EXTENSIONS) and fnmatch.fnmatch(name, pattern)
                  and (stop_file is None or name != stop_file)):
                yield os.path.join(d, name)
        if recursive:
            stack.extend(reversed(subdirs))


def split_pattern(target: str, pattern: str) -> tuple[str, str]:
    """``images/*.png`` -> (``images``, ``*.png``), as ``folder:`` reads it."""
    if any(ch in _GLOB_CHARS for ch in target):
        head, tail = os.path.split(target)
        if not any(ch in _GLOB_CHARS for ch in head):
            return head or ".", tail
    return target, pattern


class ArchiveSource(_PathSource):
    """A folder tree of image files, streamed directory by directory (archives of millions of files)."""

    scheme = "archive"
    description = ("image files under a folder tree, streamed one directory at a time (never the whole listing "
                   "in memory); glob pattern; for archives of millions of files")
    Params = ArchiveParams

    def __init__(self, params, context=None):
        super().__init__(params, context)
        target, self._pattern = split_pattern(self.params.target, self.params.pattern)
        self._root = self.context.resolve(target)
        self.name = f"{self.scheme}:{self.params.target}"
        if not self._root.exists():
            raise UsageError(f"source {self.name}: folder not found ({self._root})")

    def iter_paths(self) -> Iterator[tuple[int, str, Any]]:
        for i, path in enumerate(walk_files(self._root, self._pattern, self.params.recursive)):
            yield i, path, None


# -------------------------------------------------------------------- manifest


class ManifestParams(SourceParams):
    path_column: str = Field("path", description="the column holding image paths (relative to the manifest's "
                                                 "folder, or absolute)")
    label_column: str | None = Field(None, description="an optional column of labels (kept in the frame's meta)")
    batch_rows: int = Field(65536, ge=1, le=10_000_000, description="rows read at a time")


class ManifestSource(_PathSource):
    """Image paths listed in a CSV or Parquet manifest, read in batches (millions of rows)."""

    scheme = "manifest"
    description = ("image paths listed in a CSV or Parquet file (a path column, optionally a label column), "
                   "streamed in batches")
    Params = ManifestParams

    def __init__(self, params, context=None):
        super().__init__(params, context)
        self._file = self.context.resolve(self.params.target)
        self.name = f"{self.scheme}:{self.params.target}"
        if not self._file.is_file():
            raise UsageError(f"source {self.name}: manifest file not found ({self._file})")
        suffix = self._file.suffix.lower()
        if suffix not in (".csv", ".parquet", ".pq"):
            raise UsageError(f"source {self.name}: a manifest is a .csv or .parquet file")
        self._parquet = suffix != ".csv"
        names = self._columns()
        for field, col in (("path_column", self.params.path_column), ("label_column", self.params.label_column)):
            if col is not None and col not in names:
                raise UsageError(f"source {self.name}: {field}: column {col!r} not in the manifest "
                                 f"(columns: {', '.join(names)})")

    def _columns(self) -> list[str]:
        if self._parquet:
            import pyarrow.parquet as pq

            try:
                return list(pq.ParquetFile(str(self._file)).schema_arrow.names)
            except Exception as exc:
                raise UsageError(f"source {self.name}: cannot read the Parquet file: {exc}") from None
        import csv

        with open(self._file, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
        if not header:
            raise UsageError(f"source {self.name}: the CSV file has no header row")
        return header

    def _batches(self) -> Iterator[tuple[list, list | None]]:
        cols = [self.params.path_column] + ([self.params.label_column] if self.params.label_column else [])
        if self._parquet:
            import pyarrow.parquet as pq

            batches = pq.ParquetFile(str(self._file)).iter_batches(batch_size=self.params.batch_rows, columns=cols)
        else:
            import pyarrow as pa
            import pyarrow.csv as pacsv

            types = {c: pa.string() for c in cols}
            batches = pacsv.open_csv(str(self._file),
                                     read_options=pacsv.ReadOptions(block_size=1 << 22),
                                     convert_options=pacsv.ConvertOptions(include_columns=cols,
                                                                          column_types=types))
        for b in batches:
            paths = b.column(0).to_pylist()
            labels = b.column(1).to_pylist() if len(cols) > 1 else None
            yield paths, labels

    def iter_paths(self) -> Iterator[tuple[int, str, Any]]:
        base = self._file.parent
        i = 0
        for paths, labels in self._batches():
            for j, p in enumerate(paths):
                if p is None or p == "":
                    raise UsageError(f"source {self.name}: row {i + 1}: empty {self.params.path_column!r}")
                path = p if os.path.isabs(p) else os.path.join(base, p)
                yield i, path, (labels[j] if labels is not None else None)
                i += 1
