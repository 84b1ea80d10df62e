"""Detection data sets: COCO JSON and the YOLO txt layout; images and model inputs (numpy + OpenCV only).

Layouts (``scan`` finds which one DATA has)::

    COCO (what CVAT and Label Studio export)     YOLO
    DATA/train/annotations.json                  DATA/classes.txt        (or DATA/train/classes.txt)
    DATA/train/images/*.png                      DATA/train/images/*.png
    DATA/test/annotations.json   (optional)      DATA/train/labels/*.txt (one "class cx cy w h" line per box,
    DATA/test/images/*.png                                                 normalised to 0..1)
                                                 DATA/test/images, DATA/test/labels   (optional)

A single split without ``train/`` (``DATA/annotations.json`` + ``DATA/images/``, or
``DATA/images`` + ``DATA/labels``) is read as the training split. COCO ``file_name`` is
resolved against ``images/``, then the split folder, then by its base name in ``images/``.

Boxes are kept as read (``Sample.raw``, pixel xywh for COCO, normalised cxcywh for
YOLO) and turned into pixel ``x1, y1, x2, y2`` for a given image size by
``Sample.boxes_xyxy``; ``outside`` lists boxes that reach beyond their image.
Problems raise ``DataError`` naming the file and the field.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from host import IMAGE_EXTENSIONS, to_rgb8, use_opencv
from host import DataError, read_data_image as read_image  # noqa: F401 (this plugin's data API)
# the one model-input preparation (resize, normalise, NCHW RGB), re-exported under this module's names
from host import DEFAULT_NORMALISATION, normalise, resize_to  # noqa: F401
from host import prepare_images as preprocess  # noqa: F401

use_opencv(cv2)


# -------------------------------------------------------------- data sets


@dataclass
class Sample:
    image: Path
    name: str                      # path relative to the data root (stable id for splits)
    labels: np.ndarray             # [N] int class indices
    raw: np.ndarray                # [N, 4] boxes as stored: COCO pixel xywh, YOLO normalised cxcywh
    fmt: str                       # "coco" or "yolo"
    source: Path                   # the annotation file (for messages)
    size: tuple[int, int] | None = None   # (height, width) declared by the annotation, if any

    def boxes_xyxy(self, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Pixel boxes [N, 4] x1, y1, x2, y2 (not clipped). ``shape``: the image's (height, width)."""
        if len(self.raw) == 0:
            return np.zeros((0, 4), np.float32)
        r = self.raw.astype(np.float64)
        if self.fmt == "coco":
            b = np.stack([r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]], 1)
        else:
            hw = shape or self.size
            if hw is None:
                raise ValueError("YOLO boxes need the image size")
            h, w = hw
            b = np.stack([(r[:, 0] - r[:, 2] / 2) * w, (r[:, 1] - r[:, 3] / 2) * h,
                          (r[:, 0] + r[:, 2] / 2) * w, (r[:, 1] + r[:, 3] / 2) * h], 1)
        return b.astype(np.float32)

    def outside(self, shape: tuple[int, int], tol: float = 0.5) -> list[int]:
        """Indices of boxes reaching more than ``tol`` pixels beyond the image (height, width)."""
        b = self.boxes_xyxy(shape)
        h, w = shape
        bad = (b[:, 0] < -tol) | (b[:, 1] < -tol) | (b[:, 2] > w + tol) | (b[:, 3] > h + tol)
        return [int(i) for i in np.flatnonzero(bad)]


@dataclass
class DetectionSet:
    root: Path
    layout: str                    # "coco" or "yolo"
    classes: list[str]
    train: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)
    has_test: bool = False
    warnings: list[str] = field(default_factory=list)


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def layout_of(root: Path) -> str | None:
    """``"coco"``, ``"yolo"`` or ``None`` (not a detection data set)."""
    root = Path(root)
    for split in (root / "train", root):
        if (split / "annotations.json").is_file() and _is_detection_coco(split / "annotations.json"):
            return "coco"
        if (split / "labels").is_dir() and (split / "images").is_dir():
            return "yolo"
    return None


