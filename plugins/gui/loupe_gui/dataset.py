"""Dataset analysis for the trainer workspace: class counts per split and the image-size distribution.

When the installed ``dataset`` command (registered by loupe-trainer through
``loupe_commands``) comes with a module-level ``analyze(root, progress)``, the
GUI calls it, so the GUI and ``loupe dataset analyze`` report the same counts,
sizes, corrupt files and duplicates. Without it the GUI reads the folders
itself (OpenCV decodes a sample of images for their sizes). Layouts: class
folders (``<class>/``), split class folders (``train/<class>/``,
``test/<class>/``) and MVTec AD (``train/good``, ``test/<type>``;
``ground_truth/`` is skipped).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path

from host import IMAGE_EXTENSIONS, read_image  # the host's one reader and extension list
SPLITS = ("train", "val", "test")
UNLABELLED = "unlabelled"   # DATA/unlabelled/: images without a class


@dataclass
class DatasetSummary:
    root: Path
    splits: dict[str, dict[str, int]] = field(default_factory=dict)     # split -> class -> count
    sizes: dict[tuple[int, int], int] = field(default_factory=dict)     # (w, h) -> images (sampled)
    sampled: int = 0
    unreadable: list[str] = field(default_factory=list)
    files: dict[str, list[Path]] = field(default_factory=dict)          # "split/class" -> files
    duplicates: int = 0
    unlabelled: int = 0                                                 # images under unlabelled/ (no class)
    source: str = "gui"                                                 # who analysed: "gui" or the command's module

    @property
    def classes(self) -> list[str]:
        seen: list[str] = []
        for counts in self.splits.values():
            for c in counts:
                if c not in seen:
                    seen.append(c)
        return seen

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.splits.values())


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def analyze_with(catalogue, root: str | Path, progress=None) -> DatasetSummary:
    """Use the ``dataset`` command's own analysis when it has one, else :func:`analyze`."""
    import importlib

    entry = catalogue.commands.get("dataset") if catalogue is not None else None
    fn = None
    if entry is not None:
        try:
            fn = getattr(importlib.import_module(entry.cls.__module__), "analyze", None)
        except ImportError:
            fn = None
    if fn is None:
        return analyze(root, progress=progress)
    root = Path(root)
    # the command's analysis reports progress as a plain callable(done, total)
    a = fn(root, progress=(lambda done, total: progress.update("analyse", done, total)) if progress else None)
    summary = DatasetSummary(root, source=entry.cls.__module__)
    for split, counts in a.counts().items():
        if split == "ground_truth":
            continue
        if split == UNLABELLED:  # no class: the classifier pseudo-labels them
            summary.unlabelled = sum(counts.values())
            continue
        summary.splits["all" if split == "-" else split] = dict(counts)
    summary.sizes = {tuple(k): int(v) for k, v in a.sizes().items()}
    summary.sampled = len(a.readable)
    summary.unreadable = [c["file"] for c in a.corrupt()]
    summary.duplicates = len(a.duplicates())
    if not summary.splits:
        from host import UsageError

        raise UsageError(f"{root}: no class folders with images (expected <class>/ or train/<class>/)")
    return summary


def analyze(root: str | Path, max_decode: int = 300, progress=None) -> DatasetSummary:
    """Count images per split and class; decode up to ``max_decode`` images (evenly spread) for their sizes."""
    import cv2
    import numpy as np

    from host import use_opencv

    use_opencv(cv2)

    from host import UsageError

    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: data folder not found")
    summary = DatasetSummary(root)
    split_dirs = [root / s for s in SPLITS if (root / s).is_dir()]
    layout = [(d.name, d) for d in split_dirs] if split_dirs else [("all", root)]
    if (root / UNLABELLED).is_dir():
        summary.unlabelled = len(_images(root / UNLABELLED))
    for split, d in layout:
        counts: dict[str, int] = {}
        for cdir in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if cdir.name == "ground_truth" or (d == root and cdir.name == UNLABELLED):
                continue
            files = _images(cdir)
            if files:
                counts[cdir.name] = len(files)
                summary.files[f"{split}/{cdir.name}"] = files
        if counts:
            summary.splits[split] = counts
    if not summary.splits:
        raise UsageError(f"{root}: no class folders with images (expected <class>/ or train/<class>/)")
    every = [f for files in summary.files.values() for f in files]
    pick = every if len(every) <= max_decode else [every[int(i)] for i in np.linspace(0, len(every) - 1, max_decode)]
    sizes: collections.Counter = collections.Counter()
    for k, f in enumerate(pick):
        try:  # the host's one reader (header budget, then OpenCV)
            img = read_image(f)
        except (ValueError, OSError):
            img = None
        if img is None:
            summary.unreadable.append(str(f))
        else:
            sizes[(int(img.shape[1]), int(img.shape[0]))] += 1
        if progress is not None and (k % 25 == 0 or k == len(pick) - 1):
            progress.update("analyse", k + 1, len(pick))
    summary.sizes = dict(sizes)
    summary.sampled = len(pick)
    return summary
