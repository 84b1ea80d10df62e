"""Screenshots of the operator screen (``make screenshots``): a real station on the example
recipes, driven by software triggers, photographed in Debian's chromium.

    python -m loupe_hmi.screenshots screenshots/
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def _plate(n_holes: int, shift: int) -> np.ndarray:
    img = np.full((260, 320, 3), (190, 196, 200), np.uint8)
    for x, y in [(80, 80), (240, 80), (80, 180), (240, 180)][:n_holes]:
        cv2.circle(img, (x + shift, y), 24, (40, 40, 40), -1, lineType=cv2.LINE_AA)
    return img


def _station(d: Path) -> Path:
    (d / "images").mkdir()
    for i, n in enumerate([4, 4, 3, 4, 4, 4, 3, 4]):
        cv2.imwrite(str(d / "images" / f"plate-{i}.png"), _plate(n, (i % 3) * 4))
    (d / "four-holes.yaml").write_text("""loupe_recipe: 1
name: four-holes
preprocess: [{tool: classical.gray}]
inspect:
  - {tool: classical.intensity, name: light, limits: {mean: {min: 120, max: 240}}}
  - tool: classical.blob
    name: holes
    params: {polarity: dark, threshold: fixed, level: 100, min_area: 100}
    limits: {count: {min: 4, max: 4}}
""")
    (d / "three-holes.yaml").write_text((d / "four-holes.yaml").read_text().replace("four", "three")
                                        .replace("min: 4, max: 4", "min: 3, max: 3"))
    (d / "station.yaml").write_text("""loupe_station: 1
name: plates-line-1
jobs: {four: four-holes.yaml, three: three-holes.yaml}
source: folder:images
trigger: software
io: [tcp://127.0.0.1:0]
store: [sqlite:results.sqlite]
acknowledge: auto
hmi: {listen: "127.0.0.1:0", public_view: true}
""")
    return d / "station.yaml"


def main(out: str = "screenshots") -> int:
    from playwright.sync_api import sync_playwright

    from host import create_plugin_manager
    from host import Station, load_station

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pm = create_plugin_manager()
        station = Station(load_station(_station(Path(tmp)), pm.catalogue), pm)
        station.start()
        try:
            url = next(a.endpoint for _, a in station.adapters if a.scheme == "http")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=[
                    "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
                page = browser.new_context(viewport={"width": 1366, "height": 800}, bypass_csp=True).new_page()
                page.goto(url + "/")
                page.wait_for_function("document.getElementById('state').textContent === 'Ready'")
                for _ in range(11):
                    station.wait_result(station.trigger(), timeout=30)
                last = station.last_result().result_id
                page.wait_for_function(f"document.getElementById('verdict-sub').textContent"
                                       f".startsWith('result {last} ')")
                page.wait_for_function("document.getElementById('live-img').naturalWidth > 0")
                time.sleep(0.5)
                page.screenshot(path=str(out_dir / "hmi-live.png"))
                page.click("nav button[data-tab=failures]")
                page.wait_for_function("document.querySelectorAll('#gallery img').length > 0")
                page.locator("#gallery .card").first.click()
                page.wait_for_function("document.getElementById('detail-img').naturalWidth > 0")
                time.sleep(0.3)
                page.screenshot(path=str(out_dir / "hmi-failures.png"), full_page=True)
                page.click("nav button[data-tab=alarms]")
                time.sleep(0.3)
                page.screenshot(path=str(out_dir / "hmi-alarms.png"))
                browser.close()
        finally:
            station.close()
    print(f"operator screen screenshots -> {out_dir}/hmi-*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
