"""The catalogue: the union of everything plugins registered.

Recipe validation, ``loupe tools``, the CLI's trainer options and the GUI's
parameter forms are all generated from it.
"""
from __future__ import annotations

import inspect as _inspect
import logging
import os
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


def _precedence(entry: "Entry", key: str) -> int:
    """Who keeps an id two plugins register: the owner of its namespace, then the host's own plugins."""
    ns = key.split(".", 1)[0] if "." in key else None
    if ns is not None and (entry.plugin == ns or entry.plugin.endswith(f"_{ns}")
                           or entry.plugin.rsplit(".", 1)[-1] == ns):
        return 2
    if entry.distribution == "loupe-host":
        return 1
    return 0


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
    """Everything plugins registered. ``failures`` maps a plugin's name to why it was left out
    (its registration hook raised, registered something invalid, or took an id another
    plugin owns); the others' registrations are unaffected."""

    def __init__(self) -> None:
        self.sources: dict[str, Entry] = {}
        self.tools: dict[str, Entry] = {}
        self.runtimes: dict[str, Entry] = {}
        self.trainers: dict[str, Entry] = {}
        self.optimizers: dict[str, Entry] = {}
        self.reporters: dict[str, Entry] = {}
        self.commands: dict[str, Entry] = {}
        self.failures: dict[str, str] = {}
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
    def build(cls, pm, strict: bool = False) -> "Catalogue":
        """Call every registration hook of ``pm`` once, plugin by plugin.

        A plugin whose hook raises or registers something invalid is left out as a
        whole (recorded in ``failures``); with ``strict`` its ``PluginError`` is raised
        instead. When two plugins register the same id, the plugin that owns the id's
        namespace (``classical`` for ``classical.blob``, also ``dl_anomaly`` for
        ``anomaly.*``) keeps it, then the host's own plugins, then the first loaded.
        """
        cat = cls()
        origin = {p.name: p for p in pm.load_report.plugins}
        trace = logging.getLogger("loupe.hooks") if os.environ.get("LOUPE_TRACE_HOOKS") else None
        per_plugin: dict[str, list[tuple[str, Any]]] = {}
        for hook_name in KINDS:
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                per_plugin.setdefault(impl.plugin_name, []).append((hook_name, impl))
        rank = {name: i for i, name in enumerate(origin)}
        for plugin in sorted(per_plugin, key=lambda n: rank.get(n, len(rank))):
            info = origin.get(plugin)
            dist = info.distribution if info else "(unknown)"
            version = info.version if info else ""
            staged: list[tuple[str, str, Entry]] = []
            try:
                for hook_name, impl in per_plugin[plugin]:
                    register = cat._registrar(hook_name, plugin, dist, version, staged)
                    kwargs = {"register": register}
                    before = len(staged)
                    try:
                        impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
                    except PluginError:
                        raise
                    except BaseException as exc:  # noqa: BLE001 - a plugin's bug must not stop the host
                        if isinstance(exc, KeyboardInterrupt):
                            raise
                        raise PluginError(f"plugin {plugin!r} ({dist} {version}): {hook_name} failed: "
                                          f"{type(exc).__name__}: {exc}") from exc
                    if trace is not None:
                        trace.info("%s [plugin %s] registered %s", hook_name, plugin,
                                   ", ".join(k for _, k, _ in staged[before:]) or "nothing")
            except PluginError as exc:
                if strict:
                    raise
                cat.failures[plugin] = str(exc)
                if trace is not None:
                    trace.info("plugin %s left out: %s", plugin, exc)
                continue
            cat._merge(plugin, staged, strict)
        return cat

    def _merge(self, plugin: str, staged: list[tuple[str, str, "Entry"]], strict: bool) -> None:
        for hook, key, entry in staged:  # a duplicate decides who keeps the id, before anything is added
            other = self._tables[hook].get(key)
            if other is None or other.plugin == plugin:
                continue
            attr = KINDS[hook][1]
            if _precedence(other, key) >= _precedence(entry, key):
                msg = (f"plugin {plugin!r} ({entry.distribution}{' ' + entry.version if entry.version else ''}): "
                       f"{attr} {key!r} is already registered by plugin {other.plugin!r} ({other.distribution})")
                if strict:
                    raise PluginError(msg)
                self.failures[plugin] = msg
                return
            msg = (f"plugin {other.plugin!r} ({other.distribution}{' ' + other.version if other.version else ''}): "
                   f"{attr} {key!r} belongs to plugin {plugin!r} ({entry.distribution})")
            if strict:
                raise PluginError(msg)
            self._evict(other.plugin, msg)
        for hook, key, entry in staged:
            self._tables[hook][key] = entry

    def _evict(self, plugin: str, reason: str) -> None:
        for table in self._tables.values():
            for key in [k for k, e in table.items() if e.plugin == plugin]:
                del table[key]
        self.failures[plugin] = reason

    def _registrar(self, hook: str, plugin: str, dist: str, version: str,
                   staged: list[tuple[str, str, "Entry"]]) -> Callable[[type], None]:
        base, attr, namespaced = KINDS[hook]
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
            table = self._tables[hook]
            if any(k == key and self._tables[h] is table for h, k, _ in staged):
                raise PluginError(f"{where}: {attr} {key!r} is registered twice")
            staged.append((hook, key, Entry(key, item, plugin, dist, version)))

        return register

    # ------------------------------------------------------------- queries

    def tool(self, tool_id: str) -> Entry | None:
        return self.tools.get(tool_id)

    def describe_tool(self, tool_id: str) -> dict[str, Any]:
        """One tool for people (``loupe tools ID``): parameters with types, defaults and
        constraints, measurements, default limits and an example recipe step."""
        e = self.tools[tool_id]
        cls = e.cls
        params_model = getattr(cls, "Params", None)
        schema = params_model.model_json_schema() if params_model is not None else {}
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        rows = []
        example_params: dict[str, Any] = {}
        for name, prop in props.items():
            kind = _type_text(prop, schema)
            cons = ", ".join(f"{k} {prop[k]}" for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum",
                                                         "minLength", "maxLength") if k in prop)
            rows.append({"name": name, "type": kind, "required": name in required, "default": prop.get("default"),
                         "description": prop.get("description", ""), "constraints": cons.replace(
                             "exclusiveMinimum", ">").replace("exclusiveMaximum", "<").replace(
                             "minimum", ">=").replace("maximum", "<=")})
            if name in required:
                example_params[name] = _placeholder(prop, schema)
        measurements = dict(getattr(cls, "measurements", {}) or {})
        example: dict[str, Any] = {"tool": tool_id, "name": tool_id.rsplit(".", 1)[-1]}
        if example_params:
            example["params"] = example_params
        defaults = getattr(cls, "default_limits", None)
        if cls.stage == "inspect":
            if defaults:
                example["limits"] = dict(defaults)
            elif measurements:
                example["limits"] = {next(iter(measurements)): {"min": 0, "max": 1}}
        return {"id": tool_id, "stage": cls.stage, "title": cls.title or tool_id, "plugin": e.plugin,
                "distribution": e.distribution, "version": e.version,
                "description": (getattr(cls, "description", "") or (cls.__doc__ or "")).strip(),
                "parameters": rows, "measurements": measurements, "default_limits": dict(defaults or {}),
                "example": example}

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


