"""Synthetic parts on cluttered backgrounds, with COCO detection annotations.

``make_parts_dataset(out, n_train=40, n_test=100, size=320, seed=0, classes=CLASSES, objects=(3, 8),
scale=(0.08, 0.18))``
writes::

    out/train/images/000.png   out/train/annotations.json
    out/test/images/000.png    out/test/annotations.json

Parts (``CLASSES``), drawn with OpenCV at any rotation, a random scale (``scale``: 8-18 %
of the image side by default), a random finish (bright steel, brass or dark oxide, independent of
the class, so colour is no shortcut), directional shading and a soft drop shadow:

``screw``    a round head and a threaded shaft (long and thin)
``nut``      a hexagon with a round hole
``washer``   a thin ring
``bracket``  an L-shaped plate with a hole

Backgrounds are real photographs from scikit-image's data module (gravel, grass,
brick, wood-like textures...), randomly cropped, scaled, tinted and mixed with
procedural noise, plus clutter: lines, blobs and ring fragments of the parts'
colours, which defeat a plain threshold-and-blob pipeline. Boxes are the exact
extent of each drawn part (its mask), so they are tight. Parts do not overlap
(a placement that would is retried). Deterministic for a seed.

Command line: ``python -m loupe_trainer.detect.samples OUT [--n-train N] [--n-test N] [--size S]``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("screw", "nut", "washer", "bracket")
_FINISHES = ((190, 195, 200), (120, 175, 205), (70, 70, 75), (160, 160, 150))  # BGR steel, brass, oxide, zinc


def _photos() -> list[np.ndarray]:
    """Grey-level texture photographs shipped with scikit-image (no network), BGR uint8."""
    out = []
    try:
        from skimage import data as skd
    except Exception:  # noqa: BLE001 - procedural backgrounds only
        return out
    for name in ("gravel", "grass", "brick", "rough_wall", "camera", "coffee", "rocket", "chelsea", "coins",
                 "moon", "page", "text"):
        fn = getattr(skd, name, None)
        if fn is None:
            continue
        try:
            img = np.asarray(fn())
        except Exception:  # noqa: BLE001 - an image that needs pooch / the network
            continue
        if img.dtype != np.uint8:
            img = np.clip(img * (255.0 if img.max() <= 1 else 1.0), 0, 255).astype(np.uint8)
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else cv2.cvtColor(img[:, :, :3],
                                                                                       cv2.COLOR_RGB2BGR)
        out.append(img)
    return out


def _noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    small = max(2, int(size / scale))
    n = rng.standard_normal((small, small)).astype(np.float32)
    n = cv2.resize(n, (size, size), interpolation=cv2.INTER_CUBIC)
    return n / (np.abs(n).max() + 1e-6)


def _background(rng: np.random.Generator, size: int, photos: list[np.ndarray]) -> np.ndarray:
    if photos and rng.random() < 0.85:
        p = photos[int(rng.integers(len(photos)))]
        s = float(rng.uniform(0.6, 1.6))
        side = int(min(p.shape[0], p.shape[1], max(32, size / s)))
        y = int(rng.integers(0, p.shape[0] - side + 1))
        x = int(rng.integers(0, p.shape[1] - side + 1))
        bg = cv2.resize(p[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        if rng.random() < 0.5:
            bg = bg[:, ::-1]
        g = bg.mean(axis=2, keepdims=True)
        bg = g * 0.6 + bg * 0.4      # mostly grey, a little of the photo's colour
        bg = bg * rng.uniform(0.5, 1.0) + rng.uniform(0, 80)
    else:
        bg = np.repeat((128 + 60 * _noise(rng, size, rng.uniform(4, 40)))[:, :, None], 3, axis=2)
    tint = rng.uniform(0.8, 1.2, 3).astype(np.float32)
    bg = bg * tint + 25 * _noise(rng, size, 60)[:, :, None]
    return np.clip(bg, 0, 255)


def _rot(pts: np.ndarray, angle: float, centre: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    r = pts @ np.array([[c, s], [-s, c]])
    return r + np.asarray(centre)


def _part_mask(cls: str, size: int, cx: float, cy: float, length: float, angle: float) -> np.ndarray:
    """uint8 mask (255 = part) of one part; ``length`` is its longest extent in pixels."""
    m = np.zeros((size, size), np.uint8)
    sh = 4   # sub-pixel precision of the polygon corners
    f = float(1 << sh)

    def poly(p):
        cv2.fillPoly(m, [np.round(_rot(p, angle, (cx, cy)) * f).astype(np.int32)], 255, cv2.LINE_AA, sh)

    def circle(p, r, colour):
        q = _rot(np.asarray([p], np.float64), angle, (cx, cy))[0]
        cv2.circle(m, (int(round(q[0] * f)), int(round(q[1] * f))), int(round(r * f)), colour, -1, cv2.LINE_AA, sh)

    L = length
    if cls == "screw":
        w = 0.13 * L
        poly(np.array([[-0.32 * L, -w / 2], [0.5 * L, -w / 2], [0.5 * L + w / 2, 0], [0.5 * L, w / 2],
                       [-0.32 * L, w / 2]]))
        circle((-0.38 * L, 0), 0.12 * L, 255)
        poly(np.array([[-0.45 * L, -0.15 * L], [-0.38 * L, -0.15 * L], [-0.38 * L, 0.15 * L],
                       [-0.45 * L, 0.15 * L]]))
    elif cls == "nut":
        r = 0.5 * L
        a = np.arange(6) * np.pi / 3
        poly(np.stack([r * np.cos(a), r * np.sin(a)], 1))
        circle((0, 0), 0.24 * L, 0)
    elif cls == "washer":
        circle((0, 0), 0.5 * L, 255)
        circle((0, 0), 0.33 * L, 0)
    elif cls == "bracket":
        t = 0.22 * L
        poly(np.array([[-0.5 * L, -0.3 * L], [0.5 * L, -0.3 * L], [0.5 * L, -0.3 * L + t],
                       [-0.5 * L + t, -0.3 * L + t], [-0.5 * L + t, 0.35 * L], [-0.5 * L, 0.35 * L]]))
        circle((0.3 * L, -0.3 * L + t / 2), 0.06 * L, 0)
    else:
        raise ValueError(f"unknown part class {cls!r}")
    return m


def _shade(rng: np.random.Generator, mask: np.ndarray, cls: str, size: int) -> np.ndarray:
    """The part's colour image (over ``mask``, a window of the scene): a finish, directional shading, edge
    darkening, thread lines for screws; ``size`` is the scene's side."""
    base = np.asarray(_FINISHES[int(rng.integers(len(_FINISHES)))], np.float32) * rng.uniform(0.8, 1.15)
    yy, xx = np.mgrid[0:mask.shape[0], 0:mask.shape[1]].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    grad = (np.cos(a) * xx + np.sin(a) * yy) / size
    grad = 1.0 + 0.5 * (grad - grad[mask > 0].mean() if (mask > 0).any() else grad)
    inner = cv2.erode(mask, np.ones((3, 3), np.uint8))
    edge = (mask > 0) & (inner == 0)
    img = base[None, None, :] * grad[:, :, None]
    img[edge] *= 0.6
    if cls == "screw":
        ys, xs = np.nonzero(mask)
        if len(xs):
            period = max(2.5, 0.02 * size)
            phase = (xx * np.cos(a + 1.3) + yy * np.sin(a + 1.3)) / period
            img *= (1.0 - 0.15 * (np.sin(phase * 2 * np.pi) > 0.6))[:, :, None]
    return np.clip(img, 0, 255)


