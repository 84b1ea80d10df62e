"""A recipe mixing blob, caliper, QR and pattern steps (with ROIs and limits) on a small labelled set."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from host.testing import run_loupe

from classical_helpers import read_jsonl

RECIPE = """\
loupe_recipe: 1
name: plate
requires: {loupe-classical: ">=0.1"}
source: {spec: "folder:parts", pattern: "*.png"}
preprocess:
  - tool: classical.gray
  - tool: classical.median
    params: {ksize: 3}
inspect:
  - tool: classical.blob
    name: holes
    roi: [0, 0, 170, 170]
    params: {polarity: dark, threshold: otsu, min_area: 150}
    limits: {count: {min: 4, max: 4}}
  - tool: classical.caliper
    name: slot
    roi: [180, 20, 120, 130]
    params: {start: [5, 60], end: [115, 60], width: 20}
    limits: {width: {min: 29, max: 31, review_max: 32}}
  - tool: classical.qrcode
    name: label
    roi: [300, 0, 180, 180]
    limits: {text: {equals: PART-OK}}
  - tool: classical.pattern
    name: logo
    roi: [0, 180, 220, 140]
    params: {template: logo.png, min_score: 0.9}
    limits: {count: {min: 1}}
"""


def _logo() -> np.ndarray:
    return cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2GRAY)[80:130, 170:230]


def _plate(holes=4, slot=30.0, label="PART-OK", logo=True, noise=0.0, shift=0) -> np.ndarray:
    img = np.full((320, 480), 200, np.uint8)
    # the slot: a vertical dark bar of `slot` px from x = 220 (area-weighted edges)
    x = np.arange(480, dtype=np.float64)
    cover = np.clip(np.minimum(x + 0.5, 220 + slot - 0.5) - np.maximum(x - 0.5, 219.5), 0, 1)
    img[20:150] = np.round(200 - 160 * cover).astype(np.uint8)[None, :]
    for x, y in [(40, 40), (120, 40), (40, 120), (120, 120)][:holes]:
        cv2.circle(img, (x, y), 14, 40, -1, lineType=cv2.LINE_AA)
    q = cv2.QRCodeEncoder.create().encode(label)
    q = cv2.resize(q, None, fx=5, fy=5, interpolation=cv2.INTER_NEAREST)
    img[20:20 + q.shape[0], 320:320 + q.shape[1]] = q
    if logo:
        img[220:270, 40:100] = _logo()
    out = img.astype(np.float32) + shift
    if noise:
        out += np.random.default_rng(int(noise * 10)).normal(0, noise, out.shape)
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


LABELLED = {  # file -> (expected verdict, the step that must not pass)
    "good_1.png": ("pass", None, _plate()),
    "good_2_noisy_brighter.png": ("pass", None, _plate(noise=3.0, shift=15)),
    "bad_missing_hole.png": ("fail", "holes", _plate(holes=3)),
    "bad_wide_slot.png": ("fail", "slot", _plate(slot=34.0)),
    "review_slot.png": ("review", "slot", _plate(slot=31.6)),
    "bad_wrong_label.png": ("fail", "label", _plate(label="PART-NG")),
    "bad_no_logo.png": ("fail", "logo", _plate(logo=False)),
}


def test_mixed_recipe_gives_expected_verdicts(tmp_path: Path):
    parts = tmp_path / "parts"
    parts.mkdir()
    for name, (_, _, img) in LABELLED.items():
        cv2.imwrite(str(parts / name), img)
    (parts / "truncated.png").write_bytes(cv2.imencode(".png", _plate())[1].tobytes()[:500])
    cv2.imwrite(str(tmp_path / "logo.png"), _logo())
    (tmp_path / "plate.yaml").write_text(RECIPE)
    r = run_loupe("validate", "plate.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_loupe("run", "plate.yaml", "--report", "jsonl:out.jsonl", "--report", "csv:out.csv", "--quiet",
                  cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "8 frames: 2 pass, 1 review, 4 fail, 1 error" in r.stdout
    rows = {Path(row["path"]).name: row for row in read_jsonl(tmp_path / "out.jsonl")}
    for name, (verdict, bad_step, _) in LABELLED.items():
        row = rows[name]
        steps = {res["step"]: res for res in row["results"]}
        assert row["verdict"] == verdict, (name, {k: (v["verdict"], v["failures"]) for k, v in steps.items()})
        for step, res in steps.items():
            assert res["verdict"] == ("pass" if step != bad_step else verdict), (name, step, res["failures"])
    good = {res["step"]: res["measurements"] for res in rows["good_1.png"]["results"]}
    assert abs(good["slot"]["width"] - 30.0) < 0.1
    assert good["label"]["text"] == "PART-OK"
    assert round(good["logo"]["left"]) == 40 and round(good["logo"]["top"]) == 40  # in ROI coordinates
    # overlays come back in image coordinates (the runner shifts them by the ROI)
    logo_box = next(s for s in rows["good_1.png"]["results"][3]["overlays"] if s["kind"] == "polygon")
    assert abs(min(p[0] for p in logo_box["points"]) - 40) <= 1 and abs(min(p[1] for p in logo_box["points"]) - 220) <= 1
    assert rows["truncated.png"]["verdict"] == "error" and "truncated.png" in rows["truncated.png"]["error"]
    with open(tmp_path / "out.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8 and abs(float(next(t for t in table if t["key"].endswith("good_1.png"))["slot.width"]) - 30) < 0.1
