"""Test tools: ``testsupport.sleep`` (a slow step), ``testsupport.boom`` (raises on bright images),
``testsupport.model_size`` and ``testsupport.engine`` (the inference engine a model step would get)."""
from __future__ import annotations

import time

import numpy as np
from pydantic import Field

from host import ENGINE_CHOICES, InspectTool, ModelRef, Params, ToolOutput, hookimpl, resolve_engine


class SleepParams(Params):
    ms: float = Field(10.0, ge=0, description="milliseconds to sleep per frame")


class Sleep(InspectTool):
    id = "testsupport.sleep"
    description = "sleeps, then reports the image mean"
    Params = SleepParams
    measurements = {"mean": "mean gray level"}

    def inspect(self, image):
        time.sleep(self.params.ms / 1e3)
        return ToolOutput({"mean": float(np.mean(image))})


class BoomParams(Params):
    above: float = Field(128.0, description="raise when the image mean is above this")


class Boom(InspectTool):
    id = "testsupport.boom"
    description = "raises RuntimeError on bright images"
    Params = BoomParams
    measurements = {"mean": "mean gray level"}

    def inspect(self, image):
        m = float(np.mean(image))
        if m > self.params.above:
            raise RuntimeError(f"boom: mean {m:.1f} is above {self.params.above}")
        return ToolOutput({"mean": m})


class ModelSizeParams(Params):
    model: ModelRef = Field(description="any model file or bundle, pinned by sha256")


class ModelSize(InspectTool):
    id = "testsupport.model_size"
    description = "reports the size of its (hash-checked) model file"
    Params = ModelSizeParams
    measurements = {"bytes": "size of the model file"}

    def __init__(self, params, context=None):
        super().__init__(params, context)
        self.size = self.context.resolve(params.model.path).stat().st_size  # loaded once per run

    def inspect(self, image):
        return ToolOutput({"bytes": self.size})


class Engine(InspectTool):
    id = "testsupport.engine"
    description = "reports the inference engine a model step built here would run on"
    measurements = {"engine": "index of the engine in ENGINE_CHOICES"}

    def __init__(self, params, context=None):
        super().__init__(params, context)
        self.engine = ENGINE_CHOICES.index(resolve_engine(self.context.options.get("engine")))

    def inspect(self, image):
        return ToolOutput({"engine": self.engine})


@hookimpl
def loupe_inspect(register):
    register(Sleep)
    register(Boom)
    register(ModelSize)
    register(Engine)
