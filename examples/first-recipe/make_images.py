"""Write the six sample images of the README's first recipe into a folder (default: ./images).

    python make_images.py [FOLDER]

Each image is a 320 x 240 tray of coins under a lamp. Four are lit normally; ``coins_04.png`` is
under-exposed and ``coins_05.png`` over-exposed, so the recipe's ``light`` step (mean gray level of the
top-left 200 x 150 pixels between 60 and 200) passes four frames and fails two. Needs numpy and OpenCV
(both come with loupe-classical). The output is the same on every run.
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

#: exposure of each image: a gain on the scene's gray levels
EXPOSURE = [1.0, 0.9, 1.1, 0.95, 0.3, 1.5]


def coins(seed: int, gain: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 120 + 25 * np.exp(-((xx - 140) ** 2 + (yy - 100) ** 2) / (2 * 150.0 ** 2))  # the lamp's falloff
    for i in range(7):
        cx, cy = 40 + 40 * i + int(rng.integers(-6, 7)), 70 + 100 * (i % 2) + int(rng.integers(-8, 9))
        r = int(rng.integers(16, 24))
        cv2.circle(img, (cx, cy), r, float(rng.integers(170, 200)), -1, cv2.LINE_AA)   # the coin
        cv2.circle(img, (cx, cy), r - 4, float(rng.integers(140, 165)), 2, cv2.LINE_AA)  # its rim
    img = img * gain + rng.normal(0, 1.5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "images")
    out.mkdir(parents=True, exist_ok=True)
    for i, gain in enumerate(EXPOSURE):
        path = out / f"coins_{i:02d}.png"
        cv2.imwrite(str(path), coins(i, gain))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
