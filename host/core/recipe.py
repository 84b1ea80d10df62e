"""Recipes: versioned YAML documents validated against the catalogue.

A recipe (schema version 1)::

    loupe_recipe: 1
    name: coins
    requires: {loupe-classical: ">=0.1"}      # distributions and versions
    source: folder:images                      # or {spec: folder:images, pattern: "*.png"}
    preprocess:
      - tool: classical.gray
    inspect:
      - tool: classical.blob
        name: coins
        roi: [0, 0, 300, 200]                  # x, y, w, h (optional)
        input: raw                             # raw | <preprocess step name> (default: last)
        params: {threshold: otsu, min_area: 100}
        limits:
          count: {min: 24, max: 24}
          score: {max: 0.5, review_max: 0.8}   # accept / review / reject band
    decision: all                              # all steps must pass (default) | any
    report: [sqlite:results.sqlite, html:report]

Limits are declarative ranges; nothing in a recipe is ever evaluated as code.
Models are named by path and sha256 (``{path: model, sha256: ...}``).
"""
from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version as dist_version
from pathlib import Path
from typing import Any, Literal

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .bundle import model_sha256
from .catalogue import Catalogue
from .contracts import StepContext
from .errors import BundleError, RecipeError, RecipeProblem
from .safeyaml import YamlBudgetError, load_yaml
from .types import FAIL, PASS, REVIEW

SCHEMA_VERSION = 1

#: the largest image side a recipe may name (a region of interest, a resize): beyond any real sensor
MAX_IMAGE_SIDE = 1 << 16
#: the most pixels a recipe may ask an image to have (268 Mpx: 768 MiB as 8-bit RGB)
MAX_IMAGE_PIXELS = 1 << 28


def check_image_size(width: int, height: int, what: str = "image") -> None:
    """Raise ``ValueError`` when a size a recipe names is beyond any image Loupe will handle.

    For parameter validators (a resize target, a canvas): ``MAX_IMAGE_SIDE`` per side,
    ``MAX_IMAGE_PIXELS`` in all.
    """
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise ValueError(f"{what} {width}x{height} is larger than any image ({MAX_IMAGE_SIDE} pixels per side)")
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"{what} {width}x{height} has {width * height / 1e6:.0f} Mpx, over the "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx limit")


