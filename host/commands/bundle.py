"""``loupe bundle info BUNDLE``: what a bundle is, its full sha256 and a recipe step that uses it."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import yaml

from ..core.bundle import Bundle
from ..core.contracts import Command
from ..core.recipe import ModelRef


def model_tools(catalogue, task: str) -> list[tuple[str, str]]:
    """(tool id, parameter) of the inspect tools that take a model of ``task``: a ``ModelRef``
    parameter, on a tool namespaced by the task (``anomaly.patchcore`` for ``anomaly``)."""
    out = []
    for tool_id, entry in sorted(catalogue.tools.items()):
        if tool_id.split(".", 1)[0] != task:
            continue
        for name, field in entry.cls.Params.model_fields.items():
            if field.annotation is ModelRef:
                out.append((tool_id, name))
    return out


def bundle_info(pm, path: str | Path) -> dict[str, Any]:
    bundle = Bundle.load(path)
    info = bundle.info
    shown = os.path.relpath(bundle.path) if not Path(path).is_absolute() else str(bundle.path)
    ref = {"path": shown, "sha256": bundle.sha256}
    steps = [{"tool": tool, "params": {param: dict(ref)}} for tool, param in model_tools(pm.catalogue, bundle.task)]
    out: dict[str, Any] = {
        "path": str(bundle.path), "sha256": bundle.sha256, "task": info.task, "model_file": info.model_file,
        "input_size": list(info.input_size), "input": info.input.model_dump(mode="json"),
        "normalisation": info.normalisation.model_dump(mode="json") if info.normalisation else None,
        "threshold": info.threshold, "classes": info.classes,
        "tiling": info.tiling.model_dump(mode="json") if info.tiling else None,
        "files": dict(sorted(bundle.files.items())),
        "metrics": bundle.meta.get("metrics") or {},
        "recipe_step": steps[0] if steps else {"params": {"model": ref}},
    }
    return out


class BundleCommand(Command):
    """``loupe bundle info BUNDLE [--json]``."""

    name = "bundle"
    help = "inspect a model bundle: task, inputs, files, full sha256 and a recipe step using it"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="bundle_action", metavar="ACTION")
        sub.required = True
        s = sub.add_parser("info", help="task, input, classes or threshold, files, full sha256, a recipe snippet")
        s.add_argument("bundle", metavar="BUNDLE")
        s.add_argument("--json", action="store_true", help="print one JSON object")

    def run(self, args: argparse.Namespace) -> int:
        d = bundle_info(args.plugin_manager, args.bundle)
        if args.json:
            print(json.dumps(d, indent=2))
            return 0
        print(f"bundle     {d['path']}")
        print(f"task       {d['task']}")
        print(f"model      {d['model_file']}, input {d['input_size'][0]}x{d['input_size'][1]} "
              f"{d['input']['color']} {d['input']['layout']}")
        if d["classes"]:
            print(f"classes    {', '.join(d['classes'])}")
        if d["threshold"] is not None:
            print(f"threshold  {d['threshold']:.6g}")
        for name, digest in d["files"].items():
            print(f"file       {name}  {digest}")
        print(f"sha256     {d['sha256']}")
        print("\nrecipe step (paste under inspect:):")
        print(yaml.safe_dump([d["recipe_step"]], sort_keys=False).rstrip())
        return 0
