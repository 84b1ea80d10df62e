"""The anomaly tool in a recipe beside classical.intensity, run with ``loupe run``; heatmaps in the HTML report."""
from __future__ import annotations

import json
import shutil

from host import model_sha256
from host.testing import run_loupe

from anomaly_helpers import ENV

RECIPE = """\
loupe_recipe: 1
name: metal
source: {{spec: "folder:images", pattern: "*.png"}}
inspect:
  - tool: anomaly.patchcore
    name: surface
    params:
      model: {{path: model, sha256: {sha}}}
    limits:
      score: {{max: 1.0, review_max: 1.25}}
  - tool: classical.intensity
    name: light
    limits:
      mean: {{min: 60, max: 220}}
"""


def test_anomaly_tool_in_recipe(anomaly_bundle, texture_data, tmp_path):
    shutil.copytree(anomaly_bundle, tmp_path / "model")
    imgs = tmp_path / "images"
    imgs.mkdir()
    for kind in ("good", "scratch", "spot"):
        for p in sorted((texture_data / "test" / kind).glob("*.png"))[:3]:
            shutil.copy(p, imgs / f"{kind}_{p.name}")
    (imgs / "broken.png").write_bytes(b"not a png")  # a production run survives a bad image
    (tmp_path / "recipe.yaml").write_text(RECIPE.format(sha=model_sha256(tmp_path / "model")))
    r = run_loupe("run", tmp_path / "recipe.yaml", "--report", f"jsonl:{tmp_path / 'out.jsonl'}",
                  "--report", f"html:{tmp_path / 'report'}", "-q", cwd=tmp_path, env=ENV, timeout=300)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 10
    by_name = {row["path"].rsplit("/", 1)[-1]: row for row in rows}
    assert by_name["broken.png"]["verdict"] == "error"
    for name, row in by_name.items():
        if name == "broken.png":
            continue
        steps = {s["step"]: s for s in row["results"]}
        m = steps["surface"]["measurements"]
        assert set(m) >= {"score", "raw_score", "is_anomalous", "n_regions", "anomalous_area"}
        assert m["is_anomalous"] == (m["score"] > 1.0)
        assert steps["light"]["verdict"] == "pass"
        if m["is_anomalous"]:
            assert m["n_regions"] >= 1 and steps["surface"]["overlays"]
    verdicts = [row["verdict"] for n, row in by_name.items() if n.startswith(("scratch", "spot"))]
    assert sum(v != "pass" for v in verdicts) >= 5  # defects flagged (fail or review)
    good = [row["verdict"] for n, row in by_name.items() if n.startswith("good")]
    assert sum(v == "pass" for v in good) >= 2
    html = (tmp_path / "report" / "index.html").read_text()
    assert "anomaly.patchcore" in html and "<img" in html


def test_tool_contract_and_heatmap(anomaly_bundle, texture_data):
    import numpy as np
    from host import StepContext
    from host.testing import check_tool_contract
    from loupe_dl_anomaly.data import read_image
    from loupe_dl_anomaly.runtime import PatchCoreTool

    img = read_image(sorted((texture_data / "test" / "scratch").glob("*.png"))[0])
    out = check_tool_contract(PatchCoreTool, img, {"model": {"path": str(anomaly_bundle),
                                                             "sha256": model_sha256(anomaly_bundle)}},
                              StepContext(step="t"))
    assert out.heatmap is not None and out.heatmap.dtype == np.float32
    assert 0.0 <= out.heatmap.min() and out.heatmap.max() <= 1.0
