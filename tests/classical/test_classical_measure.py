"""Caliper, pattern matching and code reading against known truth."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from host import StepContext, UsageError
from loupe_classical.tools.caliper import Caliper
from loupe_classical.tools.codes import Barcode, QRCode
from loupe_classical.tools.pattern import PatternMatch

from classical_helpers import render_bar


# ------------------------------------------------------------------ caliper

@pytest.mark.parametrize("x0,width", [(50.3, 37.45), (61.77, 20.13), (80.5, 12.06), (33.33, 80.9), (90.0, 7.5)])
def test_caliper_measures_rendered_bar_within_a_tenth_of_a_pixel(x0, width):
    img = render_bar(x0, width)
    rng = np.random.default_rng(7)
    noisy = np.clip(img + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)
    for image, band in ((img, 1), (noisy, 15)):
        out = Caliper(Caliper.Params(start=(10, 30), end=(190, 30), width=band)).inspect(image)
        m = out.measurements
        assert m["pair_count"] == 1 and m["edge_count"] == 2
        assert abs(m["width"] - width) < 0.1, (m["width"], width)
        # left edge at x0 - 0.5 in pixel-centre coordinates, 10 px from the start point
        assert abs(m["first_edge"] - (x0 - 0.5 - 10)) < 0.1
    # overlays: the band, two edge marks, the width line
    assert [s.kind for s in out.overlays].count("line") == 3


@pytest.mark.parametrize("angle", [17.0, 45.0, -30.0])
def test_caliper_along_a_rotated_rectangle(angle):
    """A bar rotated by ``angle``; the caliper's rotated band crosses it at right angles."""
    width = 21.37
    img = render_bar(100 - width / 2 + 0.5, width, size=(200, 200), angle=angle)
    a = math.radians(angle)
    ux, uy = math.cos(a), -math.sin(a)  # the bar's normal after rotation (image y down)
    start = (100 - 60 * ux, 100 - 60 * uy)
    end = (100 + 60 * ux, 100 + 60 * uy)
    m = Caliper(Caliper.Params(start=start, end=end, width=25, px_per_mm=10.0)).inspect(img).measurements
    assert m["pair_count"] == 1
    assert abs(m["width"] - width) < 0.1, (m["width"], width)
    assert abs(m["width_mm"] - width / 10.0) < 0.01


def test_caliper_several_pairs_polarity_and_expected_width():
    img = np.full((40, 300), 230, np.uint8)
    for x, w in ((30, 10), (80, 20), (150, 10), (200, 40)):
        img[:, x:x + w] = 30
    cal = Caliper(Caliper.Params(start=(5, 20), end=(295, 20), sigma=0.0))
    m = cal.inspect(img).measurements
    assert m["pair_count"] == 4 and m["edge_count"] == 8
    assert np.allclose(m["widths"], [10, 20, 10, 40], atol=0.05)
    assert abs(m["span"] - (240 - 30)) < 0.05
    m = Caliper(Caliper.Params(start=(5, 20), end=(295, 20), expected_width=10, tolerance=0.1)).inspect(img).measurements
    assert m["pair_count"] == 2 and np.allclose(m["widths"], [10, 10], atol=0.05)
    m = Caliper(Caliper.Params(start=(5, 20), end=(295, 20), polarity="rising")).inspect(img).measurements
    assert m["edge_count"] == 4 and m["pair_count"] == 0 and math.isnan(m["width"])
    assert Caliper(Caliper.Params(start=(5, 20), end=(295, 20))).inspect(np.full((40, 300), 9, np.uint8)) \
        .measurements["edge_count"] == 0


# --------------------------------------------------------- pattern matching

