"""The runner through the CLI and the API: error frames, failing steps, verdicts, reporters."""
from __future__ import annotations

import csv
import json
import sqlite3
import textwrap

import numpy as np
import pytest

from host import Frame, InspectTool, LazyShapes, NoParams, Recipe, Shape, ToolOutput, hookimpl
from host.core.runner import Pipeline
from host.testing import run_loupe

RECIPE = """\
loupe_recipe: 1
name: light
preprocess:
  - tool: classical.gray
inspect:
  - tool: classical.intensity
    name: light
    roi: [0, 0, 100, 100]
    limits:
      mean: {min: 60, max: 200}
"""


def test_bad_images_get_error_verdicts_and_the_run_completes(tmp_path, image_dir):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    db, jl, cs = tmp_path / "r.sqlite", tmp_path / "r.jsonl", tmp_path / "r.csv"
    r = run_loupe("run", recipe, "--source", f"folder:{image_dir}", "--report", f"sqlite:{db}",
                  "--report", f"jsonl:{jl}", "--report", f"csv:{cs}", "--report", f"html:{tmp_path / 'html'}")
    assert r.returncode == 0, r.stderr
    assert "6 frames" in r.stdout and "3 error" in r.stdout
    rows = dict(sqlite3.connect(db).execute("SELECT path, verdict FROM frames").fetchall())
    assert len(rows) == 6
    by_name = {p.rsplit("/", 1)[-1]: v for p, v in rows.items()}
    assert by_name["d_corrupt.png"] == by_name["e_truncated.png"] == by_name["f_empty.png"] == "error"
    assert {by_name["a_coins.png"], by_name["b_camera.png"], by_name["c_moon.png"]} <= {"pass", "fail"}
    lines = [json.loads(x) for x in jl.read_text().splitlines()]
    assert len(lines) == 6
    err = next(x for x in lines if x["path"].endswith("f_empty.png"))
    assert "empty" in err["error"] and err["path"].endswith("f_empty.png")
    with open(cs) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and "light.mean" in table[0]
    # the measurement is the true mean of the ROI of the real image
    import cv2

    coins = cv2.imread(str(image_dir / "a_coins.png"), cv2.IMREAD_GRAYSCALE)
    row = next(x for x in table if x["key"].endswith("a_coins.png"))
    assert float(row["light.mean"]) == pytest.approx(coins[:100, :100].mean(), rel=1e-6)
    html = (tmp_path / "html" / "index.html").read_text()
    assert html.count('class="card') == 6 and "d_corrupt.png" in html
    assert len(list((tmp_path / "html" / "img").glob("*.*"))) == 3  # JPEG thumbnails (PNG without Pillow)


def test_a_csv_file_keeps_one_header(tmp_path, image_dir):
    """A second recipe with other columns (another job of a station, say) reporting to the same CSV file writes
    beside it (<stem>.<recipe name>.csv): no row lands under another recipe's header."""
    first, second = tmp_path / "light.yaml", tmp_path / "dark.yaml"
    first.write_text(RECIPE)
    second.write_text(RECIPE.replace("    name: light", "    name: dark").replace("name: light", "name: dark side"))
    cs = tmp_path / "r.csv"
    for recipe in (first, second, first):
        r = run_loupe("run", recipe, "--source", f"folder:{image_dir}", "--report", f"csv:{cs}")
        assert r.returncode == 0, r.stderr
    with open(cs) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 12 and all(row["extra"] == "" for row in table) and "light.mean" in table[0]
    with open(tmp_path / "r.dark-side.csv") as f:
        other = list(csv.DictReader(f))
    assert len(other) == 6 and "dark.mean" in other[0] and "light.mean" not in other[0]
    assert {row["run_id"] for row in other}.isdisjoint(row["run_id"] for row in table)


