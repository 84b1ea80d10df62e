"""Every classical tool keeps the host's tool contract; preprocess and shape/Hough/pixel tools meet known truth."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from host import StepContext, UsageError
from host.testing import check_tool_contract
from loupe_classical.tools import INSPECT_TOOLS
from loupe_classical.tools.hough import HoughCircles, HoughLines
from loupe_classical.tools.intensity import Intensity, PixelCount, Presence
from loupe_classical.tools.preprocess import (PREPROCESS_TOOLS, Clahe, ColorConvert, Crop, FlatField, Morphology,
                                              Normalize, Resize, Rotate, Threshold)
from loupe_classical.tools.shape import ShapeMeasure

# parameters a tool needs to be built (the rest use defaults)
REQUIRED = {
    "classical.resize": {"scale": 0.5},
    "classical.crop": {"x": 5, "y": 5, "width": 40, "height": 30},
    "classical.caliper": {"start": [5, 30], "end": [90, 30], "width": 5},
    "classical.pattern": {"template": "tpl.png", "min_score": 0.5},
}


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    gray = np.full((64, 96), 200, np.uint8)
    cv2.circle(gray, (48, 32), 15, 40, -1)
    gray = np.clip(gray + rng.normal(0, 4, gray.shape), 0, 255).astype(np.uint8)
    return {"gray8": gray, "bgr8": cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR),
            "gray16": gray.astype(np.uint16) * 257}


@pytest.fixture(scope="module")
def tpl_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tpl")
    cv2.imwrite(str(d / "tpl.png"), _images()["gray8"][17:47, 33:63])
    return d


ALL_TOOLS = PREPROCESS_TOOLS + INSPECT_TOOLS()


def test_every_tool_is_registered_with_described_params(classical_pm):
    cat = classical_pm.catalogue
    for cls in ALL_TOOLS:
        assert cat.tool(cls.id) is not None and cat.tool(cls.id).cls is cls
        assert cls.title and cls.description
        for name, field in cls.Params.model_fields.items():
            if name != "target":
                assert field.description, f"{cls.id}.{name} has no description"
        if cls.stage == "inspect":
            assert cls.measurements and all(cls.measurements.values())
    assert {"folder", "video", "camera"} <= set(cat.sources)


@pytest.mark.parametrize("kind", ["gray8", "bgr8", "gray16"])
@pytest.mark.parametrize("cls", ALL_TOOLS, ids=lambda c: c.id)
def test_tool_contract(cls, kind, tpl_dir):
    image = _images()[kind]
    params = REQUIRED.get(cls.id, {})
    out = check_tool_contract(cls, image, params, StepContext(step="t", base_dir=tpl_dir))
    if cls.stage == "preprocess" and cls.id not in ("classical.resize", "classical.crop", "classical.rotate"):
        assert out.shape[:2] == image.shape[:2]


# ------------------------------------------------------------- preprocess truth

def test_geometry_tools():
    img = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    r = Rotate(Rotate.Params(angle=90)).process(img)
    assert np.array_equal(r, np.rot90(img))
    assert np.array_equal(Rotate(Rotate.Params(flip="horizontal")).process(img), img[:, ::-1])
    r45 = Rotate(Rotate.Params(angle=45)).process(img)
    assert r45.shape[0] > 12 and r45.shape[1] > 20  # expanded canvas keeps the corners
    assert Resize(Resize.Params(width=10)).process(img).shape == (6, 10)
    assert Resize(Resize.Params(scale=2.0)).process(img).shape == (24, 40)
    assert np.array_equal(Crop(Crop.Params(x=3, y=2, width=5, height=4)).process(img), img[2:6, 3:8])
    with pytest.raises(ValueError, match="outside"):
        Crop(Crop.Params(x=30, y=2, width=5, height=4)).process(img)
    with pytest.raises(ValueError):
        Resize.Params()


def test_threshold_normalize_color_morphology():
    img = np.zeros((40, 40), np.uint8)
    img[:, 20:] = 180
    img[:20, :20] = 60
    otsu = Threshold(Threshold.Params(method="otsu")).process(img)
    assert set(np.unique(otsu)) == {0, 255} and otsu[0, 30] == 255 and otsu[30, 5] == 0
    fixed = Threshold(Threshold.Params(method="fixed", level=50, invert=True)).process(img)
    assert fixed[30, 5] == 255 and fixed[5, 5] == 0
    img16 = img.astype(np.uint16) * 100
    n = Normalize(Normalize.Params()).process(img16)
    assert n.dtype == np.uint8 and n.min() == 0 and n.max() == 255
    assert Normalize(Normalize.Params(mode="scale")).process(np.full((2, 2), 65535, np.uint16)).max() == 255
    hsv = ColorConvert(ColorConvert.Params(to="hsv", channel=0)).process(np.full((4, 4, 3), (0, 0, 255), np.uint8))
    assert hsv.shape == (4, 4) and hsv[0, 0] == 0  # pure red: hue 0
    speck = np.zeros((30, 30), np.uint8)
    speck[15, 15] = 255
    speck[5:12, 5:12] = 255
    opened = Morphology(Morphology.Params(operation="open", kernel="rect", size=3)).process(speck)
    assert opened[15, 15] == 0 and opened[8, 8] == 255
    out = Clahe(Clahe.Params()).process(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    assert out.shape == (40, 40, 3)


def test_flatfield_removes_an_illumination_gradient(tmp_path: Path):
    yy, xx = np.mgrid[0:120, 0:160]
    light = 0.5 + 0.5 * xx / 159.0  # 2:1 illumination gradient
    part = np.full((120, 160), 200.0)
    part[50:70, 70:90] = 80.0
    img = np.clip(part * light, 0, 255).astype(np.uint8)
    flat = FlatField(FlatField.Params(method="morphology", size=41)).process(img)
    bg = flat[np.abs(part - 200) < 1]
    assert bg.std() < 0.2 * img[np.abs(part - 200) < 1].std()
    # a reference (flat-field) image divides the gradient out exactly
    cv2.imwrite(str(tmp_path / "white.png"), np.clip(255 * light, 0, 255).astype(np.uint8))
    # the white reference maps to 'target' (255), so the part's own reflectance comes back: 200 and 80
    ref = FlatField(FlatField.Params(method="reference", reference="white.png", target=255),
                    StepContext(base_dir=tmp_path)).process(img)
    assert abs(float(np.median(ref[10:40, 10:150])) - 200) < 3 and abs(float(ref[60, 80]) - 80) < 4
    with pytest.raises(UsageError, match="reference"):
        FlatField(FlatField.Params(method="reference", reference="nope.png"), StepContext(base_dir=tmp_path))


# ---------------------------------------------------------------- inspect truth

def test_shape_fits_a_rendered_disc_and_rectangle():
    ss = 16
    big = np.full((200 * ss, 240 * ss), 230, np.uint8)
    cv2.circle(big, (int(100.25 * ss), int(90.5 * ss)), int(40.0 * ss), 20, -1, lineType=cv2.LINE_AA)
    img = cv2.resize(big, (240, 200), interpolation=cv2.INTER_AREA)
    out = ShapeMeasure(ShapeMeasure.Params(px_per_mm=8.0)).inspect(img)
    m = out.measurements
    # supersampled: centre in supersampled pixels maps to (c + 0.5)/ss - 0.5
    cx, cy = (100.25 * ss + 0.5) / ss - 0.5, (90.5 * ss + 0.5) / ss - 0.5
    assert m["found"] and m["count"] == 1
    assert abs(m["circle_x"] - cx) < 0.3 and abs(m["circle_y"] - cy) < 0.3
    assert abs(m["diameter"] - 80.0) < 1.5 and abs(m["diameter_mm"] - 10.0) < 0.2
    assert abs(m["area"] - math.pi * 40 ** 2) / (math.pi * 40 ** 2) < 0.03
    assert m["roundness"] < 1.5 and abs(m["ellipse_major"] - m["ellipse_minor"]) < 1.5
    assert {s.kind for s in out.overlays} >= {"circle", "ellipse", "polygon"}
    rect = np.full((200, 240), 230, np.uint8)
    box = cv2.boxPoints(((120, 100), (120, 50), 30))
    cv2.fillPoly(rect, [np.round(box).astype(np.int32)], 20)
    m = ShapeMeasure(ShapeMeasure.Params()).inspect(rect).measurements
    assert abs(m["rect_width"] - 120) < 3 and abs(m["rect_height"] - 50) < 3
    assert abs(abs(m["rect_angle"]) - 30) < 2
    none = ShapeMeasure(ShapeMeasure.Params()).inspect(np.full((50, 50), 230, np.uint8)).measurements
    assert none["found"] is False and math.isnan(none["diameter"])


def test_hough_lines_and_circles_on_rendered_shapes():
    img = np.full((200, 300), 255, np.uint8)
    cv2.line(img, (20, 30), (280, 30), 0, 2)
    cv2.line(img, (50, 180), (150, 80), 0, 2)
    m = HoughLines(HoughLines.Params(min_length=60)).inspect(img).measurements
    angles = sorted(round(a) for a in _seg_angles(m["lines"]))
    assert m["count"] >= 2 and abs(m["longest"] - 260) < 8 and abs(m["angle"]) < 1
    assert any(abs(a + 45) <= 1 for a in angles) and any(abs(a) <= 1 for a in angles)
    only = HoughLines(HoughLines.Params(min_length=60, angle_min=-50, angle_max=-40)).inspect(img).measurements
    assert only["count"] >= 1 and all(-50 <= a <= -40 for a in _seg_angles(only["lines"]))
    circ = np.full((200, 300), 230, np.uint8)
    truth = [(70, 70, 30), (200, 120, 45), (90, 160, 20)]
    for x, y, r in truth:
        cv2.circle(circ, (x, y), r, 30, -1, lineType=cv2.LINE_AA)
    m = HoughCircles(HoughCircles.Params(min_radius=10, max_radius=60)).inspect(circ).measurements
    assert m["count"] == 3
    for x, y, r in truth:
        assert any(abs(c[0] - x) < 2 and abs(c[1] - y) < 2 and abs(c[2] - r) < 2 for c in m["circles"])


def _seg_angles(lines):
    return [((math.degrees(math.atan2(y2 - y1, x2 - x1)) + 90) % 180) - 90 for x1, y1, x2, y2 in lines]


def test_pixel_count_presence_and_intensity_exact():
    img = np.zeros((50, 100, 3), np.uint8)
    img[:, :30] = (0, 0, 255)  # red: 1500 px
    img[:, 30:40] = (255, 0, 0)  # blue: 500 px
    m = PixelCount(PixelCount.Params(space="hsv", low=[170, 100, 100], high=[10, 255, 255], px_per_mm=10)) \
        .inspect(img).measurements
    assert m["count"] == 1500 and m["fraction"] == 0.3 and abs(m["area_mm2"] - 15.0) < 1e-9
    m = PixelCount(PixelCount.Params(space="bgr", low=[200, 0, 0], high=[255, 50, 50])).inspect(img).measurements
    assert m["count"] == 500
    g = np.zeros((10, 10), np.uint8)
    g[:, :7] = 200
    assert Presence(Presence.Params(low=[150], high=[255], min_fraction=0.6)).inspect(g).measurements["present"]
    assert not Presence(Presence.Params(low=[150], high=[255], min_fraction=0.8)).inspect(g).measurements["present"]
    m = Intensity(Intensity.Params(percentiles=True)).inspect(g).measurements
    assert m["mean"] == 140 and m["min"] == 0 and m["max"] == 200 and m["median"] == 200 and m["saturation"] == 0
    m = Intensity(Intensity.Params(saturation=True)).inspect(img).measurements
    assert m["mean_r"] == 255 * 0.3 and m["mean_b"] == 255 * 0.1 and m["saturation"] == 255 * 0.4
    with pytest.raises(ValueError):
        PixelCount.Params(space="bgr", low=[0], high=[1])
