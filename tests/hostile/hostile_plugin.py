"""Hostile test tools and reporters, registered in-process by tests/hostile (and by sigterm_run.py).

Each tool misbehaves in one way on images whose top-left pixel is 255 (the "bad" frames of
the test folder) and behaves on the others, so every case checks that the bad frame gets an
``error`` verdict with its reason while the good frames are inspected normally.
"""
from __future__ import annotations

import time

import numpy as np
from pydantic import Field

from host import InspectTool, NoParams, Params, Reporter, Shape, ToolOutput, hookimpl


def _bad(image) -> bool:
    return int(np.asarray(image).reshape(-1)[0]) == 255


def _good_output(image) -> ToolOutput:
    return ToolOutput({"mean": float(np.mean(image))})


def _tool(tool_id: str, misbehave):
    class T(InspectTool):
        id = tool_id
        description = f"hostile: {tool_id}"
        Params = NoParams
        measurements = {"mean": "mean gray level"}

        def inspect(self, image):
            return misbehave(image) if _bad(image) else _good_output(image)

    T.__name__ = tool_id.split(".")[1]
    return T


def _deep(n: int):
    v: list = []
    for _ in range(n):
        v = [v]
    return v


def _raise(exc):
    def f(image):
        raise exc
    return f


SPINNING = [0]  # how many calls of hostile.spin are looping now


def _hang_python(image):
    SPINNING[0] += 1
    try:
        while True:  # a pure-Python endless loop: given up at the deadline, ended by the runner
            pass
    finally:
        SPINNING[0] -= 1


def _sleep(image):
    time.sleep(10.0)  # blocks in C (no Python to interrupt) far past the test's deadline
    return _good_output(image)


TOOLS = [
    _tool("hostile.none", lambda im: None),
    _tool("hostile.dict", lambda im: {"mean": 1.0}),
    _tool("hostile.int_key", lambda im: ToolOutput({3: 1.0})),
    _tool("hostile.object_value", lambda im: ToolOutput({"mean": object()})),
    _tool("hostile.not_shapes", lambda im: ToolOutput({"mean": 1.0}, overlays=["circle", 3])),
    _tool("hostile.lazy_not_shapes", lambda im: ToolOutput({"mean": 1.0}, overlays=_lazy_junk())),
    _tool("hostile.deep_list", lambda im: ToolOutput({"mean": _deep(5000)})),
    _tool("hostile.bad_heatmap", lambda im: ToolOutput({"mean": 1.0}, heatmap="hot")),
    _tool("hostile.system_exit", _raise(SystemExit(3))),
    _tool("hostile.keyboard_interrupt", _raise(KeyboardInterrupt())),
    _tool("hostile.sleep", _sleep),
    _tool("hostile.spin", _hang_python),
]


def _lazy_junk():
    from host import LazyShapes

    return LazyShapes(lambda: [Shape("point", [(1, 1)]), "junk", Shape("point", [("x", None)])])


class FormulaTool(InspectTool):
    id = "hostile.formula"
    description = "a text measurement a spreadsheet would run"
    Params = NoParams
    measurements = {"label": "text"}

    def inspect(self, image):
        return ToolOutput({"label": "=HYPERLINK(\"http://x\",\"y\")" if _bad(image) else "-ok"})


class MeasureParams(Params):
    score: float = 0.0
    count: int = 0
    label: str = "good"


class MeasureTool(InspectTool):
    """Fixed measurements, for the failure-reason wording."""

    id = "hostile.measure"
    description = "fixed measurements"
    Params = MeasureParams
    measurements = {"score": "a score", "count": "a count", "label": "a class"}

    def inspect(self, image):
        p = self.params
        return ToolOutput({"score": p.score, "count": p.count, "label": p.label})


class PeakTool(InspectTool):
    """A point and a box on the brightest pixel, in the coordinates of the image it is given."""

    id = "hostile.peak"
    description = "marks the brightest pixel"
    Params = NoParams
    measurements = {"x": "x", "y": "y"}

    def inspect(self, image):
        g = image if image.ndim == 2 else image.max(axis=2)
        y, x = np.unravel_index(int(np.argmax(g)), g.shape)
        return ToolOutput({"x": int(x), "y": int(y)},
                          overlays=[Shape("point", [(float(x), float(y))]),
                                    Shape("rect", [(x - 2.0, y - 2.0), (x + 2.0, y + 2.0)])])


class FailingReporter(Reporter):
    """Raises on every second frame it is given."""

    scheme = "failing"
    description = "raises on every second write"

    def open(self):
        self.n = 0

    def write(self, result):
        self.n += 1
        if self.n % 2 == 0:
            raise ValueError(f"cannot write frame {self.n}")


class HostilePlugin:
    @hookimpl
    def loupe_inspect(self, register):
        for t in TOOLS:
            register(t)
        register(FormulaTool)
        register(MeasureTool)
        register(PeakTool)

    @hookimpl
    def loupe_report(self, register):
        register(FailingReporter)


def plugin_manager():
    """A manager with the host's built-ins, the classical plugin and the hostile tools."""
    import loupe_classical.plugin as classical

    from host import create_plugin_manager

    pm = create_plugin_manager(autoload=False)
    pm.register_plugin(classical, name="classical", distribution="loupe-classical")
    pm.register_plugin(HostilePlugin(), name="hostile", distribution="(tests)")
    pm.check_pending()
    return pm