def test_source_options_from_the_command_line(tmp_path, image_dir):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    r = run_loupe("run", recipe, "--source", f"folder:{image_dir}", "--source-opt", "pattern=[ab]_*.png",
                  "--report", f"jsonl:{tmp_path / 'o.jsonl'}")
    assert r.returncode == 0, r.stderr
    keys = [json.loads(x)["key"].rsplit("/", 1)[-1] for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert keys == ["a_coins.png", "b_camera.png"]


def test_a_failing_step_gives_an_error_verdict_and_the_run_goes_on(tmp_path, image_dir, support_env):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent("""\
        loupe_recipe: 1
        inspect:
          - tool: testsupport.boom
            params: {above: 100}
          - tool: classical.intensity
    """))
    db = tmp_path / "r.sqlite"
    r = run_loupe("run", recipe, "--source", f"folder:{image_dir}", "--report", f"sqlite:{db}", env=support_env)
    assert r.returncode == 0, r.stderr
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 6
    # coins (mean ~97) passes boom; camera (~118) and moon (~113) are above 100 and raise
    errs = con.execute("SELECT r.error FROM results r WHERE r.verdict='error'").fetchall()
    assert len(errs) == 2 and all("boom" in e[0] for e in errs)
    # the other step still ran on those frames
    n = con.execute("SELECT COUNT(*) FROM results WHERE step='intensity' AND verdict='pass'").fetchone()[0]
    assert n == 3


class Spot(InspectTool):
    """A test tool: finds the brightest pixel and draws it."""

    id = "t.spot"
    Params = NoParams
    measurements = {"x": "x of the brightest pixel", "value": "its value"}

    def inspect(self, image):
        a = image if image.ndim == 2 else image.max(axis=2)
        y, x = np.unravel_index(int(np.argmax(a)), a.shape)
        return ToolOutput({"x": int(x), "value": float(a[y, x])},
                          overlays=[Shape("point", [(float(x), float(y))])])


class SpotPlugin:
    @hookimpl
    def loupe_inspect(self, register):
        register(Spot)


def _frame(img, i=0):
    return Frame(image=img, source="mem", index=i)


def test_roi_review_band_and_decision(register_plugin, tmp_path):
    pm = register_plugin(SpotPlugin(), "spot")
    img = np.zeros((50, 80), np.uint8)
    img[30, 70] = 200
    doc = {"loupe_recipe": 1, "inspect": [
        {"tool": "t.spot", "name": "roi", "roi": [60, 20, 20, 20], "limits": {"value": {"min": 250, "review_min": 150}}},
        {"tool": "t.spot", "name": "whole", "limits": {"x": {"max": 10}}},
    ]}
    recipe = Recipe.from_dict(doc, pm.catalogue, base_dir=tmp_path)
    res = Pipeline(recipe).process(_frame(img))
    roi, whole = res.results
    assert roi.measurements["x"] == 10  # in ROI coordinates
    assert roi.overlays[0].points == [(70.0, 30.0)]  # shifted back to image coordinates
    assert roi.verdict == "review" and whole.verdict == "fail" and res.verdict == "fail"
    assert set(res.timings) == {"roi", "whole"}
    doc["decision"] = "any"
    res = Pipeline(Recipe.from_dict(doc, pm.catalogue)).process(_frame(img))
    assert res.verdict == "fail"  # review + fail: nothing passed
    doc["inspect"][1]["limits"] = {"x": {"min": 60}}
    res = Pipeline(Recipe.from_dict(doc, pm.catalogue)).process(_frame(img))
    assert res.verdict == "pass"
    # an optional step does not decide the verdict
    doc["decision"] = "all"
    doc["inspect"][0]["required"] = False
    res = Pipeline(Recipe.from_dict(doc, pm.catalogue)).process(_frame(img))
    assert res.verdict == "pass" and res.results[0].verdict == "review"
    # a ROI outside the image is an error for that step only
    doc["inspect"][0]["roi"] = [500, 500, 10, 10]
    res = Pipeline(Recipe.from_dict(doc, pm.catalogue)).process(_frame(img))
    assert res.results[0].verdict == "error" and "outside" in res.results[0].error
    # a measurement a limit needs but the tool did not produce fails, it does not pass silently
    assert Pipeline(Recipe.from_dict({"loupe_recipe": 1, "inspect": [
        {"tool": "t.spot", "limits": {"value": {"min": 0}}}]}, pm.catalogue)).process(_frame(img)).verdict == "pass"


class LazySpot(Spot):
    id = "t.lazyspot"
    built = 0

    def inspect(self, image):
        out = super().inspect(image)
        shapes = out.overlays

        def make():
            LazySpot.built += 1
            return shapes

        return ToolOutput(out.measurements, LazyShapes(make))


class LazySpotPlugin:
    @hookimpl
    def loupe_inspect(self, register):
        register(LazySpot)


