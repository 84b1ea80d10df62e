"""Hook implementations of the example plugin: one inspection tool."""
from __future__ import annotations

import numpy as np
from pydantic import Field

from host import InspectTool, Params, Shape, ToolOutput, hookimpl


class DarkFractionParams(Params):
    level: int = Field(60, ge=0, le=65535, description="gray level below which a pixel counts as dark")


class DarkFraction(InspectTool):
    """Fraction of dark pixels: a quick check for dirt, holes or missing parts."""

    id = "example.dark_fraction"
    title = "Dark fraction"
    description = "fraction of pixels darker than a level"
    Params = DarkFractionParams
    measurements = {"dark_fraction": "share of pixels below the level (0..1)",
                    "dark_pixels": "number of pixels below the level"}

    def inspect(self, image: np.ndarray) -> ToolOutput:
        gray = image if image.ndim == 2 else image.mean(axis=2)
        dark = int(np.count_nonzero(gray < self.params.level))
        h, w = gray.shape[:2]
        frac = dark / float(h * w)
        return ToolOutput({"dark_fraction": frac, "dark_pixels": dark},
                          overlays=[Shape("text", [(4.0, 16.0)], label=f"dark {frac:.1%}")])


@hookimpl
def loupe_inspect(register):
    register(DarkFraction)
