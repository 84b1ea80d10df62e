"""Segmentation data sets (index masks or COCO polygons) and the image preprocessing shared by training and
inference (numpy + OpenCV only).

Layout (the mask export of common labelling tools)::

    DATA/classes.txt                   one defect class per line; class k is line k (background is 0)
    DATA/train/images/<name>.png       [DATA/test/images/<name>.png]
    DATA/train/masks/<name>.png        8-bit, 0 background, k for class k; a good image has an
                                       all-zero mask or none

or, instead of (or beside) ``masks/``, a COCO JSON file with polygon segmentations, as CVAT
("COCO 1.0": ``annotations/instances_default.json``) and Label Studio (``result.json``) export
it: ``DATA/<split>/annotations.json``, ``DATA/<split>/annotations/*.json`` or the one ``*.json``
in ``DATA/<split>/``. Polygons are rasterised with ``cv2.fillPoly``; uncompressed RLE works too.
COCO categories are matched to ``classes.txt`` by name; without ``classes.txt`` the classes
are the categories in id order. A mask file wins over COCO annotations for the same image.

A single-class set whose masks are binary 0/255 (a common export) reads 255 as class 1.

Without ``test/images`` the trainer holds out a share of train and records the names in
the bundle (``split.test_names``), so ``loupe eval`` scores exactly those.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from host import IMAGE_EXTENSIONS, to_rgb8, use_opencv
from host import DataError, read_data_image as read_image  # noqa: F401 (this plugin's data API)
# the one model-input preparation (resize, normalise, NCHW RGB), re-exported under this module's names
from host import DEFAULT_NORMALISATION, normalise, resize_mask, resize_to  # noqa: F401
from host import prepare_images as preprocess  # noqa: F401

use_opencv(cv2)


# ------------------------------------------------------------------ classes


def read_classes(path: Path) -> list[str]:
    """``classes.txt``: one class per line, class k on line k; blank lines only at the end."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    classes = [ln.strip() for ln in lines]
    for i, c in enumerate(classes, 1):
        if not c:
            raise DataError(f"{path}: line {i} is blank; class k is line k, so blank lines would shift the "
                            f"class numbers (remove it)")
    if not classes:
        raise DataError(f"{path}: no classes (expected one defect class name per line)")
    dup = sorted({c for c in classes if classes.count(c) > 1})
    if dup:
        raise DataError(f"{path}: class names {dup} appear more than once")
    if len(classes) > 254:
        raise DataError(f"{path}: {len(classes)} classes; 8-bit masks hold at most 254")
    return classes


# ------------------------------------------------------------------ COCO


@dataclass
class CocoShape:
    cls: int                                  # 1-based class index
    polygons: list[np.ndarray] = field(default_factory=list)   # each (n, 2) float x, y
    rle: dict | None = None


@dataclass
class CocoFile:
    path: Path
    categories: dict[int, str]                # COCO category id -> name
    by_file: dict[str, tuple[int, int, list[dict]]]  # image file basename -> (height, width, annotations)


def find_coco(split_dir: Path) -> Path | None:
    """The COCO JSON of a split folder, when there is one."""
    if (split_dir / "annotations.json").is_file():
        return split_dir / "annotations.json"
    ann = split_dir / "annotations"
    if ann.is_dir():
        js = sorted(ann.glob("*.json"))
        if js:
            return js[0]
    js = sorted(p for p in split_dir.glob("*.json") if p.is_file())
    return js[0] if len(js) == 1 else None


