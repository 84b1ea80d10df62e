"""The one YAML loader for operator-written documents (recipes, stations): budgets first.

``load_yaml`` checks a document against three budgets *before* any Python object is
built, so a hostile or broken file is refused in milliseconds:

* size: the text is at most ``max_bytes`` long;
* nesting: no collection is nested deeper than ``max_depth``;
* expansion: the document, with every alias expanded, has at most ``max_nodes``
  nodes. A "billion laughs" bomb is a few hundred bytes whose aliases expand to
  billions of nodes; anything that later walks the loaded object (validation,
  hashing, dumping) would follow every alias.

The budget check walks PyYAML's event stream (no recursion, no object built), then
the document is loaded with ``yaml.safe_load`` semantics (no Python objects, no tags).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import LoupeError

#: a recipe or station is a few kilobytes; a megabyte is far beyond any real one
MAX_YAML_BYTES = 1 << 20
#: recipes nest about six levels deep (steps, limits, bands)
MAX_YAML_DEPTH = 64
#: scalars and collections after alias expansion
MAX_YAML_NODES = 200_000

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlBudgetError(LoupeError):
    """A YAML document is too large, too deep, expands too far or is not valid YAML.

    ``line`` and ``column`` (1-based) say where, when known.
    """

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        self.line = line
        self.column = column
        where = f"line {line}, column {column}: " if line is not None else ""
        self.reason = message
        super().__init__(f"{where}{message}")


def _mark(event: Any) -> tuple[int | None, int | None]:
    m = getattr(event, "start_mark", None)
    return (m.line + 1, m.column + 1) if m is not None else (None, None)


def check_yaml_budget(text: str, *, max_bytes: int = MAX_YAML_BYTES, max_depth: int = MAX_YAML_DEPTH,
                      max_nodes: int = MAX_YAML_NODES) -> None:
    """Raise ``YamlBudgetError`` when ``text`` breaks a budget (see the module docstring)."""
    size = len(text) if len(text) > max_bytes else len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise YamlBudgetError(f"the document is {size} bytes, over the {max_bytes}-byte limit")
    # stack of [anchor, nodes so far] for the open collections; anchored sizes for aliases
    stack: list[list[Any]] = []
    anchors: dict[str, int] = {}
    total = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                if len(stack) >= max_depth:
                    raise YamlBudgetError(f"nesting deeper than {max_depth} levels", *_mark(event))
                stack.append([event.anchor, 1])
                continue
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                anchor, n = stack.pop()
                if anchor is not None:
                    anchors[anchor] = n
                added = n
            elif isinstance(event, yaml.ScalarEvent):
                if event.anchor is not None:
                    anchors[event.anchor] = 1
                added = 1
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor not in anchors:  # PyYAML reports it when composing
                    added = 1
                else:
                    added = anchors[event.anchor]
            else:
                continue
            if stack:
                stack[-1][1] += added
                if stack[-1][1] > max_nodes:
                    raise YamlBudgetError(f"the document expands to more than {max_nodes} values "
                                          f"(aliases are counted at every use)", *_mark(event))
            else:
                total += added
                if total > max_nodes:
                    raise YamlBudgetError(f"the document expands to more than {max_nodes} values "
                                          f"(aliases are counted at every use)", *_mark(event))
    except yaml.YAMLError as exc:
        raise _syntax(exc) from None


def _syntax(exc: yaml.YAMLError) -> YamlBudgetError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return YamlBudgetError(f"YAML syntax error: {problem}", mark.line + 1, mark.column + 1)
    return YamlBudgetError(f"YAML syntax error: {problem}")


def load_yaml(source: str | Path | bytes, *, max_bytes: int = MAX_YAML_BYTES, max_depth: int = MAX_YAML_DEPTH,
              max_nodes: int = MAX_YAML_NODES) -> Any:
    """Load one YAML document within budgets (``safe_load`` semantics).

    ``source`` is the text (``str``), its bytes, or a ``Path`` to read. A file
    larger than ``max_bytes`` is refused before it is read in full. Raises
    ``YamlBudgetError`` (a ``LoupeError``) for a budget or syntax problem and
    ``OSError`` / ``UnicodeDecodeError`` for an unreadable file.
    """
    if isinstance(source, Path):
        with open(source, "rb") as f:
            raw = f.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise YamlBudgetError(f"the file is larger than the {max_bytes}-byte limit")
        source = raw
    if isinstance(source, bytes):
        if len(source) > max_bytes:
            raise YamlBudgetError(f"the document is {len(source)} bytes, over the {max_bytes}-byte limit")
        source = source.decode("utf-8")
    check_yaml_budget(source, max_bytes=max_bytes, max_depth=max_depth, max_nodes=max_nodes)
    try:
        return yaml.load(source, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise _syntax(exc) from None
    except RecursionError:  # cannot happen within max_depth; kept so no traceback ever escapes
        raise YamlBudgetError(f"nesting deeper than {max_depth} levels") from None
