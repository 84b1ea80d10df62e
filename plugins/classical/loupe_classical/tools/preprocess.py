"""Preprocessing tools: image in, image out."""
from __future__ import annotations

import cv2
import numpy as np

from host import NoParams, PreprocessTool


def to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


class Gray(PreprocessTool):
    id = "classical.gray"
    title = "Grayscale"
    description = "convert a colour image to grayscale (gray images pass through)"
    Params = NoParams

    def process(self, image: np.ndarray) -> np.ndarray:
        return to_gray(image)