def read_coco(path: Path) -> CocoFile:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable COCO JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a COCO object with 'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise DataError(f"{path}: field {key!r}: missing or not a list (is this a COCO export?)")
    try:
        cats = {int(c["id"]): str(c["name"]) for c in doc["categories"]}
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: field 'categories': each needs an integer 'id' and a 'name'") from None
    images: dict[int, tuple[str, int, int]] = {}
    for i, im in enumerate(doc["images"]):
        try:
            images[int(im["id"])] = (Path(str(im["file_name"]).replace("\\", "/")).name, int(im.get("height") or 0),
                                     int(im.get("width") or 0))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: images[{i}]: needs 'id' and 'file_name'") from None
    by_file: dict[str, tuple[int, int, list[dict]]] = {n: (h, w, []) for n, h, w in images.values()}
    for i, a in enumerate(doc["annotations"]):
        try:
            img = images[int(a["image_id"])]
            int(a["category_id"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: annotations[{i}]: 'image_id' or 'category_id' missing or unknown") from None
        if int(a["category_id"]) not in cats:
            raise DataError(f"{path}: annotations[{i}].category_id: {a['category_id']} is not among the "
                            f"categories {sorted(cats)}")
        by_file[img[0]][2].append({**a, "_index": i})
    return CocoFile(path, cats, by_file)


def coco_classes(coco: CocoFile) -> list[str]:
    return [coco.categories[k] for k in sorted(coco.categories)]


def _rle_decode(rle: dict, h: int, w: int, where: str) -> np.ndarray:
    counts = rle.get("counts")
    if isinstance(counts, str):
        raise DataError(f"{where}: compressed RLE segmentation is not supported; export polygons (CVAT: "
                        f"'COCO 1.0' with polygons, Label Studio: COCO) or index masks")
    if not isinstance(counts, list):
        raise DataError(f"{where}: segmentation: expected polygons or an RLE object")
    flat = np.zeros(h * w, np.uint8)
    pos, val = 0, 0
    for c in counts:
        c = int(c)
        if val:
            flat[pos:pos + c] = 1
        pos += c
        val ^= 1
    return flat.reshape(w, h).T  # COCO RLE runs down the columns


def rasterise(anns: list[dict], shape: tuple[int, int], cat_to_class: dict[int, int], where: str) -> np.ndarray:
    """COCO annotations of one image -> uint8 class-index mask of ``shape`` (later annotations on top)."""
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    for a in anns:
        k = cat_to_class[int(a["category_id"])]
        seg = a.get("segmentation")
        at = f"{where}: annotations[{a['_index']}]"
        if isinstance(seg, list):
            polys = []
            for p in seg:
                pts = np.asarray(p, np.float64).reshape(-1)
                if pts.size < 6 or pts.size % 2:
                    raise DataError(f"{at}.segmentation: a polygon needs at least 3 x,y pairs")
                polys.append(np.round(pts.reshape(-1, 2) * 16).astype(np.int32))
            if polys:
                cv2.fillPoly(mask, polys, int(k), lineType=cv2.LINE_8, shift=4)
        elif isinstance(seg, dict):
            size = seg.get("size") or [h, w]
            m = _rle_decode(seg, int(size[0]), int(size[1]), at)
            if m.shape != (h, w):
                raise DataError(f"{at}.segmentation.size: {list(m.shape)} differs from the image's {[h, w]}")
            mask[m > 0] = k
        elif seg is None and "bbox" in a:
            x, y, bw, bh = (float(v) for v in a["bbox"])
            cv2.rectangle(mask, (int(round(x)), int(round(y))), (int(round(x + bw)) - 1, int(round(y + bh)) - 1),
                          int(k), -1)
        else:
            raise DataError(f"{at}.segmentation: expected a list of polygons or an RLE object")
    return mask


# ------------------------------------------------------------------ data sets


@dataclass
class SegSample:
    name: str
    image: Path
    mask: Path | None = None          # index mask file
    coco: CocoFile | None = None      # or COCO annotations (when no mask file)
    split: str = "train"

    @property
    def labelled_by(self) -> str:
        if self.mask is not None:
            return "mask"
        if self.coco is not None and self.image.name in self.coco.by_file:
            return "coco"
        return "none"


@dataclass
class SegData:
    root: Path
    classes: list[str]                # defect classes; class k (1-based) is classes[k - 1]
    train: list[SegSample]
    test: list[SegSample]
    has_test: bool
    cat_maps: dict[Path, dict[int, int]] = field(default_factory=dict)   # COCO file -> category id -> class

    @property
    def n_out(self) -> int:
        return len(self.classes) + 1

    def load(self, s: SegSample) -> tuple[np.ndarray, np.ndarray]:
        """(image as decoded, uint8 class mask of the same size); DataError names the file and problem."""
        image = read_image(s.image)
        return image, self.load_mask(s, image.shape[:2])

    def load_mask(self, s: SegSample, shape: tuple[int, int]) -> np.ndarray:
        h, w = int(shape[0]), int(shape[1])
        n = len(self.classes)
        if s.mask is not None:
            m = read_image(s.mask)
            if m.ndim == 3:
                if m.shape[2] >= 3 and not (np.array_equal(m[..., 0], m[..., 1]) and
                                            np.array_equal(m[..., 0], m[..., 2])):
                    raise DataError(f"{s.mask}: a colour mask; expected an 8-bit class-index mask (0 background, "
                                    f"k for class k)")
                m = m[..., 0]
            if m.dtype != np.uint8:
                if m.max() > 255:
                    raise DataError(f"{s.mask}: values up to {int(m.max())}; expected 8-bit class indices 0..{n}")
                m = m.astype(np.uint8)
            if m.shape != (h, w):
                raise DataError(f"{s.mask}: mask is {m.shape[1]}x{m.shape[0]} but its image {s.image.name} is "
                                f"{w}x{h}")
            top = int(m.max())
            if top > n:
                if n == 1 and set(np.unique(m).tolist()) <= {0, 255}:
                    return (m > 0).astype(np.uint8)   # binary 0/255 export of a one-class set
                raise DataError(f"{s.mask}: pixel value {top} but classes.txt lists only {n} class(es) "
                                f"(values must be 0..{n})")
            return m
        if s.coco is not None and s.image.name in s.coco.by_file:
            ch, cw, anns = s.coco.by_file[s.image.name]
            if ch and cw and (ch, cw) != (h, w):
                raise DataError(f"{s.coco.path}: image {s.image.name!r} is {w}x{h} but the annotation file says "
                                f"{cw}x{ch}")
            return rasterise(anns, (h, w), self.cat_maps[s.coco.path], str(s.coco.path))
        return np.zeros((h, w), np.uint8)


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _split(root: Path, split: str, coco_files: dict[str, CocoFile]) -> list[SegSample]:
    d = root / split
    images = _images_in(d / "images")
    masks = {p.stem: p for p in _images_in(d / "masks")}
    coco = coco_files.get(split)
    return [SegSample(p.stem, p, masks.get(p.stem), coco, split) for p in images]


def is_segmentation_data(data: str | Path) -> bool:
    """True when ``data`` looks like a segmentation set (classes.txt, or <split>/images beside masks or COCO)."""
    root = Path(data)
    if (root / "classes.txt").is_file() and (root / "train" / "images").is_dir():
        return True
    tr = root / "train"
    return (tr / "images").is_dir() and ((tr / "masks").is_dir() or find_coco(tr) is not None)


def scan(data: str | Path, classes: list[str] | None = None) -> SegData:
    """Find the images, masks and classes of ``data``; DataError with a clear message when the layout is wrong.

    ``classes`` (a trained model's) fixes the class list; the data's own must then match it.
    """
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    if not (root / "train" / "images").is_dir() and not (root / "test" / "images").is_dir():
        raise DataError(f"{root}: expected train/images/ (and train/masks/ or a COCO JSON in train/) for "
                        f"segmentation data")
    coco_files: dict[str, CocoFile] = {}
    for split in ("train", "test"):
        if (root / split).is_dir():
            p = find_coco(root / split)
            if p is not None:
                coco_files[split] = read_coco(p)
    own: list[str] | None = None
    if (root / "classes.txt").is_file():
        own = read_classes(root / "classes.txt")
    elif coco_files:
        first = coco_files.get("train") or next(iter(coco_files.values()))
        own = coco_classes(first)
    if classes is None:
        if own is None:
            raise DataError(f"{root / 'classes.txt'}: not found; list one defect class per line (class k on line "
                            f"k, as the mask value k)")
        classes = own
    elif own is not None and list(own) != list(classes):
        raise DataError(f"{root / 'classes.txt'}: classes {own} differ from the model's {list(classes)}")
    index = {c: i + 1 for i, c in enumerate(classes)}
    cat_maps: dict[Path, dict[int, int]] = {}
    for coco in coco_files.values():
        m = {}
        for cid, name in coco.categories.items():
            if name not in index:
                raise DataError(f"{coco.path}: category {name!r} (id {cid}) is not in classes {list(classes)}")
            m[cid] = index[name]
        cat_maps[coco.path] = m
    train = _split(root, "train", coco_files)
    test = _split(root, "test", coco_files)
    return SegData(root, list(classes), train, test, bool(test), cat_maps)


def eval_samples(data: SegData, split: dict | None) -> tuple[list[SegSample], str]:
    """The images ``loupe eval`` scores: test/ when present, else the trainer's held-out names."""
    if data.has_test:
        return data.test, "test folder"
    names = set((split or {}).get("test_names") or [])
    if names:
        return [s for s in data.train if s.name in names], f"{len(names)} images held out of train by the trainer"
    return data.train, "all train images (no test folder, no held-out split recorded)"
