"""``loupe plugin new NAME``: write a working plugin distribution (a tool, a reporter, tests, a CI script).

In the spirit of datasette's cookiecutter plugin template: what it writes installs with ``pip install -e .``,
registers under the ``loupe.plugins`` entry point, and passes its own tests (``ci.sh``). Registered as one
of the host's internal plugins (``host.core.manager.DEFAULT_PLUGINS``).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from string import Template

from .. import hookimpl
from ..core.contracts import Command
from ..core.errors import UsageError

NAME = re.compile(r"^[a-z][a-z0-9_]*$")

FILES: dict[str, str] = {}

FILES["setup.cfg"] = """\
# A Loupe plugin is an ordinary distribution with an entry point in the "loupe.plugins" group.
[metadata]
name = loupe-$name
version = 0.1.0
description = $description
long_description = file: README.md
long_description_content_type = text/markdown
author = $author

[options]
packages = find:
python_requires = >=3.11
install_requires =
    loupe-host>=0.1
    numpy

[options.packages.find]
exclude =
    tests
    tests.*

[options.extras_require]
test =
    pytest

[options.entry_points]
loupe.plugins =
    $name = loupe_$name.plugin
"""

FILES["pyproject.toml"] = """\
[build-system]
requires = ["setuptools>=64", "wheel"]
build-backend = "setuptools.build_meta"
"""

FILES["README.md"] = """\
# loupe-$name

$description

## Install

    pip install -e .

Check that Loupe sees it:

    loupe plugins            # lists "$name" with its distribution loupe-$name
    loupe tools              # lists $name.brightness and the $name reporter

## Use it in a recipe

```yaml
loupe_recipe: 1
name: brightness-check
source: folder:images
inspect:
  - tool: $name.brightness
    name: light
    params: {level: 128}
    limits:
      mean: {min: 60, max: 200}
report: ["$name:results.tsv"]
```

## Develop

    ./ci.sh                  # installs the plugin with its test extra and runs tests/

The tests use the helpers that come with loupe-host (`host.testing`, a pytest plugin):
`check_tool_contract`, `check_reporter_contract` and the `run_recipe` / `register_plugin` fixtures.
The contracts are in loupe's `docs/plugins.md`.
"""

FILES["ci.sh"] = """\
#!/bin/sh
# CI for loupe-$name: install the plugin (and its test extra) beside loupe-host, then run its tests.
# LOUPE_HOST: how to install the host (default "loupe-host"; e.g. a path to a loupe checkout).
set -eu
cd "$$(dirname "$$0")"
python -c 'import sys; assert sys.version_info >= (3, 11), "loupe-$name needs Python >= 3.11"'
if ! python -c 'import host' 2>/dev/null; then
    python -m pip install "$${LOUPE_HOST:-loupe-host}"
fi
python -m pip install -e ".[test]"
python -m pytest -q tests
"""

FILES[".github/workflows/test.yml"] = """\
name: test
on: [push, pull_request]
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - run: sh ci.sh
"""

FILES[".gitignore"] = """\
__pycache__/
*.egg-info/
build/
dist/
.pytest_cache/
"""

FILES["loupe_$name/__init__.py"] = """\
\"\"\"loupe-$name: $description\"\"\"

__version__ = "0.1.0"
"""

FILES["loupe_$name/plugin.py"] = """\
\"\"\"Hook implementations of loupe-$name: one inspection tool and one reporter.

The contracts (what a tool and a reporter must do) are in loupe's docs/plugins.md.
\"\"\"
from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from host import FrameResult, InspectTool, Params, Reporter, Shape, ToolOutput, hookimpl


class BrightnessParams(Params):
    level: float = Field(128.0, ge=0, description="gray level at or above which a pixel counts as bright")


class Brightness(InspectTool):
    \"\"\"Mean gray level and the share of bright pixels.\"\"\"

    id = "$name.brightness"                  # namespaced by the plugin, unique
    title = "Brightness"
    description = "mean gray level and the share of pixels at or above a level"
    Params = BrightnessParams
    measurements = {"mean": "mean gray level (image units: 0-255 for 8-bit images)",
                    "bright_fraction": "share of pixels at or above the level (0..1)"}

    def inspect(self, image: np.ndarray) -> ToolOutput:
        gray = image if image.ndim == 2 else image.mean(axis=2)
        if gray.size == 0:                   # nothing to measure: NaN, never a made-up number
            return ToolOutput({"mean": math.nan, "bright_fraction": math.nan})
        frac = float(np.count_nonzero(gray >= self.params.level)) / gray.size
        h, w = gray.shape[:2]
        return ToolOutput({"mean": float(gray.mean()), "bright_fraction": frac},
                          overlays=[Shape("rect", [(0.0, 0.0), (w - 1.0, h - 1.0)], label=f"bright {frac:.0%}")])


def _cell(text: str) -> str:
    return " ".join(str(text).split())       # no tab or newline inside a cell


