"""GenTL producers, device choice and camera features, over harvesters.

Producers (``.cti`` files) are found through the standard ``GENICAM_GENTL64_PATH``
variable (folders separated by ``os.pathsep``), or given explicitly (a file or a
folder). Features are checked against the device's node map before anything is
written: an unknown feature, a read-only one, or a value outside the node's range
or enumeration is refused with a message that names the feature.
"""
from __future__ import annotations

import difflib
import glob
import logging
import os
from pathlib import Path
from typing import Any

from host import UsageError

ENV = "GENICAM_GENTL64_PATH"

# genicam's EAccessMode: NI, NA, WO, RO, RW
_NI, _NA, _WO, _RO, _RW = range(5)
_ACCESS = {_NI: "not implemented", _NA: "not available", _WO: "write-only", _RO: "read-only", _RW: "read-write"}


def quiet_harvesters() -> None:
    """harvesters logs a warning per optional GenTL function a producer lacks; keep errors only."""
    for name in ("harvesters", "harvesters.core", "harvesters._private.core.helper.system"):
        logging.getLogger(name).setLevel(logging.ERROR)


def find_producers(cti: str | list[str] | None = None, base_dir: Path | None = None) -> list[str]:
    """The ``.cti`` files named by ``cti`` (files or folders), else those on ``GENICAM_GENTL64_PATH``."""
    if cti:
        entries = [cti] if isinstance(cti, str) else list(cti)
        where = "cti"
    else:
        entries = [e for e in os.environ.get(ENV, "").split(os.pathsep) if e.strip()]
        where = ENV
    found: list[str] = []
    for e in entries:
        p = Path(e).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        if p.is_dir():
            found += sorted(glob.glob(str(p / "*.cti")))
        elif p.is_file():
            found.append(str(p))
        elif where == "cti":
            raise UsageError(f"cti: {e!r}: no such GenTL producer file or folder")
    seen: set[str] = set()
    return [f for f in found if not (f in seen or seen.add(f))]


def parse_target(target: str) -> dict[str, Any] | int:
    """``0`` -> device index 0; ``serial=S`` / ``model=M`` / ``id=I`` / ``vendor=V`` -> a device filter."""
    t = target.strip()
    if t == "" or t.isdigit():
        return int(t or 0)
    keys = {"serial": "serial_number", "model": "model", "id": "id_", "vendor": "vendor",
            "name": "user_defined_name"}
    out: dict[str, Any] = {}
    for part in t.split(","):
        k, sep, v = part.partition("=")
        if not sep or k.strip() not in keys or not v.strip():
            raise UsageError(f"source genicam:{target}: expected genicam:INDEX, genicam:serial=S or "
                             f"genicam:model=M (also id=, vendor=, name=; several joined by ',')")
        out[keys[k.strip()]] = v.strip()
    return out


def device_field(d, attr: str) -> str:
    """One device-info field; producers may not support every one (viky has no user-defined name)."""
    try:
        v = getattr(d, attr)
    except Exception:
        return ""
    return "" if v is None else str(v)


def describe_devices(harvester) -> list[dict[str, Any]]:
    return [{"index": i, "vendor": device_field(d, "vendor"), "model": device_field(d, "model"),
             "serial": device_field(d, "serial_number"), "id": device_field(d, "id_"), "interface": device_field(d, "tl_type"),
             "name": device_field(d, "user_defined_name")}
            for i, d in enumerate(harvester.device_info_list)]


def feature_names(node_map) -> list[str]:
    try:
        return [n.node.name for n in node_map.nodes]
    except Exception:  # an odd producer: fall back to attribute names
        return [n for n in dir(node_map) if n[:1].isupper()]


def _access(node) -> int:
    try:
        return int(node.node.get_access_mode())
    except Exception:
        return _RW


def check_feature(node_map, name: str, value: Any, where: str) -> tuple[Any, Any]:
    """Validate one feature against the node map; returns (node, value to write)."""
    if not isinstance(name, str) or not node_map.has_node(name):
        close = difflib.get_close_matches(str(name), feature_names(node_map), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UsageError(f"{where}.{name}: the camera has no feature {name!r}{hint}")
    node = node_map.get_node(name)
    mode = _access(node)
    if mode not in (_RW, _WO):
        raise UsageError(f"{where}.{name}: the feature is {_ACCESS.get(mode, 'not writable')} on this camera")
    kind = type(node).__name__
    if kind == "IEnumeration":
        options = list(node.symbolics)
        if str(value) not in options:
            raise UsageError(f"{where}.{name}: {value!r} is not one of {', '.join(options)}")
        return node, str(value)
    if kind in ("IInteger", "IFloat"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{where}.{name}: expected a number, got {value!r}")
        lo, hi = node.min, node.max
        if not (lo <= value <= hi):
            raise UsageError(f"{where}.{name}: {value} is out of range [{lo:g}, {hi:g}]")
        if kind == "IInteger":
            if value != int(value):
                raise UsageError(f"{where}.{name}: expected an integer, got {value!r}")
            inc = getattr(node, "inc", 1) or 1
            if (int(value) - lo) % inc:
                raise UsageError(f"{where}.{name}: {value} is not a multiple of the increment {inc} from {lo}")
            return node, int(value)
        return node, float(value)
    if kind == "IBoolean":
        if not isinstance(value, bool):
            raise UsageError(f"{where}.{name}: expected true or false, got {value!r}")
        return node, value
    if kind == "ICommand":
        raise UsageError(f"{where}.{name}: is a command, not a setting")
    return node, value


def apply_features(node_map, features: dict[str, Any], where: str = "features") -> None:
    """Check every feature first, then write them in the order given (``PixelFormat`` before ``Width``...)."""
    checked = [(name, *check_feature(node_map, name, value, where)) for name, value in features.items()]
    for name, node, value in checked:
        try:
            node.value = value
        except Exception as exc:  # the device refused it (e.g. a dependency on another feature)
            raise UsageError(f"{where}.{name}: the camera refused {value!r}: {exc}") from None