def _clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    size = img.shape[0]
    for _ in range(int(rng.integers(4, 12))):
        colour = tuple(float(v) for v in (np.asarray(_FINISHES[int(rng.integers(len(_FINISHES)))]) *
                                           rng.uniform(0.7, 1.1)))
        kind = rng.integers(3)
        p = rng.uniform(0, size, 2).astype(int)
        if kind == 0:
            q = p + rng.normal(0, size / 4, 2).astype(int)
            cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in q), colour, int(rng.integers(1, 4)),
                     cv2.LINE_AA)
        elif kind == 1:
            axes = tuple(int(v) for v in rng.uniform(3, size / 14, 2))
            cv2.ellipse(img, tuple(int(v) for v in p), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1,
                        cv2.LINE_AA)
        else:
            r = int(rng.uniform(6, size / 12))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(img, tuple(int(v) for v in p), (r, r), 0, start, start + float(rng.uniform(60, 200)),
                        colour, int(rng.integers(1, 3)), cv2.LINE_AA)


def make_scene(rng: np.random.Generator, size: int, photos: list[np.ndarray], classes=CLASSES,
               objects=(3, 8), scale=(0.08, 0.18)) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    img = _background(rng, size, photos)
    _clutter(rng, img)
    anns: list[tuple[int, list[float]]] = []
    boxes: list[np.ndarray] = []
    n = int(rng.integers(objects[0], objects[1] + 1))
    tries = 0
    while len(anns) < n and tries < 200:
        tries += 1
        c = int(rng.integers(len(classes)))
        length = float(rng.uniform(*scale) * size) * (1.25 if classes[c] == "screw" else 1.0)
        cx, cy = rng.uniform(length * 0.6, size - length * 0.6, 2)
        mask = _part_mask(classes[c], size, cx, cy, length, float(rng.uniform(0, 2 * np.pi)))
        ys, xs = np.nonzero(mask > 127)
        if len(xs) < 20:
            continue
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
        if any(_overlap(box, b) for b in boxes):
            continue
        boxes.append(box)
        # work in a window around the part (shadow offset and blur included): cheap per part
        pad = int(0.06 * size) + 4
        y0, x0 = max(0, int(box[1]) - pad), max(0, int(box[0]) - pad)
        y1, x1 = min(size, int(box[3]) + pad), min(size, int(box[2]) + pad)
        win = mask[y0:y1, x0:x1]
        alpha = (win.astype(np.float32) / 255.0)[:, :, None]
        # soft drop shadow, offset away from the light
        off = rng.normal(0, 0.012 * size, 2) + 0.01 * size
        shadow = cv2.warpAffine(win, np.float32([[1, 0, off[0]], [0, 1, off[1]]]), (x1 - x0, y1 - y0))
        shadow = cv2.GaussianBlur(shadow.astype(np.float32) / 255.0, (0, 0), 0.012 * size + 1)[:, :, None]
        part = img[y0:y1, x0:x1] * (1.0 - 0.45 * shadow)
        img[y0:y1, x0:x1] = part * (1 - alpha) + _shade(rng, win, classes[c], size) * alpha
        anns.append((c, [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]))
    img = img + rng.normal(0, rng.uniform(1, 6), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), anns


