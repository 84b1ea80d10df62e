"""Recipe validation through the CLI: every bad recipe exits 2 with a message that names the problem."""
from __future__ import annotations

import hashlib
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
    "bad_report": (GOOD + "report: [parquet:x]\n", ["report[0]", "parquet:x"]),
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
