"""Blob analysis on real images: the 24 coins of skimage's coins(), and a ViSP calibration grid."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from host.testing import run_loupe
from loupe_classical.tools.blob import Blob

from classical_helpers import read_jsonl

VISP_GRID = sorted(Path("/usr/share/visp-images-data/ViSP-images/calibration").glob("grid36-0*.pgm"))

COINS_RECIPE = """\
loupe_recipe: 1
name: coins
requires: {loupe-classical: ">=0.1"}
source: folder:images
preprocess:
  - tool: classical.flatfield          # the coins lie under uneven light
    params: {method: blur, mode: divide, size: 151}
  - tool: classical.gaussian
    params: {sigma: 2}
inspect:
  - tool: classical.blob
    name: coins
    params: {polarity: bright, threshold: otsu, min_area: 300}
    limits:
      count: {min: 24, max: 24}
      min_circularity: {min: 0.8}
"""


def test_coins_recipe_counts_24_through_the_cli(tmp_path: Path):
    (tmp_path / "images").mkdir()
    coins = skimage.data.coins()
    cv2.imwrite(str(tmp_path / "images" / "coins.png"), coins)
    cv2.imwrite(str(tmp_path / "images" / "coins_missing.png"), _remove_coin(coins))
    (tmp_path / "coins.yaml").write_text(COINS_RECIPE)
    out = tmp_path / "coins.jsonl"
    r = run_loupe("run", "coins.yaml", "--report", f"jsonl:{out}", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {Path(row["path"]).name: row for row in read_jsonl(out)}
    full = rows["coins.png"]["results"][0]
    assert full["measurements"]["count"] == 24
    assert rows["coins.png"]["verdict"] == "pass"
    # overlays: an outline and a centroid per coin, in image coordinates
    assert sum(1 for s in full["overlays"] if s["kind"] == "polygon") == 24
    cents = np.array(full["measurements"]["centroids"])
    assert cents[:, 0].min() > 0 and cents[:, 0].max() < coins.shape[1]
    missing = rows["coins_missing.png"]["results"][0]
    assert missing["measurements"]["count"] == 23 and rows["coins_missing.png"]["verdict"] == "fail"
    assert any(f.startswith("count=23") for f in missing["failures"])


def _remove_coin(img: np.ndarray) -> np.ndarray:
    """Paint over the top-left coin with the surrounding background."""
    out = img.copy()
    patch = out[5:75, 0:20]
    out[5:75, 20:80] = np.median(patch)
    return out


@pytest.mark.skipif(not VISP_GRID, reason="visp-images-data is not installed")
@pytest.mark.parametrize("path", VISP_GRID, ids=lambda p: p.name)
def test_visp_calibration_grid_dots_and_pitch(path: Path):
    """36 dots (6x6) of ViSP's grid36 target, seen in perspective: count, grid fit and pitch."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    tool = Blob(Blob.Params(polarity="dark", threshold="otsu", min_area=200, min_circularity=0.7,
                            exclude_border=True))
    m = tool.inspect(img).measurements
    assert m["count"] == 36, m["count"]
    pts = np.array(m["centroids"], np.float64)
    # order the dots into the 6x6 grid: rows by y in blocks of 6 (the views are tilted by < 15°)
    order = np.argsort(pts[:, 1])
    grid = np.vstack([row[np.argsort(row[:, 0])] for row in np.split(pts[order], 6)])
    ideal = np.array([(i, j) for j in range(6) for i in range(6)], np.float64)
    H, _ = cv2.findHomography(ideal, grid)
    proj = cv2.perspectiveTransform(ideal[None], H)[0]
    residual = np.linalg.norm(proj - grid, axis=1)
    assert residual.max() < 2.0, residual.max()  # every dot sits on a regular (projected) grid
    # pitch: the tool's median nearest-neighbour distance equals that of the fitted (ideal) grid
    model = cv2.perspectiveTransform(np.array([[(i, j) for j in range(6) for i in range(6)]], np.float64), H)[0]
    d = np.linalg.norm(model[:, None] - model[None], axis=2)
    np.fill_diagonal(d, np.inf)
    model_pitch = float(np.median(d.min(axis=1)))
    assert abs(m["pitch"] - model_pitch) / model_pitch < 0.02, (m["pitch"], model_pitch)
    assert 45 < m["pitch"] < 70  # the dots are about 50-65 px apart in these 640x480 views