def _overlap(a: np.ndarray, b: np.ndarray, margin: float = 2.0) -> bool:
    return not (a[2] + margin < b[0] or b[2] + margin < a[0] or a[3] + margin < b[1] or b[3] + margin < a[1])


def write_split(out: Path, n: int, size: int, rng: np.random.Generator, photos, classes=CLASSES,
                objects=(3, 8), scale=(0.08, 0.18)) -> Path:
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        img, anns = make_scene(rng, size, photos, classes, objects, scale)
        name = f"{i:03d}.png"
        cv2.imwrite(str(out / "images" / name), img)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for c, b in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": c + 1,
                                "bbox": [round(v, 2) for v in b], "area": round(b[2] * b[3], 2), "iscrowd": 0})
    doc = {"images": images, "annotations": annotations,
           "categories": [{"id": k + 1, "name": c, "supercategory": "part"} for k, c in enumerate(classes)]}
    (out / "annotations.json").write_text(json.dumps(doc))
    return out


def make_parts_dataset(out: str | Path, n_train: int = 40, n_test: int = 100, size: int = 320, seed: int = 0,
                       classes=CLASSES, objects=(3, 8), scale=(0.08, 0.18)) -> Path:
    out = Path(out)
    photos = _photos()
    rng = np.random.default_rng(seed)
    write_split(out / "train", n_train, size, rng, photos, classes, objects, scale)
    if n_test:
        write_split(out / "test", n_test, size, np.random.default_rng(seed + 1000), photos, classes, objects, scale)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--n-train", type=int, default=40)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(make_parts_dataset(a.out, a.n_train, a.n_test, a.size, a.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
