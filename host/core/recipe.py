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
from .errors import BundleError, RecipeError
from .types import FAIL, PASS, REVIEW

SCHEMA_VERSION = 1


class ModelRef(BaseModel):
    """A model named by path (relative to the recipe) and sha256 (checked at load).

    Tools that load models use this type for the parameter, so that every
    recipe pins the exact model it was validated with.
    """

    model_config = ConfigDict(extra="forbid")
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Limit(BaseModel):
    """A pass/fail range on one measurement, with an optional review band.

    ``min``/``max``: the accept range. ``review_min``/``review_max``: a wider
    range whose values outside the accept range give ``review`` rather than
    ``fail``. ``equals`` / ``one_of``: for text or boolean measurements.
    """

    model_config = ConfigDict(extra="forbid")
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
        except (TypeError, ValueError):
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

    @field_validator("roi")
    @classmethod
    def _roi(cls, v):
        if v is not None and (v[2] <= 0 or v[3] <= 0 or v[0] < 0 or v[1] < 0):
            raise ValueError("roi is [x, y, width, height] with x, y >= 0 and a positive size")
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
        return StepContext(step=step.name, base_dir=self.base_dir)

    def to_dict(self) -> dict[str, Any]:
        """The canonical, fully defaulted form (what the hash is computed over)."""
        return _canonical(self.doc, self.steps)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # ---------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: str | Path, catalogue: Catalogue) -> "Recipe":
        p = Path(path)
        file = str(path)
        if not p.is_file():
            raise RecipeError(file, ["file not found"])
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(file, [f"cannot read: {exc}"]) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise RecipeError(file, [f"YAML syntax error: {where}{problem}"]) from None
        return cls.from_dict(data, catalogue, base_dir=p.resolve().parent, file=file)

    @classmethod
    def from_dict(cls, data: Any, catalogue: Catalogue, base_dir: Path | None = None,
                  file: str = "<recipe>") -> "Recipe":
        base_dir = base_dir or Path.cwd()
        if not isinstance(data, dict):
            raise RecipeError(file, [f"a recipe is a mapping of fields, got {type(data).__name__}"])
        if "loupe_recipe" not in data:
            raise RecipeError(file, ["loupe_recipe: missing field (the recipe schema version, 1)"])
        if data.get("loupe_recipe") != SCHEMA_VERSION:
            raise RecipeError(file, [f"loupe_recipe: schema version {data.get('loupe_recipe')!r} is not "
                                     f"supported (this Loupe reads version {SCHEMA_VERSION})"])
        try:
            doc = RecipeDoc.model_validate(data)
        except ValidationError as exc:
            raise RecipeError(file, [_describe_doc_error(err, data) for err in exc.errors()]) from None
        problems: list[str] = []
        steps = _build_steps(doc, catalogue, base_dir, problems)
        problems += _check_requires(doc.requires)
        problems += _check_specs(doc, catalogue)
        if problems:
            raise RecipeError(file, problems)
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


def _describe_doc_error(err: dict, data: dict) -> str:
    loc = tuple(p for p in err["loc"] if p not in ("str", "SourceDoc", "tuple[int,int,int,int]"))
    msg = err["msg"]
    if err["type"] == "missing":
        msg = "missing field"
    elif err["type"] == "extra_forbidden":
        msg = "unknown field"
    # name the step when the error is inside one
    if len(loc) >= 2 and loc[0] in ("preprocess", "inspect") and isinstance(loc[1], int):
        try:
            raw = data[loc[0]][loc[1]]
            label = raw.get("name") or raw.get("tool") or "?"
        except Exception:
            label = "?"
        return f"{loc[0]}[{loc[1]}] ({label}): {_loc(loc[2:]) or 'step'}: {msg}"
    return f"{_loc(loc) or 'recipe'}: {msg}"