class TsvReporter(Reporter):
    \"\"\"One tab-separated line per frame: key, verdict, reasons.\"\"\"

    scheme = "$name"                         # used as "$name:PATH" in a recipe's report list
    description = "one tab-separated line per frame (key, verdict, reasons)"

    def open(self) -> None:
        # a file name that is not valid UTF-8 must not stop the line: write it escaped
        self._file = open(self.target, "a", encoding="utf-8", errors="backslashreplace", newline="")

    def write(self, result: FrameResult) -> None:
        reasons = [f for r in result.results for f in r.failures]
        if result.error:
            reasons.append(result.error)
        self._file.write(f"{_cell(result.key)}\\t{result.verdict}\\t{_cell('; '.join(reasons))}\\n")

    def close(self) -> None:
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()
            self._file = None


@hookimpl
def loupe_inspect(register):
    register(Brightness)


@hookimpl
def loupe_report(register):
    register(TsvReporter)
"""

FILES["tests/test_plugin.py"] = """\
\"\"\"loupe-$name's own tests, with the helpers of host.testing (installed with loupe-host).\"\"\"
import math

import numpy as np

from host import create_plugin_manager
from host.testing import check_reporter_contract, check_tool_contract

from loupe_$name import plugin
from loupe_$name.plugin import Brightness, TsvReporter


def test_tool_contract():
    image = np.zeros((20, 30), np.uint8)
    image[:, :15] = 200
    out = check_tool_contract(Brightness, image, {"level": 128})
    assert out.measurements["bright_fraction"] == 0.5
    assert out.measurements["mean"] == 100.0


def test_tool_colour_and_empty_images():
    colour = np.full((4, 4, 3), 250, np.uint8)
    assert check_tool_contract(Brightness, colour).measurements["bright_fraction"] == 1.0
    empty = check_tool_contract(Brightness, np.zeros((0, 5), np.uint8))
    assert math.isnan(empty.measurements["mean"])


def test_reporter_contract(tmp_path):
    target = tmp_path / "out.tsv"
    written = check_reporter_contract(TsvReporter, target)
    rows = [line.split("\\t") for line in target.read_text(encoding="utf-8").splitlines()]
    assert [r[1] for r in rows] == [r.verdict for r in written]


def test_recipe_in_process(register_plugin, run_recipe, tmp_path):
    pm = register_plugin(plugin, "$name")
    dark, light = np.full((10, 10), 20, np.uint8), np.full((10, 10), 220, np.uint8)
    run = run_recipe({"inspect": [{"tool": "$name.brightness", "name": "light",
                                   "limits": {"mean": {"min": 100}}}]},
                     [dark, light], pm=pm, reports=["$name:out.tsv"])
    assert run.verdicts == ["fail", "pass"]
    assert run.measurements("light")[1]["mean"] == 220.0
    assert len((tmp_path / "out.tsv").read_text(encoding="utf-8").splitlines()) == 2


def test_installed_entry_point():
    pm = create_plugin_manager()
    entry = pm.catalogue.tools["$name.brightness"]
    assert entry.distribution == "loupe-$name"
    assert "$name" in pm.catalogue.reporters
"""


def render(name: str, description: str = "", author: str = "") -> dict[str, str]:
    """The plugin distribution for ``name``: relative path -> file text."""
    if not NAME.match(name):
        raise UsageError(f"plugin name {name!r}: use lower-case letters, digits and '_', starting with a letter "
                         f"(it becomes the tool namespace '{name}.…' and the package 'loupe_{name}')")
    values = {"name": name, "description": description or f"Loupe plugin {name}: a tool and a reporter",
              "author": author or "unknown"}
    return {Template(path).substitute(values): Template(text).substitute(values) for path, text in FILES.items()}


def write_plugin(name: str, out: Path, description: str = "", author: str = "", taken: set[str] = frozenset()
                 ) -> list[Path]:
    """Write the distribution into ``out`` (which must not exist or be empty); returns the files written."""
    if name in taken:
        raise UsageError(f"plugin name {name!r}: an installed plugin already uses the namespace '{name}.'")
    files = render(name, description, author)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out}: already exists and is not empty; choose another --out")
    written = []
    for rel, text in files.items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        if rel.endswith(".sh"):
            p.chmod(0o755)
        written.append(p)
    return written


class PluginCommand(Command):
    name = "plugin"
    help = "plugin authoring: 'loupe plugin new NAME' writes a working plugin distribution"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="plugin_command", metavar="{new}", required=True)
        s = sub.add_parser("new", help="write a plugin distribution (a tool, a reporter, tests, a CI script)")
        s.add_argument("name", help="the plugin's name: the tool namespace and package suffix (e.g. acme)")
        s.add_argument("--out", help="where to write it (default ./loupe-NAME)")
        s.add_argument("--description", default="", help="one line for setup.cfg and the README")
        s.add_argument("--author", default="", help="the author for setup.cfg")

    def run(self, args: argparse.Namespace) -> int:
        from ..core.manager import create_plugin_manager

        cat = create_plugin_manager().catalogue
        taken = {tid.split(".", 1)[0] for tid in cat.tools} | set(cat.reporters)
        out = Path(args.out or f"loupe-{args.name.replace('_', '-')}")
        files = write_plugin(args.name, out, args.description, args.author, taken)
        print(f"wrote loupe-{args.name} to {out}/:")
        for p in files:
            print(f"  {p.relative_to(out)}")
        print(f"next: cd {out} && ./ci.sh   (installs it with pip install -e . and runs its tests)")
        return 0


@hookimpl
def loupe_commands(register):
    register(PluginCommand)