@pytest.mark.parametrize("photo,box", [("chelsea", (143, 61, 90, 70)), ("astronaut", (300, 200, 80, 64))])
def test_pattern_finds_exact_offset_of_a_crop_also_after_brightness_change(tmp_path: Path, photo, box):
    img = cv2.cvtColor(getattr(skimage.data, photo)(), cv2.COLOR_RGB2BGR)
    x, y, w, h = box
    cv2.imwrite(str(tmp_path / "tpl.png"), img[y:y + h, x:x + w])
    ctx = StepContext(step="find", base_dir=tmp_path)
    for pyramid in (0, 2):
        tool = PatternMatch(PatternMatch.Params(template="tpl.png", pyramid=pyramid), ctx)
        for variant in (img, cv2.convertScaleAbs(img, alpha=0.6, beta=60), cv2.convertScaleAbs(img, alpha=1.3, beta=-20)):
            out = tool.inspect(variant)
            m = out.measurements
            assert m["count"] == 1 and m["score"] > 0.97
            assert round(m["left"]) == x and round(m["top"]) == y
            assert abs(m["left"] - x) < 0.1 and abs(m["top"] - y) < 0.1
            assert out.overlays and out.overlays[0].kind == "polygon"


def test_pattern_several_instances_rotation_and_absence(tmp_path: Path):
    photo = cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2GRAY)
    tpl = photo[80:130, 170:230].copy()  # an eye and fur
    cv2.imwrite(str(tmp_path / "eye.png"), tpl)
    scene = np.full((300, 400), 128, np.uint8)
    spots = [(20, 30), (200, 40), (90, 200), (300, 220)]
    for sx, sy in spots:
        scene[sy:sy + 50, sx:sx + 60] = tpl
    ctx = StepContext(base_dir=tmp_path)
    m = PatternMatch(PatternMatch.Params(template="eye.png", max_matches=10, min_score=0.9), ctx).inspect(scene) \
        .measurements
    assert m["count"] == 4
    assert sorted((round(a - 29.5), round(b - 24.5)) for a, b, _, _ in m["matches"]) == sorted(spots)
    # rotated copy: found with a rotation search at the right angle, missed without
    big = np.full((300, 300), 128, np.uint8)
    big[125:175, 120:180] = tpl
    rot = cv2.warpAffine(big, cv2.getRotationMatrix2D((149.5, 149.5), 25, 1.0), (300, 300), borderValue=128)
    m = PatternMatch(PatternMatch.Params(template="eye.png", angle_range=40, angle_step=5, min_score=0.7), ctx) \
        .inspect(rot).measurements
    assert m["count"] == 1 and m["angle"] == 25 and abs(m["x"] - 149.5) < 1.5 and abs(m["y"] - 149.5) < 1.5
    m = PatternMatch(PatternMatch.Params(template="eye.png", min_score=0.9), ctx).inspect(
        np.full((300, 300), 128, np.uint8)).measurements
    assert m["count"] == 0 and math.isnan(m["x"])
    with pytest.raises(UsageError, match="template"):
        PatternMatch(PatternMatch.Params(template="missing.png"), StepContext(step="find", base_dir=tmp_path))


# -------------------------------------------------------------------- codes

def _qr(text: str, module: int = 6) -> np.ndarray:
    q = cv2.QRCodeEncoder.create().encode(text)
    q = cv2.resize(q, None, fx=module, fy=module, interpolation=cv2.INTER_NEAREST)
    return cv2.copyMakeBorder(q, 8 * module, 8 * module, 8 * module, 8 * module, cv2.BORDER_CONSTANT, value=255)


@pytest.mark.parametrize("angle", [0, 33, 90, 145, 222])
def test_qr_decoded_after_rotation_and_noise(angle):
    text = f"LOT-4711/SN-{angle:05d}"
    q = _qr(text)
    h, w = q.shape
    rot = cv2.warpAffine(q, cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), (w, h), borderValue=255)
    rng = np.random.default_rng(angle)
    noisy = np.clip(rot.astype(np.float32) + rng.normal(0, 30, rot.shape), 0, 255).astype(np.uint8)
    tool = QRCode(QRCode.Params(expected=text))
    out = tool.inspect(cv2.cvtColor(noisy, cv2.COLOR_GRAY2BGR))
    m = out.measurements
    assert m["decoded"] and m["text"] == text and m["match"] and m["count"] == 1
    poly = out.overlays[0]
    assert poly.kind == "polygon" and len(poly.points) == 4 and poly.status == "pass"
    # the corners lie around the code's centre
    c = np.mean(poly.points, axis=0)
    assert np.hypot(c[0] - w / 2, c[1] - h / 2) < 10