def _build_steps(doc: RecipeDoc, catalogue: Catalogue, base_dir: Path, problems: list[str]) -> list[Step]:
    steps: list[Step] = []
    names: set[str] = set()
    for section in ("preprocess", "inspect"):
        for i, sd in enumerate(getattr(doc, section)):
            name = sd.name or _default_name(sd.tool, names)
            where = f"{section}[{i}] ({name})"
            if name in names:
                problems.append(f"{where}: name: step name {name!r} is used twice")
            names.add(name)
            entry = catalogue.tool(sd.tool)
            if entry is None:
                hint = difflib.get_close_matches(sd.tool, list(catalogue.tools), n=3, cutoff=0.8)
                problems.append(f"{where}: tool: unknown tool {sd.tool!r}"
                                + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else
                                   f"; installed tools: {', '.join(sorted(catalogue.tools)) or 'none'}"))
                continue
            cls = entry.cls
            if cls.stage != section:
                problems.append(f"{where}: tool: {sd.tool!r} is a {cls.stage}-stage tool; it cannot be used under {section}")
                continue
            try:
                params = cls.Params.model_validate(sd.params, context={"base_dir": base_dir})
            except ValidationError as exc:
                for err in exc.errors():
                    msg = "missing field" if err["type"] == "missing" else (
                        "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"])
                    problems.append(f"{where}: params.{_loc(err['loc'])}: {msg}")
                continue
            problems += [f"{where}: params.{field}: {msg}" for field, msg in _check_models(params, base_dir)]
            if section == "preprocess" and sd.limits:
                problems.append(f"{where}: limits: preprocess steps have no measurements")
            limits = sd.limits
            if "limits" not in sd.model_fields_set and getattr(cls, "default_limits", None):
                try:
                    limits = {k: Limit.model_validate(v) for k, v in cls.default_limits.items()}
                except ValidationError as exc:
                    problems.append(f"{where}: limits: the tool's default_limits are invalid: {exc}")
                    continue
            known = getattr(cls, "measurements", None) or {}
            patterns = [k for k in known if "*" in k]  # "*.area": one measurement per model class
            for m in limits:
                if known and m not in known and not any(fnmatch.fnmatchcase(m, p) for p in patterns):
                    hint = difflib.get_close_matches(m, list(known), n=2, cutoff=0.5)
                    problems.append(f"{where}: limits.{m}: {sd.tool} has no measurement {m!r}"
                                    + (f"; did you mean {', '.join(map(repr, hint))}?" if hint
                                       else f"; it measures {', '.join(known)}"))
            if sd.input is not None and section == "inspect":
                earlier = {s.name for s in steps if s.section == "preprocess"}
                if sd.input != "raw" and sd.input not in earlier:
                    problems.append(f"{where}: input: {sd.input!r} is neither 'raw' nor a preprocess step "
                                    f"({', '.join(sorted(earlier)) or 'none defined'})")
            steps.append(Step(section, i, name, sd.tool, cls, params, sd.roi, sd.input, limits, sd.required))
    return steps


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


def _check_requires(requires: dict[str, str]) -> list[str]:
    problems = []
    for dist, spec in requires.items():
        try:
            spec_set = SpecifierSet(spec or "")
        except InvalidSpecifier:
            problems.append(f"requires.{dist}: {spec!r} is not a version specifier (e.g. '>=0.1,<1')")
            continue
        try:
            installed = dist_version(dist)
        except PackageNotFoundError:
            problems.append(f"requires.{dist}: the recipe needs {dist}{spec}, which is not installed")
            continue
        try:
            ok = spec_set.contains(installed, prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            problems.append(f"requires.{dist}: the recipe needs {dist}{spec}, installed is {installed}")
    return problems


def _check_specs(doc: RecipeDoc, catalogue: Catalogue) -> list[str]:
    problems = []
    src = doc.source.spec if isinstance(doc.source, SourceDoc) else doc.source
    if src:
        scheme = src.split(":", 1)[0]
        if ":" not in src or scheme not in catalogue.sources:
            problems.append(f"source: {src!r} is not a source spec "
                            f"({', '.join(f'{s}:...' for s in sorted(catalogue.sources)) or 'no source plugin installed'})")
    for i, rep in enumerate(doc.report):
        scheme = rep.split(":", 1)[0]
        if ":" not in rep or scheme not in catalogue.reporters:
            problems.append(f"report[{i}]: {rep!r} is not a report spec "
                            f"({', '.join(f'{s}:PATH' for s in sorted(catalogue.reporters))})")
    return problems
