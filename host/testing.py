"""pytest helpers for plugin authors (registered as the ``loupe`` pytest plugin).

Fixtures:

``loupe_pm``
    a plugin manager with autoload off: only the host's built-ins.
``register_plugin``
    ``register_plugin(module_or_object, name=None)`` registers a plugin on
    ``loupe_pm`` and unregisters it at teardown; returns the manager.

Helpers:

``run_loupe(*args, cwd=None, env=None, timeout=600)``
    runs the ``loupe`` command line in a subprocess (the installed console
    script next to this Python); returns the ``CompletedProcess`` (text).
``check_tool_contract(tool_cls, image, params=None)``
    builds a tool and runs it once, asserting the contract every tool must keep
    (the result types, declared measurements, input left untouched).
"""
from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .core.contracts import InspectTool, PreprocessTool, StepContext
from .core.manager import LoupePluginManager, create_plugin_manager
from .core.types import Shape, ToolOutput


@pytest.fixture
def loupe_pm() -> LoupePluginManager:
    return create_plugin_manager(autoload=False)


@pytest.fixture
def register_plugin(loupe_pm: LoupePluginManager):
    names: list[str] = []

    def _register(plugin: Any, name: str | None = None) -> LoupePluginManager:
        name = name or getattr(plugin, "__name__", None) or f"test-plugin-{len(names)}"
        loupe_pm.register_plugin(plugin, name=name, distribution="(test)")
        loupe_pm.check_pending()
        names.append(name)
        return loupe_pm

    yield _register
    for name in names:
        if loupe_pm.has_plugin(name):
            loupe_pm.unregister_plugin(name)


def run_loupe(*args: str, cwd: str | Path | None = None, env: dict[str, str] | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``loupe ARGS...`` in a subprocess, as a user would; returns the completed process (text)."""
    exe = Path(sys.executable).with_name("loupe")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "host.cli"]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(cmd + [str(a) for a in args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def check_tool_contract(tool_cls: type, image: np.ndarray, params: dict[str, Any] | None = None,
                        context: StepContext | None = None) -> Any:
    """Build ``tool_cls`` and run it on ``image``; assert the tool contract; return the output."""
    p = tool_cls.Params.model_validate(params or {})
    tool = tool_cls(p, context or StepContext(step="contract"))
    before = image.copy()
    try:
        if issubclass(tool_cls, PreprocessTool):
            out = tool.process(image)
            assert isinstance(out, np.ndarray), f"{tool_cls.id}: process() must return an ndarray"
        else:
            assert issubclass(tool_cls, InspectTool)
            out = tool.inspect(image)
            assert isinstance(out, ToolOutput), f"{tool_cls.id}: inspect() must return a ToolOutput"
            assert isinstance(out.measurements, dict)
            declared = set(tool_cls.measurements)
            if declared:
                # a declared pattern ("*.area": one per model class) is produced when some name matches it
                missing = {d for d in declared - set(out.measurements)
                           if "*" not in d or not fnmatch.filter(out.measurements, d)}
                assert not missing, f"{tool_cls.id}: declared measurements not produced: {sorted(missing)}"
            for s in out.overlays:
                assert isinstance(s, Shape), f"{tool_cls.id}: overlays must be host.Shape objects"
            if out.heatmap is not None:
                assert isinstance(out.heatmap, np.ndarray) and out.heatmap.ndim == 2
        assert np.array_equal(image, before), f"{tool_cls.id}: modified its input image in place"
    finally:
        tool.close()
    return out