def _is_detection_coco(path: Path) -> bool:
    """A COCO file with boxes (``bbox``) and no polygon / RLE masks (those are segmentation sets)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        anns = doc.get("annotations") or []
    except (OSError, ValueError, AttributeError):
        return True  # let scan report what is wrong with it
    if not anns:
        return True
    return any(isinstance(a, dict) and "bbox" in a and not a.get("segmentation") for a in anns)


def is_detection_data(root: Path) -> bool:
    return layout_of(Path(root)) is not None


def _split_dirs(root: Path) -> tuple[Path, Path | None]:
    if (root / "train").is_dir():
        return root / "train", (root / "test" if (root / "test").is_dir() else None)
    return root, None


def scan(root: str | Path, classes: list[str] | None = None) -> DetectionSet:
    """Read a detection data set (COCO or YOLO); ``classes`` (a bundle's) fixes the class order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    layout = layout_of(root)
    if layout is None:
        raise DataError(f"{root}: not a detection data set: expected train/annotations.json beside train/images/ "
                        f"(COCO) or train/images/ + train/labels/ + classes.txt (YOLO)")
    tr, te = _split_dirs(root)
    ds = DetectionSet(root, layout, list(classes) if classes else [])
    if layout == "coco":
        ds.train = _read_coco(root, tr, ds, fixed=bool(classes))
        if te is not None and (te / "annotations.json").is_file():
            ds.test = _read_coco(root, te, ds, fixed=True)
            ds.has_test = True
    else:
        ds.classes = list(classes) if classes else _yolo_classes(root, tr)
        ds.train = _read_yolo(root, tr, ds)
        if te is not None and (te / "labels").is_dir():
            ds.test = _read_yolo(root, te, ds)
            ds.has_test = True
    if not ds.train:
        raise DataError(f"{tr}: no annotated training images")
    if not ds.classes:
        raise DataError(f"{root}: no classes (COCO 'categories' or YOLO classes.txt)")
    return ds


def _read_coco(root: Path, split: Path, ds: DetectionSet, fixed: bool) -> list[Sample]:
    path = split / "annotations.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a JSON object with 'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise DataError(f"{path}: field '{key}' is missing or not a list")
    cat_name: dict[Any, str] = {}
    for k, c in enumerate(doc["categories"]):
        if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("name"), str):
            raise DataError(f"{path}: categories[{k}] needs an 'id' and a string 'name'")
        cat_name[c["id"]] = c["name"]
    names_by_id = [cat_name[i] for i in sorted(cat_name, key=lambda v: (str(type(v)), v))]
    if not fixed:
        ds.classes = names_by_id
    index = {c: i for i, c in enumerate(ds.classes)}
    # categories unknown to the model do no harm unless a box uses one (an error below)
    per_image: dict[Any, list[tuple[int, list[float]]]] = {}
    for k, a in enumerate(doc["annotations"]):
        where = f"{path}: annotations[{k}]"
        if not isinstance(a, dict):
            raise DataError(f"{where}: not an object")
        if "image_id" not in a:
            raise DataError(f"{where}: field 'image_id' is missing")
        if a.get("category_id") not in cat_name:
            raise DataError(f"{where}: field 'category_id' ({a.get('category_id')!r}) is not among the categories")
        bbox = a.get("bbox")
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            raise DataError(f"{where}: field 'bbox' must be [x, y, width, height] numbers, got {bbox!r}")
        if bbox[2] <= 0 or bbox[3] <= 0:
            raise DataError(f"{where}: field 'bbox' has a width or height <= 0: {bbox}")
        name = cat_name[a["category_id"]]
        if name not in index:
            raise DataError(f"{where}: category {name!r} is not one of the model's classes {ds.classes}")
        if a.get("iscrowd"):
            continue
        per_image.setdefault(a["image_id"], []).append((index[name], [float(v) for v in bbox]))
    out: list[Sample] = []
    seen_ids = set()
    for k, im in enumerate(doc["images"]):
        where = f"{path}: images[{k}]"
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise DataError(f"{where}: needs an 'id' and a string 'file_name'")
        seen_ids.add(im["id"])
        file = _resolve(split, im["file_name"])
        if file is None:
            raise DataError(f"{where}: field 'file_name': image {im['file_name']!r} not found under "
                            f"{split / 'images'}")
        anns = per_image.get(im["id"], [])
        size = None
        if isinstance(im.get("width"), (int, float)) and isinstance(im.get("height"), (int, float)):
            size = (int(im["height"]), int(im["width"]))
        out.append(Sample(file, file.relative_to(root).as_posix(), np.array([c for c, _ in anns], np.int64),
                          np.array([b for _, b in anns], np.float64).reshape(-1, 4), "coco", path, size))
    orphans = [i for i in per_image if i not in seen_ids]
    if orphans:
        raise DataError(f"{path}: annotations refer to image_id {orphans[:5]} not listed in 'images'")
    return out


