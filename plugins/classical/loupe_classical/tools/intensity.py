"""Intensity statistics."""
from __future__ import annotations

import cv2
import numpy as np

from host import InspectTool, NoParams, ToolOutput


class Intensity(InspectTool):
    id = "classical.intensity"
    title = "Intensity statistics"
    description = "mean, standard deviation, minimum and maximum gray level"
    Params = NoParams
    measurements = {"mean": "mean gray level", "std": "standard deviation of gray levels",
                    "min": "darkest gray level", "max": "brightest gray level"}

    def inspect(self, image: np.ndarray) -> ToolOutput:
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        mean, std = cv2.meanStdDev(gray)
        lo, hi, _, _ = cv2.minMaxLoc(gray)
        return ToolOutput({"mean": float(mean[0, 0]), "std": float(std[0, 0]), "min": float(lo), "max": float(hi)})
