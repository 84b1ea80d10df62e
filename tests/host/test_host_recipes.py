"""Recipe validation through the CLI: every bad recipe exits 2 with a message that names the problem."""
from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest

from host import Limit, Recipe, RecipeError, create_plugin_manager
from host.testing import run_loupe

GOOD = """\
loupe_recipe: 1
name: light
source: folder:images
preprocess:
  - tool: classical.gray
inspect:
  - tool: classical.intensity
    name: light
    limits:
      mean: {min: 50, max: 200}
"""


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_good_recipe_validates(tmp_path):
    p = write(tmp_path, GOOD)
    r = run_loupe("validate", p)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout and "light" in r.stdout


BAD = {
    "missing_field": (GOOD.replace("  - tool: classical.intensity\n", "  - name2: x\n"),
                      ["inspect[0]", "tool", "missing field"]),
    "wrong_type": (GOOD.replace("mean: {min: 50, max: 200}", "mean: {min: fifty, max: 200}"),
                   ["inspect[0] (light)", "limits.mean.min", "number"]),
    "unknown_tool": (GOOD.replace("classical.intensity", "classical.intensty"),
                     ["inspect[0] (light)", "unknown tool 'classical.intensty'", "did you mean 'classical.intensity'"]),
    "bad_limit": (GOOD.replace("mean: {min: 50, max: 200}", "mean: {min: 200, max: 50}"),
                  ["inspect[0] (light)", "limits.mean", "min (200.0) is greater than max (50.0)"]),
    "unknown_measurement": (GOOD.replace("mean: {min", "maen: {min"),
                            ["inspect[0] (light)", "limits.maen", "did you mean 'mean'"]),
    "yaml_syntax": (GOOD.replace("name: light\n    limits", "name: [light\n    limits"),
                    ["YAML syntax error", "line"]),
    "schema_version": (GOOD.replace("loupe_recipe: 1", "loupe_recipe: 7"), ["loupe_recipe", "version 7"]),
    "unknown_param": (GOOD.replace("    name: light\n", "    name: light\n    params: {bogus: 1}\n"),
                      ["inspect[0] (light)", "params.bogus", "unknown parameter"]),
    "wrong_stage": (GOOD.replace("- tool: classical.gray", "- tool: classical.intensity"),
                    ["preprocess[0]", "inspect-stage tool; it cannot be used under preprocess"]),
    "bad_report": (GOOD + "report: [xlsx:x]\n", ["report[0]", "xlsx:x"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipe_exits_2_naming_the_problem(tmp_path, case):
    text, needles = BAD[case]
    p = write(tmp_path, text)
    r = run_loupe("validate", p)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert str(p) in r.stderr
    for n in needles:
        assert n in r.stderr, f"{n!r} not in {r.stderr!r}"


def test_model_file_missing_and_hash_mismatch(tmp_path, support_env):
    env = support_env
    model = tmp_path / "weights.bin"
    model.write_bytes(b"\x00" * 1000)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    base = GOOD.replace("  - tool: classical.intensity\n    name: light\n    limits:\n      mean: {min: 50, max: 200}\n",
                        "  - tool: testsupport.model_size\n    name: m\n    params:\n"
                        "      model: {path: MODEL, sha256: HASH}\n")
    ok = write(tmp_path, base.replace("MODEL", "weights.bin").replace("HASH", digest), "ok.yaml")
    r = run_loupe("validate", ok, env=env)
    assert r.returncode == 0, r.stderr

    missing = write(tmp_path, base.replace("MODEL", "nowhere.bin").replace("HASH", digest), "missing.yaml")
    r = run_loupe("validate", missing, env=env)
    assert r.returncode == 2
    assert "inspect[0] (m): params.model.path: model file not found" in r.stderr

    bad = write(tmp_path, base.replace("MODEL", "weights.bin").replace("HASH", "ab" * 32), "bad.yaml")
    r = run_loupe("validate", bad, env=env)
    assert r.returncode == 2
    assert "inspect[0] (m): params.model.sha256: hash mismatch" in r.stderr
    assert "Traceback" not in r.stderr


def test_plugin_requirements_are_checked(tmp_path):
    p = write(tmp_path, GOOD + "requires: {loupe-classical: '>=99'}\n")
    r = run_loupe("validate", p)
    assert r.returncode == 2
    assert "requires.loupe-classical" in r.stderr and "installed is 0.1.0" in r.stderr
    p = write(tmp_path, GOOD + "requires: {loupe-nonexistent: '>=1'}\n")
    r = run_loupe("validate", p)
    assert r.returncode == 2 and "not installed" in r.stderr
    p = write(tmp_path, GOOD + "requires: {loupe-classical: '>=0.1,<1'}\n")
    assert run_loupe("validate", p).returncode == 0


def test_recipe_hash_is_canonical(tmp_path):
    cat = create_plugin_manager().catalogue
    a = Recipe.load(write(tmp_path, GOOD, "a.yaml"), cat)
    # same meaning, different spelling: explicit defaults, other key order, flow style
    b_text = """\
    name: light
    loupe_recipe: 1
    decision: all
    source: folder:images
    preprocess: [{tool: classical.gray, params: {}}]
    inspect: [{name: light, tool: classical.intensity, limits: {mean: {max: 200, min: 50}}}]
    """
    b = Recipe.load(write(tmp_path, b_text, "b.yaml"), cat)
    assert a.hash == b.hash and len(a.hash) == 64
    c = Recipe.load(write(tmp_path, GOOD.replace("max: 200", "max: 201"), "c.yaml"), cat)
    assert c.hash != a.hash
    # the canonical form round-trips through YAML to the same hash
    d = Recipe.load(write(tmp_path, a.to_yaml(), "d.yaml"), cat)
    assert d.hash == a.hash


def test_limit_bands():
    lim = Limit(max=1.0, review_max=1.5)
    assert [lim.check(v) for v in (0.2, 1.0, 1.2, 1.5, 2.0)] == ["pass", "pass", "review", "review", "fail"]
    lim = Limit(min=10, max=20, review_min=5)
    assert [lim.check(v) for v in (4, 5, 10, 20, 21)] == ["fail", "review", "pass", "pass", "fail"]
    assert Limit(equals=True).check(True) == "pass" and Limit(equals=True).check(False) == "fail"
    assert Limit(one_of=["good", "ok"]).check("ok") == "pass" and Limit(one_of=["good"]).check("dent") == "fail"
    assert Limit(min=0).check(float("nan")) == "fail" and Limit(min=0).check("abc") == "fail"
    with pytest.raises(ValueError):
        Limit(review_max=2)


def test_recipe_error_lists_every_problem(tmp_path):
    cat = create_plugin_manager().catalogue
    text = GOOD.replace("classical.gray", "classical.grey").replace("mean: {min", "maen: {min")
    with pytest.raises(RecipeError) as exc:
        Recipe.load(write(tmp_path, text), cat)
    assert len(exc.value.problems) == 2


def test_bundle_rewritten_in_place(tmp_path):
    """write_bundle may read its files from the bundle it replaces (new metadata, same files)."""
    from host import Bundle, write_bundle

    out = tmp_path / "m.bundle"
    first = write_bundle(out, {"task": "demo", "input_size": [8, 8], "v": 1}, {"model.onnx": b"graph", "w.npy": b"weights"})
    first_sha = first.sha256
    again = write_bundle(out, {**first.meta, "v": 2},
                         {n: out / n for n in first.files if n not in ("bundle.json", "manifest.json")})
    b = Bundle.load(out)
    assert b.meta["v"] == 2 and again.sha256 == b.sha256 != first_sha
    assert (out / "model.onnx").read_bytes() == b"graph" and (out / "w.npy").read_bytes() == b"weights"
    assert b.files["model.onnx"] == first.files["model.onnx"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.bundle.")]  # no staging folder left


# ----------------------------------------------------------- budgets and absurd values (issue 10, item 3)

ALIAS_BOMB = """\
loupe_recipe: 1
source:
  spec: folder:.
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
inspect: [{tool: classical.intensity}]
"""


@pytest.mark.parametrize("case", ["alias_bomb", "deep_block", "deep_flow", "too_large"])
def test_recipe_budgets_are_checked_before_work(tmp_path, case):
    """A 450-byte alias bomb (9^9 values), a 100000-deep list and a 2 MB file are refused with one
    clear message; the subprocess timeout only guards against a hang (today the bomb grows to GBs)."""
    text = {
        "alias_bomb": ALIAS_BOMB,
        "deep_block": "loupe_recipe: 1\nsource:\n" + "- " * 100_000 + "x\n",
        "deep_flow": "loupe_recipe: 1\nsource: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "too_large": "loupe_recipe: 1\n" + "# padding\n" * 200_000,
    }[case]
    p = tmp_path / "r.yaml"
    p.write_text(text)
    r = run_loupe("validate", p, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "RecursionError" not in r.stderr
    assert str(p) in r.stderr
    needle = {"alias_bomb": "aliases are counted", "deep_block": "nesting deeper than",
              "deep_flow": "nesting", "too_large": "byte limit"}[case]
    assert needle in r.stderr, r.stderr


def test_load_yaml_is_a_shared_host_function():
    from host import YamlBudgetError, load_yaml

    assert load_yaml("a: [1, 2]\nb: &x {c: 3}\nd: *x\n") == {"a": [1, 2], "b": {"c": 3}, "d": {"c": 3}}
    with pytest.raises(YamlBudgetError, match="expands to more than 50"):
        load_yaml("a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nb: [*a, *a, *a, *a, *a, *a]\n", max_nodes=50)
    with pytest.raises(YamlBudgetError, match="nesting deeper than 3"):
        load_yaml("a: {b: {c: {d: 1}}}", max_depth=3)
    with pytest.raises(YamlBudgetError, match="YAML syntax error") as exc:
        load_yaml("a: [1,\nb: 2")
    assert exc.value.line is not None
    with pytest.raises(YamlBudgetError):
        load_yaml("!!python/object:os.system {}")  # safe_load semantics: no Python tags


ABSURD = {
    "infinite_limit": ("mean: {min: 50, max: 200}", "mean: {min: 1e400}", ["limits.mean.min", "finite number"]),
    "nan_limit": ("mean: {min: 50, max: 200}", "mean: {max: .nan}", ["limits.mean.max", "finite number"]),
    "roi_beyond_any_image": ("    name: light\n", "    name: light\n    roi: [0, 0, 100000, 100000]\n",
                             ["inspect[0] (light)", "roi", "beyond any image"]),
    "resize_65535_squared": ("  - tool: classical.gray\n",
                             "  - tool: classical.gray\n  - tool: classical.resize\n"
                             "    params: {width: 65535, height: 65535}\n",
                             ["preprocess[1] (resize)", "resize target 65535x65535", "Mpx limit"]),
}


@pytest.mark.parametrize("case", sorted(ABSURD))
def test_absurd_values_are_refused_at_validation(tmp_path, case):
    old, new, needles = ABSURD[case]
    assert old in GOOD
    r = run_loupe("validate", write(tmp_path, GOOD.replace(old, new)))
    assert r.returncode == 2, (r.stdout, r.stderr)
    for n in needles:
        assert n in r.stderr, f"{n!r} not in {r.stderr!r}"
    assert "Value error," not in r.stderr


MANY = """\
loupe_recipe: 1
source: folder:images
inspect:
  - tool: classical.blob
    name: coins
    params: {levl: 3, cnt: 2, min_area: -5}
    limits:
      count: {min: 5, max: 2}
      cuont: {max: 3}
  - tool: classical.intensity
    roi: [0, 0, -1, 10]
    bogus_field: 1
report: [xlsx:x]
"""


def test_every_problem_is_reported_at_once_and_located(tmp_path):
    """Several problems in one step (today only the first of levl and cnt), in the step's own fields,
    its limits and the top level all come back together, each with section, index, step and field."""
    cat = create_plugin_manager().catalogue
    with pytest.raises(RecipeError) as exc:
        Recipe.load(write(tmp_path, MANY), cat)
    err = exc.value
    got = {(p.section, p.index, p.step, p.field) for p in err.details}
    want = {("inspect", 0, "coins", "params.levl"), ("inspect", 0, "coins", "params.cnt"),
            ("inspect", 0, "coins", "params.min_area"), ("inspect", 0, "coins", "limits.count"),
            ("inspect", 0, "coins", "limits.cuont"), ("inspect", 1, "intensity", "roi"),
            ("inspect", 1, "intensity", "bogus_field"), ("report", 0, None, "")}
    assert want <= got, got
    assert len(err.problems) == len(err.details) >= len(want)
    for p in err.details:
        assert not p.message.startswith(("Value error", "Assertion failed")), p
    limit = next(p for p in err.details if p.field == "limits.count")
    assert limit.message == "min (5.0) is greater than max (2.0)"
    assert str(limit) == "inspect[0] (coins): limits.count: min (5.0) is greater than max (2.0)"
    assert limit.to_dict() == {"section": "inspect", "index": 0, "step": "coins", "field": "limits.count",
                               "message": "min (5.0) is greater than max (2.0)"}
    r = run_loupe("validate", write(tmp_path, MANY))
    assert r.returncode == 2 and "params.levl" in r.stderr and "params.cnt" in r.stderr
    assert "Value error," not in r.stderr


def test_tools_id_shows_one_tool(tmp_path):
    r = run_loupe("tools", "classical.blob")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "classical.blob" in out and "parameters" in out and "min_area" in out and "default 20" in out
    assert "measurements" in out and "count" in out and "example step" in out
    example = out.split("example step\n", 1)[1]
    import yaml

    step = yaml.safe_load(example)[0]
    assert step["tool"] == "classical.blob"
    # the example is a valid step
    doc = {"loupe_recipe": 1, "inspect": [step]}
    Recipe.from_dict(doc, create_plugin_manager().catalogue)
    j = run_loupe("tools", "anomaly.patchcore", "--json")
    d = __import__("json").loads(j.stdout)
    assert d["id"] == "anomaly.patchcore" and "model" in {p["name"] for p in d["parameters"] if p["required"]}
    assert d["example"]["params"]["model"].keys() == {"path", "sha256"}
    r = run_loupe("tools", "classical.blb")
    assert r.returncode == 2 and "did you mean 'classical.blob'" in r.stderr


def test_model_ref_reads_the_bundle_classes_relative_to_the_recipe(tmp_path):
    from host import ModelRef

    (tmp_path / "m.bundle").mkdir()
    (tmp_path / "m.bundle" / "bundle.json").write_text(json.dumps({"task": "detect", "classes": ["nut", "screw"]}))
    ref = ModelRef(path="m.bundle", sha256="0" * 64)
    assert ref.classes(tmp_path) == ["nut", "screw"]
    assert ModelRef(path=str(tmp_path / "m.bundle"), sha256="0" * 64).classes() == ["nut", "screw"]
    assert ref.classes(tmp_path / "elsewhere") is None          # no bundle there: the model check reports it
    (tmp_path / "m.bundle" / "bundle.json").write_text("{not json")
    assert ref.classes(tmp_path) is None
