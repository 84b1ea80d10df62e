"""`loupe demo`, the main job on its built-in default: sample data, training, a saved recipe, reports."""
from __future__ import annotations

import sqlite3

import yaml

from host.testing import run_loupe


def test_demo_end_to_end(tmp_path):
    work = tmp_path / "demo"
    r = run_loupe("demo", "--workdir", work, "--quiet", timeout=900)
    assert r.returncode == 0, r.stderr
    assert "good parts passed" in r.stdout
    recipe = yaml.safe_load((work / "inspect.yaml").read_text())
    assert [s["tool"] for s in recipe["inspect"]] == ["classical.intensity", "anomaly.patchcore"]
    assert len(recipe["inspect"][1]["params"]["model"]["sha256"]) == 64
    html = (work / "report" / "index.html").read_text()
    assert html.count('class="card') == 25 and "anomaly.patchcore" in html
    con = sqlite3.connect(work / "results.sqlite")
    verdicts = dict(con.execute("SELECT path, verdict FROM frames").fetchall())
    assert len(verdicts) == 25
    defective = [v for p, v in verdicts.items() if "/good/" not in p]
    assert sum(v != "pass" for v in defective) >= 13  # of 15 defective parts
    good = [v for p, v in verdicts.items() if "/good/" in p]
    assert good.count("pass") >= 7  # of 10 good parts
    # the saved recipe runs again as is
    r = run_loupe("run", work / "inspect.yaml", "--quiet", "--report", f"jsonl:{tmp_path / 'again.jsonl'}")
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "again.jsonl").read_text().splitlines()) == 25
    # the bundle compared with itself on the demo's test split: one row per bundle, metrics from its runtime
    bundle = work / "models" / "brushed_metal.bundle"
    r = run_loupe("bench", "--compare", bundle, bundle, "--data", work / "data" / "brushed_metal", "--limit", "8",
                  "--json", "--out", tmp_path / "bench")
    assert r.returncode == 0, r.stderr
    import json

    rows = json.loads(r.stdout)["rows"]
    assert len(rows) == 2 and rows[0]["images"] == 8 and rows[0]["image_auroc"] == rows[1]["image_auroc"] > 0.9
    assert (tmp_path / "bench" / "bench.md").read_text().count("brushed_metal.bundle") == 2