def test_lazy_overlays_are_built_only_when_read(register_plugin, tmp_path):
    pm = register_plugin(LazySpotPlugin(), "lazyspot")
    img = np.zeros((50, 80), np.uint8)
    img[30, 70] = 200
    doc = {"loupe_recipe": 1, "inspect": [{"tool": "t.lazyspot", "name": "roi", "roi": [60, 20, 20, 20]}]}
    LazySpot.built = 0
    res = Pipeline(Recipe.from_dict(doc, pm.catalogue, base_dir=tmp_path)).process(_frame(img))
    (r,) = res.results
    assert r.measurements["x"] == 10 and LazySpot.built == 0     # verdicts and measurements need no overlays
    assert r.overlays[0].points == [(70.0, 30.0)] and len(r.overlays) == 1  # read: built, shifted to the image
    assert r.to_dict()["overlays"][0]["points"] == [[70.0, 30.0]]
    assert LazySpot.built == 1                                    # and only once


def test_named_inputs(register_plugin):
    import loupe_classical.plugin

    register_plugin(loupe_classical.plugin, "classical")
    pm = register_plugin(SpotPlugin(), "spot")
    doc = {"loupe_recipe": 1, "preprocess": [{"tool": "classical.gray", "name": "g"}],
           "inspect": [{"tool": "t.spot", "name": "a", "input": "raw"}, {"tool": "t.spot", "name": "b", "input": "g"}]}
    img = np.zeros((10, 10, 3), np.uint8)
    img[5, 5] = (0, 0, 255)  # pure red in BGR: gray value 76
    res = Pipeline(Recipe.from_dict(doc, pm.catalogue)).process(_frame(img))
    assert res.results[0].measurements["value"] == 255.0
    assert res.results[1].measurements["value"] == 76.0


class Judged(Spot):
    id = "t.judged"
    default_limits = {"value": {"min": 100}}


class JudgedPlugin:
    @hookimpl
    def loupe_inspect(self, register):
        register(Judged)


def test_default_limits(register_plugin, tmp_path):
    pm = register_plugin(JudgedPlugin(), "judged")
    img = np.zeros((8, 8), np.uint8)
    img[2, 2] = 50
    plain = Recipe.from_dict({"loupe_recipe": 1, "inspect": [{"tool": "t.judged"}]}, pm.catalogue)
    assert plain.inspect[0].limits["value"].min == 100
    assert Pipeline(plain).process(_frame(img)).verdict == "fail"
    informational = Recipe.from_dict({"loupe_recipe": 1, "inspect": [{"tool": "t.judged", "limits": {}}]},
                                     pm.catalogue)
    assert informational.inspect[0].limits == {}
    assert Pipeline(informational).process(_frame(img)).verdict == "pass"
    assert informational.hash != plain.hash
    # the canonical form spells the defaults out and round-trips to the same hash
    again = tmp_path / "again.yaml"
    again.write_text(plain.to_yaml())
    assert Recipe.load(again, pm.catalogue).hash == plain.hash
    again.write_text(informational.to_yaml())
    assert Recipe.load(again, pm.catalogue).hash == informational.hash


def test_limit_fast_path_accepts_only_what_check_passes():
    """The runner accepts an int/float inside a limit's precompiled range without calling
    ``Limit.check``; everything it accepts that way must be what ``check`` passes."""
    import itertools
    import math

    from host import FAIL, PASS, Limit
    from host.core.runner import _pass_range

    limits = [Limit(min=0), Limit(max=1), Limit(min=0, max=255), Limit(min=1, max=1),
              Limit(min=0.5, max=2.5, review_min=0.1, review_max=3), Limit(equals=3), Limit(one_of=["a", 1]),
              Limit(min=-1e308, max=1e308), Limit(min=2 ** 53, max=2 ** 53), Limit(min=0, review_min=-1)]
    values = [0, 1, -1, 7, 255, 256, 0.5, 2.5, 2.6, 0.2, 3.5, math.nan, math.inf, -math.inf, 10 ** 400,
              -10 ** 400, 2 ** 53, 2 ** 53 + 1, 2 ** 53 - 1, True, False, 3, 3.0, "a", 1e308, -0.0]
    taken = 0
    for limit, v in itertools.product(limits, values):
        lo, hi = _pass_range(limit)
        if (type(v) is int or type(v) is float) and lo <= v <= hi:
            taken += 1
            assert limit.check(v) == PASS, (limit, v)
    assert taken > 50
    assert Limit(min=0).check(10 ** 400) == FAIL  # an int beyond any float: a verdict, not an OverflowError
