"""The catalogue: the union of everything plugins registered.

Recipe validation, ``loupe tools``, the CLI's trainer options and the GUI's
parameter forms are all generated from it.
"""
from __future__ import annotations

import inspect as _inspect
import re
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel

from .contracts import (Command, Executor, InspectTool, ModelRuntime, Optimizer, PreprocessTool, Reporter,
                        Source, Trainer)
from .errors import PluginError
from .line import LineAdapter

_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class Entry:
    """A registered class and where it came from."""

    key: str
    cls: type
    plugin: str
    distribution: str
    version: str


# hook name -> (base class, attribute that names the item, whether it must be namespaced)
KINDS: dict[str, tuple[type, str, bool]] = {
    "loupe_acquire": (Source, "scheme", False),
    "loupe_preprocess": (PreprocessTool, "id", True),
    "loupe_inspect": (InspectTool, "id", True),
    "loupe_model_runtime": (ModelRuntime, "task", False),
    "loupe_train": (Trainer, "task", False),
    "loupe_optimize": (Optimizer, "method", False),
    "loupe_report": (Reporter, "scheme", False),
    "loupe_commands": (Command, "name", False),
    "loupe_line_adapter": (LineAdapter, "scheme", False),
    "loupe_executor": (Executor, "name", False),
}


class Catalogue:
    def __init__(self) -> None:
        self.sources: dict[str, Entry] = {}
        self.tools: dict[str, Entry] = {}
        self.runtimes: dict[str, Entry] = {}
        self.trainers: dict[str, Entry] = {}
        self.optimizers: dict[str, Entry] = {}
        self.reporters: dict[str, Entry] = {}
        self.commands: dict[str, Entry] = {}
        self.line_adapters: dict[str, Entry] = {}
        self.executors: dict[str, Entry] = {}
        self._tables = {
            "loupe_acquire": self.sources, "loupe_preprocess": self.tools, "loupe_inspect": self.tools,
            "loupe_model_runtime": self.runtimes, "loupe_train": self.trainers,
            "loupe_optimize": self.optimizers, "loupe_report": self.reporters, "loupe_commands": self.commands,
            "loupe_line_adapter": self.line_adapters,
            "loupe_executor": self.executors,
        }

    @classmethod
    def build(cls, pm) -> "Catalogue":
        """Call every registration hook of ``pm`` once, plugin by plugin."""
        cat = cls()
        origin = {p.name: p for p in pm.load_report.plugins}
        for hook_name in KINDS:
            caller = getattr(pm.hook, hook_name)
            for impl in caller.get_hookimpls():  # registration order
                info = origin.get(impl.plugin_name)
                dist = info.distribution if info else "(unknown)"
                version = info.version if info else ""
                register = cat._registrar(hook_name, impl.plugin_name, dist, version)
                kwargs = {"register": register}
                try:
                    impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(f"plugin {impl.plugin_name!r} ({dist} {version}): "
                                      f"{hook_name} failed: {type(exc).__name__}: {exc}") from exc
        return cat

    def _registrar(self, hook: str, plugin: str, dist: str, version: str) -> Callable[[type], None]:
        base, attr, namespaced = KINDS[hook]
        table = self._tables[hook]
        where = f"plugin {plugin!r} ({dist}{' ' + version if version else ''})"

        def register(item: type) -> None:
            if not (_inspect.isclass(item) and issubclass(item, base)):
                raise PluginError(f"{where}: {hook} registered {item!r}, which is not a {base.__name__} subclass")
            if _inspect.isabstract(item):
                missing = ", ".join(sorted(item.__abstractmethods__))
                raise PluginError(f"{where}: {item.__name__} does not implement {missing}")
            key = getattr(item, attr, None)
            pattern = _ID if namespaced else _NAME
            if not isinstance(key, str) or not pattern.match(key):
                want = "a namespaced id such as 'plugin.tool'" if namespaced else "a lower-case name"
                raise PluginError(f"{where}: {item.__name__}.{attr} = {key!r} is not {want}")
            params = getattr(item, "Params", None)
            if params is not None and not (_inspect.isclass(params) and issubclass(params, BaseModel)):
                raise PluginError(f"{where}: {item.__name__}.Params must be a pydantic model")
            if key in table:
                other = table[key]
                raise PluginError(f"{where}: {attr} {key!r} is already registered by plugin "
                                  f"{other.plugin!r} ({other.distribution})")
            table[key] = Entry(key, item, plugin, dist, version)

        return register

    # ------------------------------------------------------------- queries

    def tool(self, tool_id: str) -> Entry | None:
        return self.tools.get(tool_id)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description of everything registered (``loupe tools --json``)."""

        def params_schema(cls) -> dict[str, Any]:
            p = getattr(cls, "Params", None)
            return p.model_json_schema() if p is not None else {}

        def base(e: Entry) -> dict[str, Any]:
            return {"plugin": e.plugin, "distribution": e.distribution, "version": e.version,
                    "description": (getattr(e.cls, "description", "") or (e.cls.__doc__ or "")).strip().split("\n")[0]}

        return {
            "tools": [dict(id=k, stage=e.cls.stage, title=e.cls.title or k, **base(e),
                           measurements=dict(getattr(e.cls, "measurements", {})),
                           params=params_schema(e.cls)) for k, e in sorted(self.tools.items())],
            "sources": [dict(scheme=k, **base(e), params=params_schema(e.cls)) for k, e in sorted(self.sources.items())],
            "reporters": [dict(scheme=k, **base(e)) for k, e in sorted(self.reporters.items())],
            "trainers": [dict(task=k, **base(e), params=params_schema(e.cls)) for k, e in sorted(self.trainers.items())],
            "runtimes": [dict(task=k, **base(e)) for k, e in sorted(self.runtimes.items())],
            "optimizers": [dict(method=k, **base(e), params=params_schema(e.cls))
                           for k, e in sorted(self.optimizers.items())],
            "commands": [dict(name=k, **base(e)) for k, e in sorted(self.commands.items())],
            "line_adapters": [dict(scheme=k, **base(e), params=params_schema(e.cls))
                              for k, e in sorted(self.line_adapters.items())],
            "executors": [dict(name=k, **base(e)) for k, e in sorted(self.executors.items())],
        }
