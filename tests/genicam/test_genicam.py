"""The genicam: source and `loupe cameras`, acquiring through real software GenTL producers."""
from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest

from host import UsageError
from host.core.runner import open_source
from host.testing import run_loupe
from loupe_genicam.pixels import SUPPORTED, to_image


def _open(pm, spec, tmp_path, **options):
    return open_source(spec, pm.catalogue, base_dir=tmp_path, options=options)


def _take(source, n):
    out = []
    for frame in source.frames():
        out.append(frame)
        if len(out) >= n:
            break
    source.close()
    return out


# ------------------------------------------------------------ pixel formats (known truth)


def test_mono_formats_scale_to_16_bit_full_range():
    raw8 = np.arange(12, dtype=np.uint8)
    img = to_image(raw8, "Mono8", 4, 3)
    assert img.shape == (3, 4) and img.dtype == np.uint8 and img.base is None  # owned: one copy
    assert np.array_equal(img.ravel(), raw8)
    for fmt, full in (("Mono10", 1023), ("Mono12", 4095), ("Mono16", 65535)):
        raw = np.array([0, 1, full // 2, full], dtype=np.uint16)
        img = to_image(raw, fmt, 2, 2)
        assert img.dtype == np.uint16 and img.shape == (2, 2) and img.base is None
        shift = 16 - int(fmt[4:])
        assert img.ravel().tolist() == [v << shift for v in raw.tolist()]
        assert img.max() >= 65535 - (1 << shift) + 1


def test_colour_formats_come_out_bgr():
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50  # R, G, B
    for fmt, data in (("RGB8", rgb), ("BGR8", rgb[..., ::-1]),
                      ("RGBa8", np.dstack([rgb, np.full((2, 3), 255, np.uint8)])),
                      ("BGRa8", np.dstack([rgb[..., ::-1], np.full((2, 3), 255, np.uint8)]))):
        img = to_image(np.ascontiguousarray(data).ravel(), fmt, 3, 2)
        assert img.shape == (2, 3, 3) and img.base is None
        assert img[0, 0].tolist() == [50, 100, 200], fmt  # B, G, R


@pytest.mark.parametrize("pattern", ["RG", "BG", "GR", "GB"])
@pytest.mark.parametrize("bits", [8, 12])
def test_bayer_demosaic_restores_the_scene_colour(pattern, bits):
    """Mosaic a flat colour with the GenICam pattern, demosaic, and get the colour back."""
    h, w = 16, 16
    r, g, b = 180, 90, 30
    value = {"R": r, "G": g, "B": b}
    # the 2x2 cell: row 0 = pattern, row 1 = the complementary pair (RG/GB, BG/GR, GR/BG, GB/RG)
    comp = {"RG": ("G", "B"), "BG": ("G", "R"), "GR": ("B", "G"), "GB": ("R", "G")}[pattern]
    cell = [[pattern[0], pattern[1]], list(comp)]
    mosaic = np.zeros((h, w), np.uint16 if bits > 8 else np.uint8)
    scale = (1 << (bits - 8))
    for dy in range(2):
        for dx in range(2):
            mosaic[dy::2, dx::2] = value[cell[dy][dx]] * scale
    img = to_image(mosaic.ravel(), f"Bayer{pattern}{bits}", w, h)
    assert img.shape == (h, w, 3)
    centre = img[6:10, 6:10].reshape(-1, 3).mean(axis=0)
    if bits > 8:
        centre = centre / 256.0  # 12-bit values are scaled to 16-bit full range
    assert np.allclose(centre, [b, g, r], atol=2), (pattern, bits, centre)


def test_packed_formats_are_refused_with_the_supported_list():
    with pytest.raises(ValueError, match="Mono12Packed.*not supported.*Mono8"):
        to_image(np.zeros(12, np.uint8), "Mono12Packed", 4, 2)
    assert "BayerRG12" in SUPPORTED and "Mono16" in SUPPORTED


# ------------------------------------------------------------ real producers


def test_loupe_cameras_lists_both_producers(viky_cti, tlsimu_cti):
    r = run_loupe("cameras", "--json", "--no-opencv", "--cti", viky_cti, "--cti", tlsimu_cti)
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    by_cti = {p["cti"]: p for p in found["producers"]}
    viky = by_cti[viky_cti]["devices"]
    assert [d["model"] for d in viky] == ["Viky"] * 3 and viky[0]["vendor"] == "Machine Vision Games Ltd."
    tls = by_cti[tlsimu_cti]["devices"]
    assert {d["model"] for d in tls} == {"TLSimuMono", "TLSimuColor"}
    # device indices run on across producers, as the source numbers them
    assert [d["index"] for d in viky + tls] == list(range(len(viky) + len(tls)))
    text = run_loupe("cameras", "--no-opencv", "--cti", tlsimu_cti)
    assert "serial=SN_InterfaceA_0" in text.stdout and "OpenCV cameras:" in text.stdout


def test_producers_come_from_the_standard_variable(genicam_pm, tmp_path, viky_cti, monkeypatch):
    monkeypatch.setenv("GENICAM_GENTL64_PATH", str(tmp_path / "missing") + ":" + str(__import__("os").path.dirname(viky_cti)))
    frames = _take(_open(genicam_pm, "genicam:serial=1", tmp_path, features={"Width": 160, "Height": 120}), 2)
    assert [f.image.shape for f in frames] == [(120, 160, 3)] * 2  # viky streams RGBa8 by default


def test_settings_are_written_and_frames_carry_metadata(genicam_pm, tmp_path, viky_cti):
    src = _open(genicam_pm, "genicam:0", tmp_path, cti=viky_cti,
                features={"PixelFormat": "Mono8", "Width": 320, "Height": 240, "AcquisitionFrameRate": 200.0})
    frames = _take(src, 5)
    assert all(f.error is None for f in frames)
    assert {f.image.shape for f in frames} == {(240, 320)} and frames[0].image.dtype == np.uint8
    ids = [f.meta["frame_id"] for f in frames]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert frames[0].meta["pixel_format"] == "Mono8" and frames[0].meta["bit_depth"] == 8
    assert src._ia is None  # closed: device and producer released


@pytest.mark.parametrize("features, message", [
    ({"ExposureTim": 100}, r"features\.ExposureTim: the camera has no feature"),
    ({"PayloadSize": 10}, r"features\.PayloadSize: the feature is read-only"),
    ({"Width": 5000}, r"features\.Width: 5000 is out of range \[100, 800\]"),
    ({"PixelFormat": "Mono99"}, r"features\.PixelFormat: 'Mono99' is not one of RGBa8, Mono8"),
    ({"Width": "wide"}, r"features\.Width: expected a number"),
])
def test_bad_features_are_refused_naming_the_feature(genicam_pm, tmp_path, viky_cti, features, message):
    src = _open(genicam_pm, "genicam:0", tmp_path, cti=viky_cti, features=features)
    with pytest.raises(UsageError, match=message):
        next(src.frames())
    src.close()


def test_bad_feature_in_a_recipe_exits_2_with_the_field(tmp_path, viky_cti):
    recipe = tmp_path / "cam.yaml"
    recipe.write_text(f"""loupe_recipe: 1
name: cam
source: {{spec: "genicam:0", cti: "{viky_cti}", features: {{ExposureTime: 2000}}, max_frames: 2}}
inspect:
  - tool: classical.intensity
    limits: {{}}
""")
    r = run_loupe("run", recipe, "--report", f"jsonl:{tmp_path / 'out.jsonl'}", "-q", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "features.ExposureTime: the camera has no feature 'ExposureTime'" in r.stderr
    assert "Traceback" not in r.stderr


def test_recipe_runs_on_camera_frames(tmp_path, viky_cti):
    recipe = tmp_path / "cam.yaml"
    recipe.write_text(f"""loupe_recipe: 1
name: cam
source:
  spec: "genicam:model=Viky"
  cti: "{viky_cti}"
  features: {{PixelFormat: Mono8, Width: 200, Height: 100, AcquisitionFrameRate: 200}}
  max_frames: 6
inspect:
  - tool: classical.intensity
    limits: {{mean: {{min: 0, max: 255}}}}
""")
    out = tmp_path / "out.jsonl"
    r = run_loupe("run", recipe, "--report", f"jsonl:{out}", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and {row["verdict"] for row in rows} == {"pass"}
    assert rows[0]["key"].startswith("genicam:model=Viky#")


def test_rgb8_camera_frames_are_the_buffer_in_bgr(genicam_pm, tmp_path, tlsimu_cti):
    """TLSimuColor delivers RGB8: converted, a real buffer is that buffer with its channels swapped."""
    from harvesters.core import Harvester

    h = Harvester()
    h.add_file(tlsimu_cti)
    h.update()
    ia = h.create({"serial_number": "SN_InterfaceA_1"})
    ia.start()
    with ia.fetch(timeout=3) as buf:
        c = buf.payload.components[0]
        fmt, raw = c.data_format, c.data.reshape(c.height, c.width, 3).copy()
        img = to_image(c.data, c.data_format, c.width, c.height)
    ia.destroy()
    h.reset()
    assert fmt == "RGB8" and raw.std() > 0
    assert np.array_equal(img, raw[..., ::-1])
    frames = _take(_open(genicam_pm, "genicam:serial=SN_InterfaceA_1", tmp_path, cti=tlsimu_cti), 2)
    assert [f.image.shape for f in frames] == [raw.shape] * 2
    assert frames[0].meta["pixel_format"] == "RGB8"


def test_software_trigger_takes_one_frame_per_request(genicam_pm, tmp_path, tlsimu_cti):
    src = _open(genicam_pm, "genicam:serial=SN_InterfaceA_0", tmp_path, cti=tlsimu_cti, acquisition="software",
                timeout_s=3)
    it = src.frames()
    first = next(it)
    nm = src._ia.remote_device.node_map
    assert nm.TriggerMode.value == "On" and nm.TriggerSource.value == "Software"
    frames = [first] + [next(it) for _ in range(3)]
    it.close()
    assert all(f.error is None and f.image.shape == (512, 512) for f in frames)
    ids = [f.meta["frame_id"] for f in frames]
    assert ids == list(range(ids[0], ids[0] + 4))  # one frame per TriggerSoftware, none in between


def test_hardware_trigger_waits_for_parts_without_error_frames(genicam_pm, tmp_path, tlsimu_cti):
    """TriggerMode On and no trigger: no frame, no error frame; stop() ends the wait."""
    src = _open(genicam_pm, "genicam:serial=SN_InterfaceA_0", tmp_path, cti=tlsimu_cti, acquisition="hardware",
                trigger_source="Software", timeout_s=0.2)
    got = []
    threading.Timer(1.0, src.stop).start()
    for frame in src.frames():
        got.append(frame)
    assert got == []


def test_a_missing_trigger_feature_is_a_clear_error(genicam_pm, tmp_path, viky_cti):
    src = _open(genicam_pm, "genicam:0", tmp_path, cti=viky_cti, acquisition="software")
    with pytest.raises(UsageError, match="acquisition software: the camera has no TriggerMode feature"):
        next(src.frames())
    src.close()


def test_fetch_timeout_is_an_error_frame_and_the_run_goes_on(genicam_pm, tmp_path, viky_cti):
    src = _open(genicam_pm, "genicam:0", tmp_path, cti=viky_cti, timeout_s=0.05,
                features={"AcquisitionFrameRate": 2.0})
    frames = _take(src, 3)
    errors = [f for f in frames if f.image is None]
    assert errors and "no frame within 0.05 s (fetch timeout)" in errors[0].error


def test_lost_camera_is_reported_and_reopened(genicam_pm, tmp_path, viky_cti):
    src = _open(genicam_pm, "genicam:0", tmp_path, cti=viky_cti, reconnect_s=0.05,
                features={"PixelFormat": "Mono8", "Width": 120, "Height": 100})
    it = src.frames()
    assert next(it).image is not None
    src._ia.destroy()  # the device handle dies under the source, as when a cable is pulled
    lost = next(it)
    assert lost.image is None and lost.meta.get("device_lost") and "camera lost" in lost.error
    back = next(it)
    assert back.image is not None and back.meta.get("device_restored") and back.image.shape == (100, 120)
    it.close()


def test_station_is_in_error_until_the_camera_is_back(genicam_pm, tmp_path, viky_cti):
    """A lost camera puts the station in Error (triggers refused); it leaves Error by itself once the
    source has reopened the camera, and the next trigger inspects a real frame."""
    import time

    from host import StationActionError
    from host.core.station import Station, load_station

    (tmp_path / "r.yaml").write_text("loupe_recipe: 1\nname: r\ninspect:\n  - tool: classical.intensity\n"
                                     "    limits: {mean: {min: 0, max: 255}}\n")
    (tmp_path / "s.yaml").write_text(f"""loupe_station: 1
jobs: {{a: r.yaml}}
source: {{spec: "genicam:0", cti: "{viky_cti}", reconnect_s: 0.05,
          features: {{PixelFormat: Mono8, Width: 120, Height: 100}}}}
trigger: software
store: ["jsonl:out.jsonl"]
acknowledge: auto
""")
    station = Station(load_station(tmp_path / "s.yaml", genicam_pm.catalogue), genicam_pm)
    station.start()
    try:
        assert station.wait_result(station.trigger(), timeout=30).verdict == "pass"
        station._source._ia.destroy()  # the cable is pulled
        lost = station.wait_result(station.trigger(), timeout=30)
        assert lost.verdict == "error" and "camera lost" in " ".join(lost.failures)
        deadline = time.monotonic() + 30
        seen_error = station.state == "Error"
        while station.state != "Ready" and time.monotonic() < deadline:
            seen_error = seen_error or station.state == "Error"
            if station.state == "Error":
                with pytest.raises(StationActionError):
                    station.trigger()
            time.sleep(0.02)
        assert seen_error and station.state == "Ready"
        assert "source" not in station.status()["alarms"]
        assert station.wait_result(station.trigger(), timeout=30).verdict == "pass"
    finally:
        station.close()
