"""Write the example's images: plates with four holes (good for job four) and three (good for job three)."""
from pathlib import Path

import cv2
import numpy as np

HOLES = [(40, 40), (120, 40), (40, 90), (120, 90)]


def plate(n_holes: int, shift: int) -> np.ndarray:
    img = np.full((130, 160), 200, np.uint8)
    for x, y in HOLES[:n_holes]:
        cv2.circle(img, (x + shift, y), 12, 30, -1, lineType=cv2.LINE_AA)
    return img


if __name__ == "__main__":
    out = Path(__file__).parent / "images"
    out.mkdir(exist_ok=True)
    for i, n in enumerate([4, 4, 4, 3, 4, 3]):
        cv2.imwrite(str(out / f"plate-{i}.png"), plate(n, i % 3))
