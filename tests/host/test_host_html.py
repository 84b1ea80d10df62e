"""The HTML run report: triage (sort, filter, summary per step), JPEG thumbnails, --resume appends, escaping,
file names that are not UTF-8; and the colour rules every drawing shares."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from host.testing import run_loupe



def write_png(path: Path, image: np.ndarray) -> Path:
    import cv2

    assert cv2.imwrite(str(path), image)
    return path

RECIPE = """\
loupe_recipe: 1
name: triage
preprocess:
  - tool: classical.gray
inspect:
  - tool: classical.intensity
    name: light
    limits:
      mean: {min: 100, max: 125}
  - tool: classical.blob
    name: spots
    params: {polarity: bright, threshold: otsu, min_area: 200}
    limits:
      count: {min: 1}
"""


@pytest.fixture
def photos(tmp_path) -> Path:
    """Five real photos (scikit-image), one with markup characters in its name."""
    import skimage.data as data

    d = tmp_path / "images"
    d.mkdir()
    write_png(d / "a_coins.png", data.coins())
    write_png(d / "b_camera.png", data.camera())
    write_png(d / "c_moon.png", data.moon())
    write_png(d / "d_astronaut.png", data.astronaut()[:, :, ::-1].copy())
    write_png(d / 'e_<b>&"x.png', data.text())
    return d


def _records(rep: Path) -> list[dict]:
    lines = (rep / "frames.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(x) for x in lines[1:]]


def test_resume_appends_to_the_report_and_a_new_run_replaces_it(tmp_path, photos):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    rep, db = tmp_path / "rep", tmp_path / "r.sqlite"
    args = ("run", recipe, "--source", f"folder:{photos}", "--report", f"sqlite:{db}", "--report", f"html:{rep}")
    r = run_loupe(*args, "--limit", "2")  # a run cut short
    assert r.returncode == 0, r.stderr
    assert len(_records(rep)) == 2 and "· 2 frames" in (rep / "index.html").read_text()
    r = run_loupe(*args, "--resume")
    assert r.returncode == 0, r.stderr
    page = (rep / "index.html").read_text(encoding="utf-8")
    recs = _records(rep)
    assert "· 5 frames" in page and page.count('<div class="card ') == 5
    assert sorted(Path(x["key"]).name for x in recs) == sorted(p.name for p in photos.iterdir())
    # thumbnails are JPEG files
    thumbs = sorted((rep / "img").iterdir())
    assert thumbs and all(p.suffix == ".jpg" and p.read_bytes()[:2] == b"\xff\xd8" for p in thumbs)
    assert {f"img/{p.name}" for p in thumbs} <= set(re.findall(r'src="(img/[^"]+)"', page))
    # triage: a summary per step, sort by severity / score / any measurement, filter by step and verdict
    assert "Summary per step" in page
    summary = page[page.index("<table class=summary>"):page.index("</table>", page.index("<table class=summary>"))]
    assert "light" in summary and "spots" in summary and "classical.blob" in summary
    assert "mean ×3" in summary  # what failed, counted (coins too dark, camera and text too light)
    for opt in ('value=sev', 'value=score', 'value=order', 'value="m:light.mean"', 'value="m:spots.count"',
                '<option value="light">', '<option value="spots">'):
        assert opt in page, opt
    cards = re.findall(r'<div class="card (\w+)" data-v="(\w+)" data-sev="(\d)"[^>]*data-m="([^"]*)" '
                       r'data-s="([^"]*)"', page)
    assert len(cards) == 5
    import html as htmlmod

    for cls, v, sev, m, s in cards:
        assert cls == v and int(sev) == {"pass": 0, "review": 1, "fail": 2, "error": 3}[v]
        assert set(json.loads(htmlmod.unescape(s))) == {"light", "spots"}
        assert "light.mean" in json.loads(htmlmod.unescape(m))
    assert "grid-template-columns:repeat(auto-fill" in page  # the responsive grid
    # the file name with markup characters is escaped everywhere
    assert "e_&lt;b&gt;&amp;&quot;x.png" in page and 'e_<b>&"x.png' not in page
    check_sort_and_filter_script(rep)
    # a new run without --resume replaces the report
    r = run_loupe(*args, "--limit", "1")
    assert r.returncode == 0, r.stderr
    assert len(_records(rep)) == 1 and "· 1 frames" in (rep / "index.html").read_text()
    assert len(list((rep / "img").iterdir())) == 1


def test_markup_and_undecodable_names_never_break_the_page(tmp_path):
    """Every text is escaped; a file name that is not valid UTF-8 (as Python decodes it: lone surrogates)
    is shown with a replacement character instead of failing the report."""
    import skimage.data as data

    from host import Frame, Recipe, Shape, create_plugin_manager
    from host.core.contracts import RunInfo
    from host.core.runner import Pipeline
    from host.reporters.html import HtmlReporter

    pm = create_plugin_manager()
    recipe = Recipe.from_dict({"loupe_recipe": 1, "name": "<script>x</script>", "inspect": [
        {"tool": "classical.intensity", "name": "<i>step</i>", "limits": {"mean": {"max": 10}}}]}, pm.catalogue)
    run = RunInfo("r1", recipe, recipe.hash, 'folder:/data/<"odd">', time.time())
    rep = HtmlReporter(str(tmp_path / "rep"), run)
    rep.open()
    pipe = Pipeline(recipe)
    try:
        name = b"/data/caf\xe9 <b>.png".decode("utf-8", "surrogateescape")
        res = pipe.process(Frame(data.camera(), "folder", 0, path=name))
        res.results[0].overlays = [Shape("rect", [(5, 5), (50, 50)], label="<b>bold</b>", status="verdict")]
        rep.write(res)
        err = pipe.process(Frame(None, "folder", 1, path="/data/\udcff\udcfe.png", error="cannot <decode>"))
        rep.write(err)
    finally:
        pipe.close()
        rep.close()
    page = (tmp_path / "rep" / "index.html").read_bytes().decode("utf-8")  # valid UTF-8
    # undecodable bytes reach the page as the runner's escapes (caf\xe9), or as U+FFFD where a
    # reporter meets them first: either way the page is valid UTF-8 and the name is legible
    assert ("caf\\xe9 &lt;b&gt;.png" in page or "caf\ufffd &lt;b&gt;.png" in page)
    assert ("\\xff\\xfe.png" in page or "\ufffd\ufffd.png" in page)
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<i>step" not in page and "&lt;i&gt;step&lt;/i&gt;" in page
    assert "<b>bold" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "cannot &lt;decode&gt;" in page and '&lt;&quot;odd&quot;&gt;' in page
    # the rect took the step's verdict (fail: the camera's mean is far above 10)
    from host import VERDICT_COLOURS

    assert f'<rect x="5.0" y="5.0" width="45.0" height="45.0" stroke="{VERDICT_COLOURS["fail"]}"' in page


def test_overlay_status_rules():
    from host import Shape, ToolResult, overlay_status, resolved_overlays

    assert [overlay_status("verdict", v) for v in ("pass", "review", "fail")] == ["pass", "review", "fail"]
    assert [overlay_status("alert", v) for v in ("pass", "review", "fail")] == [None, "review", "fail"]
    assert overlay_status("pass", "fail") == "pass" and overlay_status("whatever", "fail") == "info"
    shapes = [Shape("point", [(1, 1)], status="verdict"), Shape("text", [(0, 0)], "no blob", status="alert"),
              Shape("point", [(2, 2)], status="info")]
    tr = ToolResult("s", "t", "pass", {}, shapes, None, [], 1.0)
    assert [s.status for s in resolved_overlays(tr)] == ["pass", "info"]
    tr.verdict = "review"
    assert [s.status for s in resolved_overlays(tr)] == ["review", "review", "info"]
    assert shapes[0].status == "verdict"  # the stored shapes are not changed


def test_confusion_matrix_colours_follow_one_rule():
    """The rule the CLI PNG and the desktop app share: green from 90 % recall, amber from 70 %, red below."""
    from host import CONFUSION_PASS_AT, CONFUSION_REVIEW_AT, confusion_style

    assert (CONFUSION_PASS_AT, CONFUSION_REVIEW_AT) == (0.90, 0.70)
    cm = np.array([[90, 10, 0, 0], [35, 65, 0, 0], [20, 5, 75, 0], [0, 0, 0, 0]])
    st = confusion_style(cm)
    assert [st[i][i][0] for i in range(4)] == ["pass", "fail", "review", "none"]
    assert st[0][2] == ("none", 0.0) and st[1][0][0] == "fail" and st[1][0][1] == 1.0
    assert st[0][1][0] == "fail" and 0.2 < st[0][1][1] < st[2][0][1] < 1.0  # stronger as the share grows
    assert confusion_style([[60, 40], [0, 100]])[0][0] == ("fail", 1.0)  # 60 % is not green anywhere


SHIM = r"""
// a minimal DOM for the report's script: cards parsed from the page, buttons and selects with handlers
const fs = require('fs');
const page = fs.readFileSync(process.argv[2], 'utf8');
const unesc = s => s.replace(/&quot;/g, '"').replace(/&#x27;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>')
  .replace(/&amp;/g, '&');
const cards = [...page.matchAll(/<div class="card (\w+)" ([^>]*)>/g)].map(m => {
  const dataset = {};
  for (const a of m[2].matchAll(/data-(\w+)="([^"]*)"/g)) dataset[a[1]] = unesc(a[2]);
  return {dataset, style: {display: ''}, title: unesc((page.slice(m.index).match(/<b title="([^"]*)"/) || [])[1])};
});
const order = [];
const grid = {querySelectorAll: () => cards, appendChild: c => order.push(c)};
const selects = {step: {value: ''}, sort: {value: 'sev'}, shown: {}};
const buttons = ['all', 'pass', 'review', 'fail', 'error'].map(f => ({dataset: {f}, classList: {toggle() {}}}));
global.document = {
  getElementById: id => id === 'grid' ? grid : selects[id],
  querySelectorAll: sel => sel.startsWith('button') ? buttons : [],
};
const script = page.slice(page.lastIndexOf('<script>') + 8, page.lastIndexOf('</script>'));
eval(script);
function state(sort, step, verdict) {
  selects.sort.value = sort; selects.step.value = step;
  order.length = 0;
  buttons.find(b => b.dataset.f === verdict).onclick();
  return order.filter(c => c.style.display !== 'none').map(c => c.title.split('/').pop());
}
console.log(JSON.stringify({
  sev: state('sev', '', 'all'), order: state('order', '', 'all'), mean: state('m:light.mean', '', 'all'),
  fail: state('order', '', 'fail'), light_pass: state('order', 'light', 'pass'),
  spots_fail: state('order', 'spots', 'fail')}));
"""


def check_sort_and_filter_script(rep: Path) -> None:
    """The page's own script, run by Node.js over the page's cards: sort by severity, order or a
    measurement; filter by verdict, and by one step's verdict."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        return  # Node.js is not installed: the script is not run
    (rep.parent / "shim.js").write_text(SHIM)
    out = subprocess.run([node, str(rep.parent / "shim.js"), str(rep / "index.html")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    recs = {Path(x["key"]).name: x for x in _records(rep)}
    names = sorted(recs)
    assert got["order"] == names
    sev = {"pass": 0, "review": 1, "fail": 2, "error": 3}
    ranks = [sev[recs[n]["verdict"]] for n in got["sev"]]
    assert ranks == sorted(ranks, reverse=True) and sorted(got["sev"]) == names
    means = [next(s for s in recs[n]["steps"] if s["step"] == "light")["meas"]["mean"] for n in got["mean"]]
    assert means == sorted(means, reverse=True)
    assert got["fail"] == [n for n in names if recs[n]["verdict"] == "fail"] and got["fail"]
    step_v = {n: {s["step"]: s["verdict"] for s in recs[n]["steps"]} for n in names}
    assert got["light_pass"] == [n for n in names if step_v[n]["light"] == "pass"] and got["light_pass"]
    assert got["spots_fail"] == [n for n in names if step_v[n]["spots"] == "fail"]


def test_spc_section_charts_each_limited_measurement(tmp_path, photos):
    """The report's SPC section: per limited measurement, Cp/Cpk and control limits equal host.spc's on the
    stored values (host.spc itself is checked against NIST/SEMATECH examples in tests/postgres), an SVG chart."""
    import re

    from host import spc

    (tmp_path / "r.yaml").write_text(RECIPE)
    r = run_loupe("run", tmp_path / "r.yaml", "--source", f"folder:{photos}", "--report", f"html:{tmp_path / 'rep'}",
                  "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "rep" / "index.html").read_text(encoding="utf-8")
    assert "<h2>SPC</h2>" in page and page.count("<figure><svg") == 2  # light.mean and spots.count
    recs = [json.loads(x) for x in (tmp_path / "rep" / "frames.jsonl").read_text(encoding="utf-8").splitlines()]
    means = [next(s["meas"]["mean"] for s in rec["steps"] if s["step"] == "light") for rec in recs if "steps" in rec]
    assert len(means) == 5
    want = spc.analyse(np.asarray(means), 100, 125)
    row = re.search(r"<tr><td>light\.mean</td>(.*?)</tr>", page).group(1)
    cells = re.findall(r"<td>(.*?)</td>", row)
    # cells after the name: n, mean, sigma, control limits, recipe limits, Cp, Cpk, violations
    assert cells[0] == "5" and cells[5] == f"{want['cp']:.3g}" and cells[6] == f"{want['cpk']:.3g}"
    assert cells[3] == f"{want['_charts'][0].lcl:.3g} · {want['_charts'][0].ucl:.3g}" and cells[4] == "100 · 125"