def _resolve(split: Path, file_name: str) -> Path | None:
    for cand in (split / "images" / file_name, split / file_name, split / "images" / Path(file_name).name):
        if cand.is_file():
            return cand
    return None


def _yolo_classes(root: Path, split: Path) -> list[str]:
    for p in (root / "classes.txt", split / "classes.txt", root / "obj.names"):
        if p.is_file():
            names = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
            if not names:
                raise DataError(f"{p}: no class names (one per line)")
            return names
    raise DataError(f"{root}: YOLO layout without classes.txt (one class name per line, line k = class k)")


def _read_yolo(root: Path, split: Path, ds: DetectionSet) -> list[Sample]:
    out = []
    for img in _images_in(split / "images"):
        rel = img.relative_to(split / "images").with_suffix(".txt")
        lab = split / "labels" / rel
        labels, boxes = [], []
        if lab.is_file():
            for ln, line in enumerate(lab.read_text(encoding="utf-8").splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 5:
                    raise DataError(f"{lab}: line {ln}: expected 'class cx cy w h', got {line.strip()!r}")
                try:
                    c = int(parts[0])
                    v = [float(x) for x in parts[1:]]
                except ValueError:
                    raise DataError(f"{lab}: line {ln}: class must be an integer and cx cy w h numbers, got "
                                    f"{line.strip()!r}") from None
                if not 0 <= c < len(ds.classes):
                    raise DataError(f"{lab}: line {ln}: class {c} is not in classes.txt (0..{len(ds.classes) - 1})")
                if v[2] <= 0 or v[3] <= 0:
                    raise DataError(f"{lab}: line {ln}: width and height must be > 0, got {line.strip()!r}")
                labels.append(c)
                boxes.append(v)
        out.append(Sample(img, img.relative_to(root).as_posix(), np.array(labels, np.int64),
                          np.array(boxes, np.float64).reshape(-1, 4), "yolo", lab))
    return out


def eval_samples(ds: DetectionSet, split_meta: dict | None) -> tuple[list[Sample], str]:
    """The images to evaluate on: test/, or the share of train the trainer held out (by name)."""
    if ds.has_test and ds.test:
        return ds.test, "test"
    names = set((split_meta or {}).get("test_names") or [])
    if names:
        return [s for s in ds.train if s.name in names], "held-out share of train"
    return [], "none"


def load(sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB uint8 image, pixel boxes clipped to the image [N, 4], labels [N]); degenerate boxes dropped."""
    rgb = to_rgb8(read_image(sample.image))
    h, w = rgb.shape[:2]
    b = sample.boxes_xyxy((h, w))
    if len(b):
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
    keep = (b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)
    return rgb, b[keep], sample.labels[keep]