def test_qr_wrong_text_and_no_code():
    m = QRCode(QRCode.Params(expected="A")).inspect(_qr("B")).measurements
    assert m["decoded"] and m["text"] == "B" and m["match"] is False
    m = QRCode(QRCode.Params()).inspect(np.full((100, 100), 200, np.uint8)).measurements
    assert m == {**m, "decoded": False, "count": 0, "text": ""}


_EAN_L = ["0001101", "0011001", "0010011", "0111101", "0100011", "0110001", "0101111", "0111011", "0110111", "0001011"]
_EAN_G = ["".join("1" if b == "0" else "0" for b in code[::-1]) for code in _EAN_L]
_EAN_R = ["".join("1" if b == "0" else "0" for b in code) for code in _EAN_L]
_EAN_PARITY = ["LLLLLL", "LLGLGG", "LLGGLG", "LLGGGL", "LGLLGG", "LGGLLG", "LGGGLL", "LGLGLG", "LGLGGL", "LGGLGL"]


def _ean13(digits12: str, module: int = 3, height: int = 120) -> tuple[np.ndarray, str]:
    """Render an EAN-13 symbol (with its check digit) as black bars on white."""
    d = [int(c) for c in digits12]
    check = (10 - (sum(d[0::2]) + 3 * sum(d[1::2])) % 10) % 10
    code = digits12 + str(check)
    bits = "101"
    for c, par in zip(code[1:7], _EAN_PARITY[int(code[0])]):
        bits += (_EAN_L if par == "L" else _EAN_G)[int(c)]
    bits += "01010"
    for c in code[7:]:
        bits += _EAN_R[int(c)]
    bits += "101"
    row = np.array([0 if b == "1" else 255 for b in bits], np.uint8)
    img = np.repeat(np.tile(row, (height, 1)), module, axis=1)
    return cv2.copyMakeBorder(img, 30, 30, 15 * module, 15 * module, cv2.BORDER_CONSTANT, value=255), code


def test_barcode_ean13_decoded_also_rotated():
    sym, code = _ean13("400638133393", module=3, height=120)
    m = Barcode(Barcode.Params(expected=code)).inspect(sym).measurements
    assert m["decoded"] and m["text"] == code and m["match"]
    page = np.full((480, 640), 255, np.uint8)  # the symbol on a page, rotated
    y, x = (480 - sym.shape[0]) // 2, (640 - sym.shape[1]) // 2
    page[y:y + sym.shape[0], x:x + sym.shape[1]] = sym
    for angle in (0, 20):
        rot = cv2.warpAffine(page, cv2.getRotationMatrix2D((320, 240), angle, 1.0), (640, 480), borderValue=255)
        out = Barcode(Barcode.Params(expected=code)).inspect(rot)
        assert out.measurements["text"] == code and out.measurements["types"] == ["EAN_13"]
        assert out.overlays[0].status == "pass"
    assert Barcode(Barcode.Params()).inspect(np.full((200, 300), 255, np.uint8)).measurements["decoded"] is False


def test_contour_stats_match_opencv():
    """The blob tool's vectorised moments / perimeter / box equal OpenCV's per-contour calls."""
    from loupe_classical.tools.blob import contour_stats

    rng = np.random.default_rng(0)
    mask = ((rng.random((200, 300)) > 0.6) * 255).astype(np.uint8)   # specks, lines, blobs with holes
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    assert len(contours) > 100 and min(len(c) for c in contours) == 1
    got = np.stack(contour_stats(contours), 1)
    ref = np.array([(cv2.moments(c)["m00"], cv2.moments(c)["m10"], cv2.moments(c)["m01"], cv2.arcLength(c, True),
                     *cv2.boundingRect(c), len(c)) for c in contours])
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-4)
    assert len(contour_stats([])[0]) == 0
