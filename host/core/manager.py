"""The plugin-manager factory: specs, built-ins, entry points, validation.

Operators control loading with environment switches:

``LOUPE_DISABLE_PLUGIN_AUTOLOAD=1``
    load no entry-point plugins (only the host's built-ins).
``LOUPE_PLUGINS=name,name``
    allow-list: load only these entry-point plugins.
``LOUPE_BLOCK_PLUGINS=name,name``
    block-list: never load these.
``LOUPE_TRACE_HOOKS=1``
    log every hook call to the ``loupe.hooks`` logger, the registration hooks
    (what each plugin registered, or why it was left out) included.

A plugin fails alone: one whose entry point does not import, that implements a hook
the host does not have (a misspelt name), whose registration hook raises, or that
registers an id another plugin owns is marked FAILED in ``pm.load_report`` (and in
``loupe plugins``) with its distribution and the error, and is unregistered; every
other plugin keeps working.
"""
from __future__ import annotations

import difflib
import importlib
import logging
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Iterable

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "loupe.plugins"
HOST_DISTRIBUTION = "loupe-host"

#: The host's own defaults, registered exactly like external plugins.
DEFAULT_PLUGINS = ("host.reporters.plugin", "host.commands.plugin", "host.commands.serve", "host.commands.plugin_new")

log = logging.getLogger("loupe")


@dataclass
class PluginInfo:
    """A loaded (or failed) plugin: where it came from and what it implements."""

    name: str
    distribution: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class LoadReport:
    plugins: list[PluginInfo] = field(default_factory=list)

    @property
    def failed(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]

    def get(self, name: str) -> PluginInfo | None:
        return next((p for p in self.plugins if p.name == name), None)


class LoupePluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers where each plugin came from."""

    def __init__(self, strict: bool = False) -> None:
        super().__init__("loupe")
        self.load_report = LoadReport()
        self._catalogue = None
        #: raise a plugin's registration error instead of leaving the plugin out (tests, plugin authors)
        self.strict = strict

    def register_plugin(self, plugin: object, name: str, distribution: str = "", version: str = "") -> str:
        """Register ``plugin`` and record its origin; the catalogue is rebuilt on next use."""
        registered = self.register(plugin, name=name)
        assert registered is not None
        self.load_report.plugins.append(PluginInfo(
            name=name, distribution=distribution or "(not installed)", version=version or "",
            module=getattr(plugin, "__name__", type(plugin).__name__),
            hooks=sorted(h.name for h in self.get_hookcallers(plugin) or ())))
        self._catalogue = None
        return registered

    def unregister_plugin(self, name: str) -> None:
        self.unregister(name=name)
        self.load_report.plugins = [p for p in self.load_report.plugins if p.name != name]
        self._catalogue = None

    @property
    def catalogue(self):
        """The catalogue built from the registration hooks (cached until plugins change)."""
        if self._catalogue is None:
            from .catalogue import Catalogue

            cat = Catalogue.build(self, strict=self.strict)
            for name, reason in cat.failures.items():
                self.mark_failed(name, reason)
            self._catalogue = cat
        return self._catalogue

    def mark_failed(self, name: str, reason: str) -> None:
        """Record that plugin ``name`` failed (``reason``) and unregister it; the others stay."""
        info = self.load_report.get(name)
        if info is not None:
            info.error = reason
        log.warning("plugin %r%s left out: %s", name, f" from {info.distribution} {info.version}" if info else "",
                    reason)
        if self.has_plugin(name):
            self.unregister(name=name)

    def unknown_hooks(self, plugin: object) -> list[str]:
        """The hooks ``plugin`` implements that the host does not specify (misspelt names)."""
        out = []
        for caller in self.get_hookcallers(plugin) or ():
            if caller.has_spec():
                continue
            if any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls()):
                out.append(caller.name)
        return sorted(out)


def _env_list(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    return {x.strip() for x in raw.split(",") if x.strip()}


def _host_version() -> str:
    from .. import __version__

    return __version__


def create_plugin_manager(
    autoload: bool | None = None,
    allow: Iterable[str] | None = None,
    blocked: Iterable[str] = (),
    builtins: bool = True,
) -> LoupePluginManager:
    """Build a plugin manager: add the specs, register the host's built-ins,
    load the ``loupe.plugins`` entry-point group, then ``check_pending()``.

    A plugin whose entry point fails to import is recorded in
    ``pm.load_report`` (name, distribution, error) and the others still load.
    ``autoload=None`` reads ``LOUPE_DISABLE_PLUGIN_AUTOLOAD``; ``allow`` and
    ``blocked`` add to ``LOUPE_PLUGINS`` and ``LOUPE_BLOCK_PLUGINS``.
    """
    pm = LoupePluginManager()
    pm.add_hookspecs(hookspecs)
    if os.environ.get("LOUPE_TRACE_HOOKS"):  # asked for: shown without -v
        trace_log = logging.getLogger("loupe.hooks")
        if trace_log.level == logging.NOTSET:
            trace_log.setLevel(logging.INFO)
    if builtins:
        for modname in DEFAULT_PLUGINS:
            pm.register_plugin(importlib.import_module(modname), name=modname,
                               distribution=HOST_DISTRIBUTION, version=_host_version())
    if autoload is None:
        autoload = os.environ.get("LOUPE_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() not in ("1", "true", "yes")
    allowed = _env_list("LOUPE_PLUGINS")
    if allow is not None:
        allowed = (allowed or set()) | set(allow)
    blocked_set = set(blocked) | (_env_list("LOUPE_BLOCK_PLUGINS") or set())
    if autoload:
        _load_entry_points(pm, allowed, blocked_set)
    pm.check_pending()
    if os.environ.get("LOUPE_TRACE_HOOKS"):
        trace = logging.getLogger("loupe.hooks")
        pm.trace.root.setwriter(lambda msg: trace.info(msg.rstrip()))
        pm.enable_tracing()
    return pm


def _load_entry_points(pm: LoupePluginManager, allowed: set[str] | None, blocked: set[str]) -> None:
    seen: set[str] = set()
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in seen:
            continue  # the same distribution visible twice on sys.path
        seen.add(ep.name)
        dist = ep.dist.name if ep.dist else "(unknown)"
        version = ep.dist.version if ep.dist else ""
        if ep.name in blocked or (allowed is not None and ep.name not in allowed):
            pm.set_blocked(ep.name)
            continue
        try:
            module: ModuleType = ep.load()
            pm.register_plugin(module, name=ep.name, distribution=dist, version=version)
            unknown = pm.unknown_hooks(module)
            if unknown:
                known = sorted(n for n in dir(hookspecs) if n.startswith("loupe_"))
                hint = "; ".join(f"{u}: did you mean {', '.join(m)}?" for u in unknown
                                 if (m := difflib.get_close_matches(u, known, n=1, cutoff=0.6)))
                pm.mark_failed(ep.name, f"implements hook(s) the host does not have: {', '.join(unknown)}"
                                        + (f" ({hint})" if hint else ""))
        except Exception as exc:  # a broken plugin must not take the others down
            log.warning("plugin %r from %s %s failed to load: %s", ep.name, dist, version, exc)
            if pm.has_plugin(ep.name):  # registered in part (pluggy checks hook by hook)
                pm.unregister(name=ep.name)
            info = pm.load_report.get(ep.name)
            if info is None:
                pm.load_report.plugins.append(PluginInfo(
                    name=ep.name, distribution=dist, version=version, module=ep.value,
                    error=f"{type(exc).__name__}: {exc}"))
            else:
                info.error = f"{type(exc).__name__}: {exc}"
