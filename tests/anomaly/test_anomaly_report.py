"""The per-image anomaly evaluation report, and overlays that always point at the anomaly."""
from __future__ import annotations

import csv
import html
import re

import cv2
import numpy as np

from host import Bundle, Frame, Recipe, VERDICT_COLOURS, create_plugin_manager, model_sha256, resolved_overlays
from host.testing import run_loupe

from anomaly_helpers import ENV


def test_eval_out_writes_a_per_image_report(anomaly_eval):
    out, res = anomaly_eval
    assert res["report"] == str(out / "index.html")
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "type", "score", "verdict", "correct"]
    assert len(rows) == 8 + 3 * 4
    scores = [float(x["score"]) for x in rows]
    assert scores == sorted(scores, reverse=True)  # highest first
    for x in rows:
        assert x["verdict"] == ("fail" if float(x["score"]) > 1.0 else "pass")
        assert x["correct"] == str((x["verdict"] == "fail") == (x["type"] != "good")).lower()
        assert x["file"].startswith(x["type"] + "/")
    missed = [x["file"] for x in rows if x["type"] != "good" and x["verdict"] == "pass"]
    rejects = [x["file"] for x in rows if x["type"] == "good" and x["verdict"] == "fail"]
    page = (out / "index.html").read_text(encoding="utf-8")
    assert f"<b>{len(missed)}</b> missed defects" in page and f"<b>{len(rejects)}</b> false rejects" in page
    flagged = re.findall(r'<tr class="wrong" data-flag="([^"]+)"><td>([^<]+)<br>', page)
    assert sorted(flagged) == sorted([("missed defect", f) for f in missed] + [("false reject", f) for f in rejects])
    # the table follows scores.csv's order, and every image has its panel
    listed = re.findall(r'<tr class="(?:ok|wrong)" data-flag="[^"]+"><td>([^<]+)<br>', page)
    assert listed == [html.escape(x["file"]) for x in rows]
    panels = re.findall(r'<img src="(heatmaps/[^"]+)"', page)
    assert len(panels) == len(rows)
    for p in panels:
        img = cv2.imread(str(out / p))
        assert img is not None and img.shape[1] > 1.8 * (img.shape[0] - 24 - 58)  # heatmap | ground truth
    # a defect panel's right half shows the ground truth in magenta
    spot = next(p for p in panels if "spot" in p)
    img = cv2.imread(str(out / spot))
    right = img[24:-58, img.shape[1] // 2 + 4:]
    assert ((right[..., 0] > 200) & (right[..., 1] < 80) & (right[..., 2] > 200)).sum() > 10
    for chart in ("roc.png", "score_histogram.png"):
        assert chart in page
        c = cv2.imread(str(out / chart))
        assert c is not None and c.shape[0] > 300 and c.std() > 5


def test_anomalous_verdict_always_points_at_the_anomaly(anomaly_bundle, texture_data, tmp_path):
    """A step that fails (or goes to review) on its score shows where, even when no pixel of the map is
    above the model's threshold (n_regions == 0): the peak region is drawn in the verdict's colour."""
    from loupe_dl_anomaly.data import read_image
    from loupe_dl_anomaly.runtime import AnomalyModel, region_overlays

    good = sorted((texture_data / "test" / "good").glob("*.png"))[0]
    img = read_image(good)
    model = AnomalyModel(Bundle.load(anomaly_bundle))
    amap, raw = model.raw(img)
    s = raw / model.threshold
    assert s < 1.0
    pm = create_plugin_manager()
    doc = {"loupe_recipe": 1, "inspect": [{"tool": "anomaly.patchcore", "name": "surface", "params": {
        "model": {"path": str(anomaly_bundle), "sha256": model_sha256(anomaly_bundle)}},
        "limits": {"score": {"max": 0.8 * s, "review_max": 1.2 * s}}}]}
    from host.core.runner import Pipeline

    pipe = Pipeline(Recipe.from_dict(doc, pm.catalogue))
    try:
        res = pipe.process(Frame(img, "test", 0, path=str(good)))
    finally:
        pipe.close()
    step = res.results[0]
    assert step.verdict == "review" and step.measurements["n_regions"] == 0
    shapes = resolved_overlays(step)
    assert len(shapes) == 1 and shapes[0].status == "review" and shapes[0].label.startswith("peak ")
    py, px = np.unravel_index(np.argmax(amap), amap.shape)
    sy, sx = img.shape[0] / amap.shape[0], img.shape[1] / amap.shape[1]
    poly = np.asarray(shapes[0].points, np.float32)
    assert cv2.pointPolygonTest(poly, ((px + 0.5) * sx, (py + 0.5) * sy), True) > -2.0
    # on a passing step the peak is not drawn; regions above the threshold keep their verdict's colour
    step.verdict = "pass"
    assert resolved_overlays(step) == []
    bad = read_image(sorted((texture_data / "test" / "scratch").glob("*.png"))[0])
    amap, raw = model.raw(bad)
    shapes, regs = region_overlays(amap, model.threshold * 0.8, bad.shape[:2], model.low)
    assert regs and all(sh.status == "verdict" for sh in shapes)


def test_html_report_labels_and_colours_anomaly_regions(anomaly_bundle, texture_data, tmp_path):
    """In the run report, an anomalous frame's regions are outlined in the fail colour with a readable
    (haloed) score label."""
    import shutil

    shutil.copytree(anomaly_bundle, tmp_path / "model")
    imgs = tmp_path / "images"
    imgs.mkdir()
    for kind in ("good", "scratch", "spot"):
        for p in sorted((texture_data / "test" / kind).glob("*.png"))[:2]:
            shutil.copy(p, imgs / f"{kind}_{p.name}")
    (tmp_path / "r.yaml").write_text(
        "loupe_recipe: 1\nname: m\nsource: folder:images\ninspect:\n  - tool: anomaly.patchcore\n    name: s\n"
        f"    params: {{model: {{path: model, sha256: {model_sha256(tmp_path / 'model')}}}}}\n")
    r = run_loupe("run", "r.yaml", "--report", "html:rep", "-q", cwd=tmp_path, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    recs = [json.loads(x) for x in (tmp_path / "rep" / "frames.jsonl").read_text().splitlines()[1:]]
    failed = [x for x in recs if x["verdict"] == "fail"]
    assert failed
    red = VERDICT_COLOURS["fail"]
    for x in failed:
        assert f'<polygon points' in x["svg"] and f'stroke="{red}"' in x["svg"]
        assert 'paint-order="stroke"' in x["svg"]  # the dark halo under the label
    for x in recs:
        if x["verdict"] == "pass":
            assert red not in x["svg"]
