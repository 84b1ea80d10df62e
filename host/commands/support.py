"""What the command line and the host's own commands share: option flags from parameter
models, progress bars, ``--source-opt`` parsing, JSON output."""
from __future__ import annotations

import argparse
import sys
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from ..core.contracts import Progress
from ..core.errors import UsageError


def add_model_options(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """Turn a pydantic parameter model's fields into ``--option`` flags."""
    for name, field in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        ann = field.annotation
        origin = typing.get_origin(ann)
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
            ann, origin, args = args[0], typing.get_origin(args[0]), list(typing.get_args(args[0]))
        default = field.get_default(call_default_factory=True)
        help_text = (field.description or "").rstrip(".")
        help_text = f"{help_text} (default: {default})" if help_text else f"default: {default}"
        help_text = help_text.replace("%", "%%")  # plain text: argparse would read a '%' as a format field
        kw: dict[str, Any] = {"dest": f"opt_{name}", "default": None, "help": help_text}
        metavar = name.upper()
        if ann is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif origin is typing.Literal:
            parser.add_argument(flag, choices=[str(a) for a in typing.get_args(ann)], **kw)
        elif origin in (list, tuple):
            parser.add_argument(flag, nargs="+", metavar=metavar, **kw)
        elif ann in (int, float):
            parser.add_argument(flag, type=ann, metavar=metavar, **kw)
        else:
            parser.add_argument(flag, metavar=metavar, **kw)


def model_from_args(model: type[BaseModel], args: argparse.Namespace, extra: dict[str, Any] | None = None,
                    what: str = "option") -> BaseModel:
    values = {name: getattr(args, f"opt_{name}") for name in model.model_fields
              if getattr(args, f"opt_{name}", None) is not None}
    values.update(extra or {})
    try:
        return model.model_validate(values)
    except ValidationError as exc:  # a field's error names its option; a model-level one (no loc) the options
        raise UsageError("; ".join(f"{what} --{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" if e["loc"]
                                   else f"{what}s: {e['msg']}" for e in exc.errors())) from None


# ------------------------------------------------------------------ progress


class CliProgress(Progress):
    """tqdm bars for long jobs; one bar per stage, metrics in the postfix."""

    def __init__(self, quiet: bool = False) -> None:
        super().__init__()
        self.quiet = quiet
        self._bar = None
        self._stage = None

    def on_update(self, stage, done, total, metrics):
        if self.quiet:
            return
        from tqdm import tqdm

        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = tqdm(total=total or None, desc=stage, leave=True, dynamic_ncols=True, file=sys.stderr,
                             disable=None)  # no bar when stderr is not a terminal (logs, CI)
        bar = self._bar
        if total and bar.total != total:
            bar.total = total
        bar.n = done
        if metrics:
            bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in metrics.items()},
                            refresh=False)
        bar.refresh()

    def log(self, message: str) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None


def source_options(pairs: list[str] | None) -> dict[str, Any]:
    """``--source-opt watch=true --source-opt pattern=*.png`` -> {"watch": True, "pattern": "*.png"}."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--source-opt {pair!r}: expected KEY=VALUE (e.g. watch=true)")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def json_default(o):
    from ..core.types import jsonable

    v = jsonable(o)
    if v is o:
        return str(o)
    return v
