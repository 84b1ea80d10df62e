"""The classify.cnn inspect tool: contract, recipe validation, and a run through `loupe run`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from host import Bundle, model_sha256
from host.testing import check_tool_contract, run_loupe


def _recipe(path: Path, bundle: Path, allowed, min_conf=0.5, source=None, limits=True):
    doc = {"loupe_recipe": 1, "name": "trousers",
           "inspect": [{"tool": "classify.cnn", "name": "cnn",
                        "params": {"model": {"path": str(bundle), "sha256": model_sha256(bundle)},
                                   "allowed": allowed, "min_confidence": min_conf}}]}
    if limits:  # without limits the tool's default ({ok: {equals: true}}) applies: the same verdicts
        doc["inspect"][0]["limits"] = {"ok": {"equals": True}}
    if source:
        doc["source"] = source
    path.write_text(yaml.safe_dump(doc))
    return path


def test_tool_contract(tiny_bundle, fmnist_small):
    from loupe_dl_classify.data import read_image
    from loupe_dl_classify.tool import ClassifyTool

    img = read_image(sorted((fmnist_small / "test" / "trouser").iterdir())[0])
    out = check_tool_contract(ClassifyTool, img, {"model": {"path": str(tiny_bundle),
                                                            "sha256": model_sha256(tiny_bundle)},
                                                  "allowed": ["trouser"]})
    m = out.measurements
    assert m["class"] == "trouser" and m["allowed"] is True and m["ok"] is True
    assert 0.34 < m["confidence"] <= 1.0 and m["margin"] >= 0
    assert out.heatmap is not None and out.heatmap.shape == (64, 64)
    # a colour 16-bit image of another size is handled too
    big = (np.random.default_rng(0).integers(0, 65535, (90, 70, 3))).astype(np.uint16)
    out = check_tool_contract(ClassifyTool, big, {"model": {"path": str(tiny_bundle),
                                                            "sha256": model_sha256(tiny_bundle)}})
    assert out.measurements["allowed"] is True  # empty allowed list: every class passes


@pytest.mark.parametrize("limits", [True, False], ids=["explicit-limits", "default-limits"])
def test_recipe_run_verdicts(tiny_bundle, fmnist_small, tmp_path, limits):
    recipe = _recipe(tmp_path / "r.yaml", tiny_bundle, ["trouser"], limits=limits)
    r = run_loupe("validate", recipe)
    assert r.returncode == 0, r.stderr
    src = tmp_path / "mixed"
    src.mkdir()
    for c in ("trouser", "sneaker"):
        for f in sorted((fmnist_small / "test" / c).iterdir())[:5]:
            (src / f"{c}_{f.name}").write_bytes(f.read_bytes())
    (src / "broken.png").write_bytes(b"not a png")  # a bad image must not stop the run
    out = tmp_path / "res.jsonl"
    r = run_loupe("run", recipe, "--source", f"folder:{src}", "--report", f"jsonl:{out}", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 11
    by_name = {Path(x["path"]).name: x for x in rows}
    assert by_name["broken.png"]["verdict"] == "error"
    good = [x for n, x in by_name.items() if n.startswith("trouser")]
    bad = [x for n, x in by_name.items() if n.startswith("sneaker")]
    # the verdict follows the measurement `ok` = allowed and confident
    for x in good + bad:
        m = x["results"][0]["measurements"]
        assert m["ok"] == (m["class"] == "trouser" and m["confidence"] >= 0.5)
        assert x["verdict"] == ("pass" if m["ok"] else "fail")
    assert sum(x["verdict"] == "pass" for x in good) >= 4
    assert sum(x["verdict"] == "fail" for x in bad) >= 4


def test_recipe_rejects_unknown_allowed_class(tiny_bundle, tmp_path):
    recipe = _recipe(tmp_path / "r.yaml", tiny_bundle, ["trousers"])
    r = run_loupe("validate", recipe)
    assert r.returncode == 2
    assert "params.allowed" in r.stderr and "'trousers'" in r.stderr and "Traceback" not in r.stderr


def test_runtime_predictor(tiny_bundle, fmnist_small):
    from loupe_dl_classify.data import read_image
    from loupe_dl_classify.tool import ClassifyRuntime

    predict = ClassifyRuntime().predictor(Bundle.load(tiny_bundle))
    p = predict(read_image(sorted((fmnist_small / "test" / "sneaker").iterdir())[0]))
    assert p["class"] == "sneaker" and abs(sum(p["probabilities"].values()) - 1) < 1e-6


def test_inference_never_imports_torch(tiny_bundle, fmnist_small):
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from host import Bundle\n"
        "from loupe_dl_classify.model import Classifier\n"
        "from loupe_dl_classify.evaluate import evaluate\n"
        "from loupe_dl_classify.tool import ClassifyTool\n"
        f"c = Classifier(Bundle.load({str(tiny_bundle)!r}))\n"
        "c.predict(np.zeros((28, 28), np.uint8))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