def test_grid36_01_pitch_against_hand_measured_truth():
    p = Path("/usr/share/visp-images-data/ViSP-images/calibration/grid36-01.pgm")
    if not p.exists():
        pytest.skip("visp-images-data is not installed")
    img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
    m = Blob(Blob.Params(polarity="dark", min_area=200, min_circularity=0.7, px_per_mm=62.5 / 28.575)).inspect(
        img).measurements
    # top row dot centres read off the image by hand: x ≈ 140, 203, 266, 329, 392, 455 (63 px apart),
    # rows 58-70 px apart; the printed pitch is 1350/1200 in = 28.575 mm (grid2d.fig)
    assert 58 <= m["pitch"] <= 66
    assert abs(m["pitch_mm"] - 28.575) < 28.575 * 0.06


VERDICT_RECIPE = COINS_RECIPE.replace("min_area: 300}", "min_area: 300, max_area: 20000}") + """\
  - tool: classical.blob
    name: no_spots               # a defect check: no dark spot may be found
    params: {polarity: dark, threshold: fixed, level: 5, min_area: 50}
    limits:
      count: {max: 0}
report: ["html:report"]
"""


def test_overlays_take_the_colour_of_the_step_verdict(tmp_path: Path, classical_pm):
    """Blob outlines are drawn in the colour of the step's verdict (the tool cannot know it); a passing step
    with no blob shows no "no blob"; a failing one shows it in the fail colour."""
    from host import VERDICT_COLOURS

    (tmp_path / "images").mkdir()
    coins = skimage.data.coins()
    cv2.imwrite(str(tmp_path / "images" / "a_coins.png"), coins)
    cv2.imwrite(str(tmp_path / "images" / "b_missing.png"), _remove_coin(coins))
    cv2.imwrite(str(tmp_path / "images" / "c_blank.png"), np.full_like(coins, 128))
    (tmp_path / "coins.yaml").write_text(VERDICT_RECIPE)
    r = run_loupe("run", "coins.yaml", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    import json

    recs = {rec["title"].rsplit("/", 1)[-1]: rec for rec in map(json.loads, (
        tmp_path / "report" / "frames.jsonl").read_text().splitlines()[1:])}
    green, red = VERDICT_COLOURS["pass"], VERDICT_COLOURS["fail"]
    svg = recs["a_coins.png"]["svg"]
    assert recs["a_coins.png"]["verdict"] == "pass"
    assert len(re.findall(f'<polygon points="[^"]+" stroke="{green}"', svg)) == 24 and red not in svg
    svg = recs["b_missing.png"]["svg"]
    assert recs["b_missing.png"]["verdict"] == "fail"
    assert len(re.findall(f'<polygon points="[^"]+" stroke="{red}"', svg)) == 23 and green not in svg
    # the blank image: the coin step fails (no blob: shown, red); the spot step passes (no blob: not shown)
    blank = recs["c_blank.png"]
    assert [s["verdict"] for s in blank["steps"]] == ["fail", "pass"]
    assert blank["svg"].count("no blob") == 1 and f'fill="{red}"' in blank["svg"]
    # the stored results keep the deferred status; host.resolved_overlays gives what every drawing shows
    from host import Frame, Recipe, resolved_overlays
    from host.core.runner import Pipeline

    pipe = Pipeline(Recipe.load(tmp_path / "coins.yaml", classical_pm.catalogue))
    try:
        res = pipe.process(Frame(np.full_like(coins, 128), "test", 0))
    finally:
        pipe.close()
    assert [s.status for s in res.results[0].overlays] == ["alert"]
    assert [(s.label, s.status) for s in resolved_overlays(res)] == [("no blob", "fail")]
    res_ok = resolved_overlays(res.results[1])
    assert res_ok == []
