"""Plugin discovery, load errors, operator switches, registration checks, and a real third-party install."""
from __future__ import annotations

import inspect
import json
import re
import textwrap
from pathlib import Path

import pluggy
import pytest

from host import InspectTool, NoParams, PluginError, ToolOutput, create_plugin_manager, hookimpl
from host.core import hookspecs
from host.testing import check_tool_contract, run_loupe

ROOT = Path(__file__).resolve().parents[2]


def test_every_hook_is_documented():
    specs = {n: f for n, f in vars(hookspecs).items() if n.startswith("loupe_") and callable(f)}
    assert len(specs) >= 10
    docs = (ROOT / "docs" / "plugins.md").read_text()
    for name, fn in specs.items():
        doc = inspect.getdoc(fn) or ""
        assert len(doc) > 80, f"{name} has no real docstring"
        assert re.search(r"\b(Called|Broadcast)\b", doc), f"{name}: say when it is called"
        for param in inspect.signature(fn).parameters:
            assert f":param {param}:" in doc, f"{name}: parameter {param} is not documented"
        assert "return" in doc.lower(), f"{name}: say what the return value means"
        assert f"`{name}" in docs, f"{name} is missing from docs/plugins.md"


def test_builtins_and_installed_plugins_are_listed():
    r = run_loupe("plugins", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    by_name = {p["name"]: p for p in info["plugins"]}
    assert by_name["host.reporters.plugin"]["distribution"] == "loupe-host"
    for name, dist in (("classical", "loupe-classical"), ("dl_classify", "loupe-dl-classify"),
                       ("dl_anomaly", "loupe-dl-anomaly"), ("trainer", "loupe-trainer")):
        assert by_name[name]["distribution"] == dist and by_name[name]["error"] is None
    assert "loupe_report" in by_name["host.reporters.plugin"]["hooks"]
    assert "classical.intensity" in by_name["classical"]["provides"]


def test_a_broken_plugin_is_reported_and_the_others_load(support_env):
    r = run_loupe("plugins", "--json", env=support_env)
    assert r.returncode == 0, r.stderr
    by_name = {p["name"]: p for p in json.loads(r.stdout)["plugins"]}
    broken = by_name["testsupport_broken"]
    assert broken["distribution"] == "loupe-testsupport" and broken["version"] == "0.3.0"
    assert "ImportError" in broken["error"] and "unobtainium" in broken["error"]
    assert by_name["testsupport"]["error"] is None and "testsupport.sleep" in by_name["testsupport"]["provides"]
    text = run_loupe("plugins", env=support_env)
    assert "testsupport_broken" in text.stdout and "FAILED" in text.stdout


def test_operator_switches(support_env):
    def names(**env):
        r = run_loupe("plugins", "--json", env={**support_env, **env})
        assert r.returncode == 0, r.stderr
        return {p["name"] for p in json.loads(r.stdout)["plugins"]}

    from host.core.manager import DEFAULT_PLUGINS  # the host's built-ins (reporters, commands)

    assert names(LOUPE_DISABLE_PLUGIN_AUTOLOAD="1") == set(DEFAULT_PLUGINS)
    assert names(LOUPE_PLUGINS="classical") == set(DEFAULT_PLUGINS) | {"classical"}
    blocked = names(LOUPE_BLOCK_PLUGINS="testsupport_broken,dl_anomaly")
    assert "testsupport_broken" not in blocked and "dl_anomaly" not in blocked and "classical" in blocked


class Misspelt:
    @hookimpl
    def loupe_inspekt(self, register):  # typo: must fail loudly, not silently never run
        pass


def test_misspelt_hookimpl_fails_loudly(loupe_pm, register_plugin):
    with pytest.raises(pluggy.PluginValidationError):
        register_plugin(Misspelt(), "misspelt")


class Good(InspectTool):
    id = "t.good"
    Params = NoParams

    def inspect(self, image):
        return ToolOutput({})


def _plugin(*classes):
    class P:
        @hookimpl
        def loupe_inspect(self, register):
            for c in classes:
                register(c)
    return P()


def test_registration_is_checked(register_plugin):
    class NoId(Good):
        id = "Bad Id"

    class Abstract(InspectTool):
        id = "t.abstract"

    class NotATool:
        id = "t.nope"

    for bad, needle in ((NoId, "namespaced id"), (Abstract, "does not implement inspect"),
                        (NotATool, "not a InspectTool subclass")):
        pm = register_plugin(_plugin(bad), f"p_{bad.__name__}")
        with pytest.raises(PluginError, match=needle):
            pm.catalogue
        pm.unregister_plugin(f"p_{bad.__name__}")
    pm = register_plugin(_plugin(Good), "one")
    pm = register_plugin(_plugin(Good), "two")
    with pytest.raises(PluginError, match="already registered by plugin 'one'"):
        pm.catalogue


def test_registered_plugin_is_removed_at_teardown(register_plugin, loupe_pm):
    register_plugin(_plugin(Good), "temp")
    assert "t.good" in loupe_pm.catalogue.tools
    assert loupe_pm.catalogue.tools["t.good"].distribution == "(test)"


def test_every_registered_tool_keeps_the_contract():
    """The contract test over every installed tool that runs with its default parameters."""
    import skimage.data

    cat = create_plugin_manager().catalogue
    image = skimage.data.astronaut()[:, :, ::-1].copy()  # BGR, as sources deliver
    checked = 0
    from pydantic import ValidationError

    for tool_id, entry in sorted(cat.tools.items()):
        try:
            entry.cls.Params.model_validate({})
        except ValidationError:
            continue  # needs a model, a template or a size: covered by its plugin's own tests
        check_tool_contract(entry.cls, image)
        checked += 1
    assert checked >= 2


def test_example_plugin_installed_as_a_distribution(tmp_path, pip_target):
    import cv2
    import numpy as np

    env = pip_target(ROOT / "examples" / "loupe-example-plugin", tmp_path / "site")
    assert list((tmp_path / "site").glob("loupe_example_plugin-1.0.0.dist-info"))
    r = run_loupe("plugins", "--json", env=env)
    ex = {p["name"]: p for p in json.loads(r.stdout)["plugins"]}["example"]
    assert ex["distribution"] == "loupe-example-plugin" and ex["version"] == "1.0.0"
    assert ex["provides"] == ["example.dark_fraction"]
    images = tmp_path / "imgs"
    images.mkdir()
    img = np.full((40, 50), 200, np.uint8)
    img[:10, :] = 10  # 500 of 2000 pixels dark
    cv2.imwrite(str(images / "part.png"), img)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        loupe_recipe: 1
        requires: {{loupe-example-plugin: ">=1.0"}}
        source: folder:{images}
        inspect:
          - tool: example.dark_fraction
            params: {{level: 60}}
            limits: {{dark_fraction: {{max: 0.2}}}}
        report: [jsonl:{tmp_path / 'out.jsonl'}]
    """))
    r = run_loupe("run", recipe, env=env)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "out.jsonl").read_text())
    assert res["results"][0]["measurements"] == {"dark_fraction": 0.25, "dark_pixels": 500}
    assert res["verdict"] == "fail" and res["results"][0]["failures"] == ["dark_fraction 0.25 > max 0.20"]
    # without the plugin the same recipe is refused with a clear message
    r = run_loupe("validate", recipe)
    assert r.returncode == 2 and "loupe-example-plugin" in r.stderr


def test_cli_usage_errors_exit_2(tmp_path):
    r = run_loupe("run", tmp_path / "nope.yaml")
    assert r.returncode == 2 and "file not found" in r.stderr
    recipe = tmp_path / "r.yaml"
    recipe.write_text("loupe_recipe: 1\ninspect: [{tool: classical.intensity}]\n")
    r = run_loupe("run", recipe)
    assert r.returncode == 2 and "no source" in r.stderr
    r = run_loupe("run", recipe, "--source", "ftp:x")
    assert r.returncode == 2 and "unknown source kind 'ftp'" in r.stderr
    r = run_loupe("run", recipe, "--source", f"folder:{tmp_path / 'missing'}")
    assert r.returncode == 2 and "folder not found" in r.stderr
    r = run_loupe("run", recipe, "--source", f"folder:{tmp_path}", "--report", "xml:out")
    assert r.returncode == 2 and "unknown reporter 'xml'" in r.stderr
    r = run_loupe("run", recipe, "--source", f"folder:{tmp_path}", "--source-opt", "patern=*.png")
    assert r.returncode == 2 and "patern" in r.stderr
    r = run_loupe("train", "nosuchtask", "data", "--out", "b")
    assert r.returncode == 2 and "no trainer for task 'nosuchtask'" in r.stderr
    r = run_loupe("eval", tmp_path, tmp_path)
    assert r.returncode == 2 and "not a model bundle" in r.stderr
    for r in (run_loupe("frobnicate"),):
        assert r.returncode == 2
    r = run_loupe("tools", "--json")
    assert r.returncode == 0
    tools = {t["id"]: t for t in json.loads(r.stdout)["tools"]}
    assert tools["classical.intensity"]["measurements"]["mean"]


HOSTILE = {
    "setup.cfg": """\
        [metadata]
        name = loupe-hostile
        version = 6.6.6

        [options]
        py_modules = hostile_raises, hostile_misspelt, hostile_dup, hostile_half

        [options.entry_points]
        loupe.plugins =
            aaa_dup = hostile_dup
            hostile_raises = hostile_raises
            hostile_misspelt = hostile_misspelt
            hostile_half = hostile_half
        """,
    "pyproject.toml": """\
        [build-system]
        requires = ["setuptools>=64", "wheel"]
        build-backend = "setuptools.build_meta"
        """,
    # its registration hook raises
    "hostile_raises.py": """\
        from host import hookimpl

        @hookimpl
        def loupe_inspect(register):
            raise RuntimeError("registration exploded")
        """,
    # a misspelt hook name
    "hostile_misspelt.py": """\
        from host import hookimpl

        @hookimpl
        def loupe_inspekt(register):
            pass
        """,
    # registers an id the classical plugin owns; its entry point sorts (and loads) before classical
    "hostile_dup.py": """\
        from host import InspectTool, NoParams, ToolOutput, hookimpl

        class FakeBlob(InspectTool):
            id = "classical.blob"
            Params = NoParams

            def inspect(self, image):
                return ToolOutput({"count": 0})

        @hookimpl
        def loupe_inspect(register):
            register(FakeBlob)
        """,
    # registers a good tool, then its reporter hook raises: none of its registrations stay
    "hostile_half.py": """\
        from host import InspectTool, NoParams, ToolOutput, hookimpl

        class Half(InspectTool):
            id = "hostile_half.tool"
            Params = NoParams

            def inspect(self, image):
                return ToolOutput({})

        @hookimpl
        def loupe_inspect(register):
            register(Half)

        @hookimpl
        def loupe_report(register):
            raise ValueError("half-way")
        """,
}


def test_hostile_plugins_fail_alone(tmp_path, pip_target, image_dir):
    """A plugin whose hook raises, one with a misspelt hook and one that takes classical.blob are each
    FAILED with their distribution and error; every other plugin and command keeps working."""
    src = tmp_path / "hostile"
    src.mkdir()
    for name, text in HOSTILE.items():
        (src / name).write_text(textwrap.dedent(text))
    env = pip_target(src, tmp_path / "site")
    r = run_loupe("plugins", "--json", env=env)
    assert r.returncode == 0, r.stderr
    by_name = {p["name"]: p for p in json.loads(r.stdout)["plugins"]}
    for name, needle in (("hostile_raises", "registration exploded"), ("hostile_misspelt", "loupe_inspekt"),
                         ("aaa_dup", "'classical.blob' belongs to plugin 'classical'"), ("hostile_half", "half-way")):
        p = by_name[name]
        assert p["distribution"] == "loupe-hostile" and p["version"] == "6.6.6", p
        assert p["error"] and needle in p["error"], p
        assert p["provides"] == []
    assert "did you mean loupe_inspect" in by_name["hostile_misspelt"]["error"]
    assert by_name["classical"]["error"] is None and "classical.blob" in by_name["classical"]["provides"]
    text = run_loupe("plugins", env=env)
    assert text.returncode == 0 and text.stdout.count("FAILED") == 4
    tools = json.loads(run_loupe("tools", "--json", env=env).stdout)["tools"]
    blob = next(t for t in tools if t["id"] == "classical.blob")
    assert blob["distribution"] == "loupe-classical"
    assert not any(t["id"] == "hostile_half.tool" for t in tools)
    # a recipe that uses classical.blob runs on the real tool
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"loupe_recipe: 1\nsource: folder:{image_dir}\ninspect: [{{tool: classical.blob}}]\n"
                      f"report: [jsonl:{tmp_path / 'out.jsonl'}]\n")
    r = run_loupe("run", recipe, "-q", env=env)
    assert r.returncode == 0, r.stderr
    first = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert "count" in first["results"][0]["measurements"] and "total_area" in first["results"][0]["measurements"]
    # LOUPE_TRACE_HOOKS traces the registration hooks too, failures included
    r = run_loupe("tools", env={**env, "LOUPE_TRACE_HOOKS": "1"})
    assert r.returncode == 0, r.stderr
    assert "loupe_inspect [plugin classical] registered classical.blob" in r.stderr
    assert "plugin hostile_raises left out" in r.stderr


def test_strict_manager_raises_for_plugin_authors(register_plugin):
    """The ``register_plugin`` fixture's manager is strict: a plugin author's broken hook raises."""
    class Raises:
        @hookimpl
        def loupe_inspect(self, register):
            raise RuntimeError("nope")

    pm = register_plugin(Raises(), "raises")
    with pytest.raises(PluginError, match="nope"):
        pm.catalogue


def test_lenient_manager_leaves_a_failing_plugin_out():
    pm = create_plugin_manager(autoload=False)

    class Raises:
        @hookimpl
        def loupe_report(self, register):
            raise RuntimeError("nope")

    pm.register_plugin(Raises(), name="raises", distribution="x-dist", version="1")
    assert "jsonl" in pm.catalogue.reporters  # the host's own reporters stay
    info = pm.load_report.get("raises")
    assert "nope" in info.error and not pm.has_plugin("raises")


def test_host_commands_are_an_internal_plugin():
    """bench, demo and bundle are registered through loupe_commands by the host's own plugin, and
    the command line no longer imports them (no cli <-> bench <-> demo circle)."""
    pm = create_plugin_manager(autoload=False)
    cmds = pm.catalogue.commands
    assert {"bench", "demo", "bundle"} <= set(cmds)
    assert {cmds[c].plugin for c in ("bench", "demo", "bundle")} == {"host.commands.plugin"}
    cli_src = (ROOT / "host" / "cli.py").read_text()
    assert "HOST_COMMANDS" not in cli_src and "PLUGIN_COMMANDS" not in cli_src
    for mod in ("bench", "demo"):
        src = (ROOT / "host" / "commands" / f"{mod}.py").read_text()
        assert "from ..cli" not in src and "from host.cli" not in src and "from .cli" not in src
    assert not (ROOT / "host" / "bench.py").exists() and not (ROOT / "host" / "demo.py").exists()


def test_option_errors_name_the_option_or_the_options():
    """A field's error names its option; a model-level validator's error (no field) is a usage error too."""
    import argparse

    from pydantic import BaseModel, field_validator, model_validator

    from host.commands.support import model_from_args
    from host.core.errors import UsageError

    class P(BaseModel):
        a: int = 1
        b: int = 2

        @field_validator("a")
        @classmethod
        def positive(cls, v):
            if v <= 0:
                raise ValueError("must be positive")
            return v

        @model_validator(mode="after")
        def ordered(self):
            if self.a > self.b:
                raise ValueError("--a must not exceed --b")
            return self

    with pytest.raises(UsageError, match=r"^option --a: Value error, must be positive$"):
        model_from_args(P, argparse.Namespace(opt_a=0, opt_b=None))
    with pytest.raises(UsageError, match=r"^options: Value error, --a must not exceed --b$"):
        model_from_args(P, argparse.Namespace(opt_a=5, opt_b=3))
    assert model_from_args(P, argparse.Namespace(opt_a=2, opt_b=None)).a == 2


def test_every_help_page_renders():
    """`loupe ... --help` for every command and sub-command of the installed plugins: a plugin's description is
    plain text (a '%' in it once crashed `loupe train detect --help`)."""
    import argparse

    from host.cli import build_parser
    from host.commands.support import add_model_options
    from pydantic import Field

    pm = create_plugin_manager()
    pages = 0
    todo = [build_parser(pm)]
    while todo:
        parser = todo.pop()
        assert parser.format_help()
        pages += 1
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    assert pages >= 20

    class Odd(NoParams):
        share: float = Field(0.4, description="~40 % more CPU, 100% of the images")

    p = argparse.ArgumentParser(prog="odd")
    add_model_options(p, Odd)
    assert "~40 % more CPU, 100% of the images (default: 0.4)" in " ".join(p.format_help().split())