def _resolve(prop: dict, schema: dict) -> dict:
    ref = prop.get("$ref")
    if ref and ref.startswith("#/$defs/"):
        return schema.get("$defs", {}).get(ref.split("/")[-1], {})
    return prop


def _type_text(prop: dict, schema: dict) -> str:
    if "enum" in prop:
        return "|".join(str(v) for v in prop["enum"])
    if "anyOf" in prop:
        return " or ".join(_type_text(p, schema) for p in prop["anyOf"])
    if "$ref" in prop:
        return prop["$ref"].split("/")[-1]
    kind = prop.get("type", "any")
    if kind == "array" and isinstance(prop.get("items"), dict):
        return f"list of {_type_text(prop['items'], schema)}"
    return str(kind)


def _placeholder(prop: dict, schema: dict) -> Any:
    """An example value for a required parameter."""
    target = _resolve(prop, schema)
    if "properties" in target:
        return {k: _placeholder(v, schema) for k, v in target["properties"].items() if k in target.get("required", [])}
    if "enum" in target:
        return target["enum"][0]
    kind = target.get("type")
    if kind in ("integer", "number"):
        return target.get("minimum", target.get("exclusiveMinimum", 0) + (1 if kind == "integer" else 0.5))
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if target.get("pattern") == "^[0-9a-f]{64}$":
        return "SHA256 (loupe bundle info BUNDLE prints it)"
    return "..."