class ModelRef(BaseModel):
    """A model named by path (relative to the recipe) and sha256 (checked at load).

    Tools that load models use this type for the parameter, so that every
    recipe pins the exact model it was validated with.
    """

    model_config = ConfigDict(extra="forbid")
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    def classes(self, base_dir: str | Path | None = None) -> list[str] | None:
        """The ``classes`` of the referenced bundle's bundle.json (the path taken relative to ``base_dir``, the
        recipe's folder), read without loading the model: for a tool's parameter validator that checks class
        names at recipe load. None when the bundle cannot be read; the model check reports that."""
        p = Path(self.path).expanduser()
        if base_dir is not None and not p.is_absolute():
            p = Path(base_dir) / p
        try:
            return [str(c) for c in json.loads((p / "bundle.json").read_text())["classes"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None


class Limit(BaseModel):
    """A pass/fail range on one measurement, with an optional review band.

    ``min``/``max``: the accept range. ``review_min``/``review_max``: a wider
    range whose values outside the accept range give ``review`` rather than
    ``fail``. ``equals`` / ``one_of``: for text or boolean measurements.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # 1e400 (inf) or nan is never a limit
    min: float | None = None
    max: float | None = None
    review_min: float | None = None
    review_max: float | None = None
    equals: str | float | bool | None = None
    one_of: list[str | float | bool] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Limit":
        if all(v is None for v in (self.min, self.max, self.review_min, self.review_max, self.equals, self.one_of)):
            raise ValueError("a limit needs at least one of min, max, equals, one_of")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.review_max is not None and (self.max is None or self.review_max < self.max):
            raise ValueError("review_max needs a max, and must be at least max")
        if self.review_min is not None and (self.min is None or self.review_min > self.min):
            raise ValueError("review_min needs a min, and must be at most min")
        return self

    def check(self, value: Any) -> str:
        """The verdict of ``value`` against this limit: pass, review or fail."""
        if self.equals is not None and value != self.equals:
            return FAIL
        if self.one_of is not None and value not in self.one_of:
            return FAIL
        if self.min is None and self.max is None:
            return PASS
        try:
            v = float(value)
        except (TypeError, ValueError, OverflowError):  # an int beyond any float is no measurement
            return FAIL
        if v != v:  # NaN never passes
            return FAIL
        lo, hi = self.min, self.max
        if (lo is None or v >= lo) and (hi is None or v <= hi):
            return PASS
        rlo, rhi = self.review_min, self.review_max
        if (rlo is not None or rhi is not None) and (
                (lo is None or v >= (rlo if rlo is not None else lo)) and
                (hi is None or v <= (rhi if rhi is not None else hi))):
            return REVIEW
        return FAIL


class StepDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool: str
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    roi: tuple[int, int, int, int] | None = None
    input: str | None = None
    limits: dict[str, Limit] = Field(default_factory=dict)
    required: bool = True
    # per-step deadline: ms per call, 0 = none; default: the recipe's, else the line's
    deadline_ms: float | None = Field(None, ge=0, le=86_400_000)

    @field_validator("roi")
    @classmethod
    def _roi(cls, v):
        if v is not None and (v[2] <= 0 or v[3] <= 0 or v[0] < 0 or v[1] < 0):
            raise ValueError("roi is [x, y, width, height] with x, y >= 0 and a positive size")
        if v is not None and (v[0] + v[2] > MAX_IMAGE_SIDE or v[1] + v[3] > MAX_IMAGE_SIDE):
            raise ValueError(f"roi {list(v)} reaches beyond any image ({MAX_IMAGE_SIDE} pixels per side)")
        return v


class SourceDoc(BaseModel):
    model_config = ConfigDict(extra="allow")
    spec: str


class RecipeDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    loupe_recipe: int
    name: str = "recipe"
    description: str = ""
    requires: dict[str, str] = Field(default_factory=dict)
    source: str | SourceDoc | None = None
    preprocess: list[StepDoc] = Field(default_factory=list)
    inspect: list[StepDoc] = Field(default_factory=list)
    decision: Literal["all", "any"] = "all"
    report: list[str] = Field(default_factory=list)
    # default deadline of every step, ms; 0 = none; unset: the line's default
    deadline_ms: float | None = Field(None, ge=0, le=86_400_000)
    engine: Literal["cpu", "openvino", "cuda", "tensorrt", "auto"] | None = Field(
        None, description="inference engine of the recipe's models (default: LOUPE_ENGINE, else cpu; "
                          "`loupe run --engine` wins)")


@dataclass
class Step:
    """A validated step: its tool class and parsed parameters."""

    section: str
    index: int
    name: str
    tool_id: str
    tool_cls: type
    params: BaseModel
    roi: tuple[int, int, int, int] | None
    input: str | None
    limits: dict[str, Limit]
    required: bool

    @property
    def where(self) -> str:
        return f"{self.section}[{self.index}] ({self.name})"


@dataclass
class Recipe:
    doc: RecipeDoc
    steps: list[Step]
    file: str
    base_dir: Path
    hash: str
    #: an engine chosen outside the recipe (a station's ``engine:``); not part of the recipe's hash
    engine: str | None = None

    @property
    def name(self) -> str:
        return self.doc.name

    @property
    def preprocess(self) -> list[Step]:
        return [s for s in self.steps if s.section == "preprocess"]

    @property
    def inspect(self) -> list[Step]:
        return [s for s in self.steps if s.section == "inspect"]

    def context(self, step: Step) -> StepContext:
        engine = self.engine or self.doc.engine
        options = {"engine": engine} if engine else {}
        return StepContext(step=step.name, base_dir=self.base_dir, options=options)

    def to_dict(self) -> dict[str, Any]:
        """The canonical, fully defaulted form (what the hash is computed over)."""
        return _canonical(self.doc, self.steps)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # ---------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: str | Path, catalogue: Catalogue) -> "Recipe":
        """Read, budget-check (size, nesting, alias expansion) and validate a recipe file."""
        p = Path(path)
        file = str(path)
        if not p.is_file():
            raise RecipeError(file, ["file not found"])
        try:
            data = load_yaml(p)
        except YamlBudgetError as exc:
            raise RecipeError(file, [RecipeProblem(str(exc))]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(file, [f"cannot read: {exc}"]) from None
        return cls.from_dict(data, catalogue, base_dir=p.resolve().parent, file=file)

    @classmethod
    def from_dict(cls, data: Any, catalogue: Catalogue, base_dir: Path | None = None,
                  file: str = "<recipe>") -> "Recipe":
        """Validate a loaded recipe document; a ``RecipeError`` lists every problem at once."""
        base_dir = base_dir or Path.cwd()
        if not isinstance(data, dict):
            raise RecipeError(file, [f"a recipe is a mapping of fields, got {type(data).__name__}"])
        if "loupe_recipe" not in data:
            raise RecipeError(file, [RecipeProblem("missing field (the recipe schema version, 1)",
                                                   section="loupe_recipe")])
        if data.get("loupe_recipe") != SCHEMA_VERSION:
            raise RecipeError(file, [RecipeProblem(f"schema version {data.get('loupe_recipe')!r} is not supported "
                                                   f"(this Loupe reads version {SCHEMA_VERSION})",
                                                   section="loupe_recipe")])
        problems: list[RecipeProblem] = []
        top = {k: v for k, v in data.items() if k not in ("preprocess", "inspect")}
        top_doc = None
        try:
            top_doc = RecipeDoc.model_validate(top)
        except ValidationError as exc:
            problems += [_top_problem(err) for err in exc.errors()]
        steps, step_docs = _build_steps(data, catalogue, base_dir, problems)
        if top_doc is not None:
            problems += _check_requires(top_doc.requires)
            problems += _check_specs(top_doc, catalogue)
        if problems:
            raise RecipeError(file, problems)
        doc = top_doc.model_copy(update=step_docs)
        digest = hashlib.sha256(json.dumps(_canonical(doc, steps), sort_keys=True,
                                           separators=(",", ":")).encode()).hexdigest()
        return cls(doc, steps, file, base_dir, digest)


def _canonical(doc: RecipeDoc, steps: list[Step]) -> dict[str, Any]:
    out = doc.model_dump(mode="json", exclude_none=True)
    for section in ("preprocess", "inspect"):
        out[section] = []
    for s in steps:
        d: dict[str, Any] = {"tool": s.tool_id, "name": s.name,
                             "params": s.params.model_dump(mode="json")}
        if s.roi is not None:
            d["roi"] = list(s.roi)
        if s.input is not None:
            d["input"] = s.input
        if s.limits or getattr(s.tool_cls, "default_limits", None):  # an explicit {} overrides defaults
            d["limits"] = {k: v.model_dump(mode="json", exclude_none=True) for k, v in s.limits.items()}
        if not s.required:
            d["required"] = False
        out[s.section].append(d)
    return out


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_UNION_TAGS = ("str", "SourceDoc", "tuple[int,int,int,int]")
_PREFIXES = ("Value error, ", "Assertion failed, ")


def clean_message(err: dict, unknown: str = "unknown field") -> str:
    """A pydantic error's message as plain text: no "Value error, " prefix; missing/unknown fields named."""
    if err["type"] == "missing":
        return "missing field"
    if err["type"] == "extra_forbidden":
        return unknown
    msg = str(err["msg"])
    for prefix in _PREFIXES:
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg


def _top_problem(err: dict) -> RecipeProblem:
    loc = tuple(p for p in err["loc"] if p not in _UNION_TAGS)
    if not loc:
        return RecipeProblem(clean_message(err))
    head, rest = loc[0], loc[1:]
    index = rest[0] if rest and isinstance(rest[0], int) else None
    if index is not None:
        rest = rest[1:]
    return RecipeProblem(clean_message(err), section=str(head), index=index, field=_loc(rest))


def _step_label(raw: Any) -> str:
    if isinstance(raw, dict):
        for key in ("name", "tool"):
            if isinstance(raw.get(key), str) and raw[key]:
                return raw[key]
    return "?"


def _build_steps(data: dict, catalogue: Catalogue, base_dir: Path,
                 problems: list[RecipeProblem]) -> tuple[list[Step], dict[str, list[StepDoc]]]:
    """Validate every step on its own, so that every problem of every step is reported."""
    steps: list[Step] = []
    docs: dict[str, list[StepDoc]] = {"preprocess": [], "inspect": []}
    names: set[str] = set()
    for section in ("preprocess", "inspect"):
        raw_list = data.get(section)
        if raw_list is None:
            continue
        if not isinstance(raw_list, list):
            problems.append(RecipeProblem(f"a list of steps, got {type(raw_list).__name__}", section=section))
            continue
        for i, raw in enumerate(raw_list):
            step, sd = _build_step(section, i, raw, catalogue, base_dir, names, steps, problems)
            if sd is not None:
                docs[section].append(sd)
            if step is not None:
                steps.append(step)
    return steps, docs


def _build_step(section: str, i: int, raw: Any, catalogue: Catalogue, base_dir: Path, names: set[str],
                steps: list[Step], problems: list[RecipeProblem]) -> tuple[Step | None, StepDoc | None]:
    label = _step_label(raw)
    if isinstance(raw, dict) and isinstance(raw.get("tool"), str) and not isinstance(raw.get("name"), str):
        label = _default_name(raw["tool"], names)  # the name the step will have

    def problem(field: str, message: str, step: str | None = None) -> None:
        problems.append(RecipeProblem(message, section=section, index=i, step=step or label, field=field))

    if not isinstance(raw, dict):
        problem("", f"a step is a mapping (tool, params, limits, ...), got {type(raw).__name__}")
        return None, None
    n_before = len(problems)
    # the step's own fields; params and limits are checked one by one below
    raw_limits = raw.get("limits", {})
    sd = None
    try:
        sd = StepDoc.model_validate({**raw, "limits": {}, "params": {}})
    except ValidationError as exc:
        for err in exc.errors():
            problem(_loc(tuple(p for p in err["loc"] if p not in _UNION_TAGS)), clean_message(err))
    params_raw = raw.get("params", {})
    if params_raw is None:
        params_raw = {}
    if not isinstance(params_raw, dict):
        problem("params", f"a mapping of parameters, got {type(params_raw).__name__}")
        params_raw = None
    limits: dict[str, Limit] = {}
    if raw_limits is None:
        raw_limits = {}
    if not isinstance(raw_limits, dict):
        problem("limits", f"a mapping of measurement names to ranges, got {type(raw_limits).__name__}")
        raw_limits = {}
    for m, spec in raw_limits.items():
        try:
            limits[str(m)] = Limit.model_validate(spec)
        except ValidationError as exc:
            for err in exc.errors():
                problem(f"limits.{m}" + ("." + _loc(err["loc"]) if err["loc"] else ""), clean_message(err))
    tool_id = raw.get("tool")
    if not isinstance(tool_id, str):
        return None, None  # reported above (missing or not text)
    name = label
    if name in names:
        problem("name", f"step name {name!r} is used twice", step=name)
    names.add(name)
    entry = catalogue.tool(tool_id)
    cls = None
    if entry is None:
        hint = difflib.get_close_matches(tool_id, list(catalogue.tools), n=3, cutoff=0.8)
        problem("tool", f"unknown tool {tool_id!r}"
                + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else
                   f"; installed tools: {', '.join(sorted(catalogue.tools)) or 'none'}"), step=name)
    elif entry.cls.stage != section:
        problem("tool", f"{tool_id!r} is a {entry.cls.stage}-stage tool; it cannot be used under {section}",
                step=name)
    else:
        cls = entry.cls
    params = None
    if cls is not None and params_raw is not None:
        try:
            params = cls.Params.model_validate(params_raw, context={"base_dir": base_dir})
        except ValidationError as exc:
            for err in exc.errors():
                problem(f"params.{_loc(err['loc'])}" if err["loc"] else "params",
                        clean_message(err, "unknown parameter"), step=name)
        else:
            for field, msg in _check_models(params, base_dir):
                problem(f"params.{field}", msg, step=name)
    if section == "preprocess" and raw_limits:
        problem("limits", "preprocess steps have no measurements", step=name)
    if cls is not None and "limits" not in raw and getattr(cls, "default_limits", None):
        try:
            limits = {k: Limit.model_validate(v) for k, v in cls.default_limits.items()}
        except ValidationError as exc:
            problem("limits", f"the tool's default_limits are invalid: {exc}", step=name)
    known = (getattr(cls, "measurements", None) or {}) if cls is not None else {}
    patterns = [k for k in known if "*" in k]  # "*.area": one measurement per model class (segmentation)
    for m in limits:
        if known and m not in known and not any(fnmatch.fnmatchcase(m, p) for p in patterns):
            hint = difflib.get_close_matches(m, list(known), n=2, cutoff=0.5)
            problem(f"limits.{m}", f"{tool_id} has no measurement {m!r}"
                    + (f"; did you mean {', '.join(map(repr, hint))}?" if hint
                       else f"; it measures {', '.join(known)}"), step=name)
    step_input = sd.input if sd is not None else None
    if step_input is not None and section == "inspect":
        earlier = {s.name for s in steps if s.section == "preprocess"}
        if step_input != "raw" and step_input not in earlier:
            problem("input", f"{step_input!r} is neither 'raw' nor a preprocess step "
                             f"({', '.join(sorted(earlier)) or 'none defined'})", step=name)
    if len(problems) > n_before or sd is None or params is None:
        return None, None
    try:
        sd = StepDoc.model_validate(raw)  # the document's own form (limits left unset stay unset)
    except ValidationError as exc:  # pragma: no cover - every part was validated above
        problem("", clean_message(exc.errors()[0]), step=name)
        return None, None
    return Step(section, i, name, tool_id, cls, params, sd.roi, sd.input, limits, sd.required), sd


def _default_name(tool: str, taken: set[str]) -> str:
    base = tool.rsplit(".", 1)[-1]
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def _check_models(params: BaseModel, base_dir: Path, prefix: str = "") -> list[tuple[str, str]]:
    """Find every ``ModelRef`` in a parameter model and check its file and sha256."""
    out: list[tuple[str, str]] = []
    for field in type(params).model_fields:
        value = getattr(params, field)
        label = f"{prefix}{field}"
        if isinstance(value, ModelRef):
            p = Path(value.path).expanduser()
            p = p if p.is_absolute() else base_dir / p
            if not p.exists():
                out.append((f"{label}.path", f"model file not found: {p}"))
                continue
            try:
                actual = model_sha256(p)
            except (BundleError, OSError) as exc:
                out.append((f"{label}.path", str(exc)))
                continue
            if actual != value.sha256:
                out.append((f"{label}.sha256", f"hash mismatch for {p}: the recipe pins {value.sha256[:12]}…, "
                                               f"the model on disk is {actual[:12]}…"))
        elif isinstance(value, BaseModel):
            out += _check_models(value, base_dir, prefix=f"{label}.")
    return out


def _check_requires(requires: dict[str, str]) -> list[RecipeProblem]:
    problems: list[RecipeProblem] = []
    for dist, spec in requires.items():
        try:
            spec_set = SpecifierSet(spec or "")
        except InvalidSpecifier:
            problems.append(RecipeProblem(f"{spec!r} is not a version specifier (e.g. '>=0.1,<1')",
                                          section="requires", field=dist))
            continue
        try:
            installed = dist_version(dist)
        except PackageNotFoundError:
            problems.append(RecipeProblem(f"the recipe needs {dist}{spec}, which is not installed",
                                          section="requires", field=dist))
            continue
        try:
            ok = spec_set.contains(installed, prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            problems.append(RecipeProblem(f"the recipe needs {dist}{spec}, installed is {installed}",
                                          section="requires", field=dist))
    return problems


def _check_specs(doc: RecipeDoc, catalogue: Catalogue) -> list[RecipeProblem]:
    problems: list[RecipeProblem] = []
    src = doc.source.spec if isinstance(doc.source, SourceDoc) else doc.source
    if src:
        scheme = src.split(":", 1)[0]
        if ":" not in src or scheme not in catalogue.sources:
            known = ", ".join(f"{s}:..." for s in sorted(catalogue.sources)) or "no source plugin installed"
            problems.append(RecipeProblem(f"{src!r} is not a source spec ({known})", section="source"))
    for i, rep in enumerate(doc.report):
        scheme = rep.split(":", 1)[0]
        if ":" not in rep or scheme not in catalogue.reporters:
            known = ", ".join(f"{s}:PATH" for s in sorted(catalogue.reporters))
            problems.append(RecipeProblem(f"{rep!r} is not a report spec ({known})", section="report", index=i))
    return problems
