"""The operator screen's cost to the line, and its live-view latency, measured in one run.

    .venv/bin/python bench/hmi.py [--triggers 400] [--rounds 3] [--json]

A station on the classical plate recipe is driven at its highest sustained rate (the next
software trigger as soon as the previous result is ready), alternately without the screen,
with the screen and no browser, and with the screen and two browsers (Debian's chromium) on
the live view. Throughput is the median over rounds; the ratio with/without is the figure
(target >= 0.97). Live-view latency: from the result's creation (station clock) to its
arrival in each browser's event stream, p50 and p99, same machine clock.

On a plant the browsers run on panel PCs, not on the station. ``--pin`` reproduces that on one
machine: the station (this process) runs on CPU 0 in every configuration, the browsers on the
other CPUs; without it the browsers compete with the line for the same cores. The screen's server
is a process of its own: with ``--pin`` it runs on the other CPUs too (a station PC's other cores),
or, with ``--screen-on-station-cpu``, on CPU 0 beside the station (a one-core station PC).
``--control`` adds the station with no screen while busy loops keep the other CPUs busy: two
vCPUs of one VM share hardware, so the browsers there slow the station even when it does nothing
for them; the ratio to that rate is the screen's own cost.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from loupe_hmi.screenshots import _station  # the same plates station the screenshots use


BROWSER = shutil.which("chromium")
SCREEN_CPUS: set[int] | None = None  # where the screen's process runs (--pin)
BROWSER_CPUS: set[int] | None = None  # where the browsers and their driver run (--pin)


def _cpu_s() -> float:
    """CPU seconds of this process (the station: every thread of it; not its children, not the browsers)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _burn(cpus: str) -> list:
    """One busy loop per CPU in ``cpus`` (taskset list), pinned there: the load two browsers put on them."""
    import subprocess
    import sys

    return [subprocess.Popen(["taskset", "-c", c, sys.executable, "-c", "while True: pass"])
            for c in cpus.split(",")]


def _start_playwright(sync_playwright):
    """Playwright's driver (a Node.js process that relays every page event) is part of the browsers'
    side: with ``--pin`` it starts on the browsers' CPUs, not beside the station it would slow."""
    if not BROWSER_CPUS:
        return sync_playwright().start()
    import os

    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, BROWSER_CPUS)  # the driver inherits this at its start
    try:
        return sync_playwright().start()
    finally:
        os.sched_setaffinity(0, mine)


def _browser_load_page(folder: Path) -> str:
    """A page that does what the live view does in a browser, with no station behind it: a new JPEG
    (a real plate image, encoded once per frame as the screen does) and its SVG overlay ten times a
    second. Two browsers on it while the station runs without a screen measure what browsers on the
    station's machine cost the line, apart from anything the screen does."""
    import base64

    import cv2
    import numpy as np

    src = sorted((folder / "images").glob("*.png"))[:8]
    jpegs = []
    for f in src:
        img = cv2.imread(str(f))
        jpegs.append(base64.b64encode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1]).decode())
    h, w = img.shape[:2]
    page = folder / "browser-load.html"
    page.write_text(f"""<!doctype html><html><body style="margin:0;background:#111">
<div style="position:relative;width:100%"><img id="i" style="width:100%;display:block">
<svg id="s" viewBox="0 0 {w} {h}" style="position:absolute;inset:0;width:100%;height:100%"></svg></div>
<div id="c" style="font:48px sans-serif;color:#fff"></div><script>
const J = {json.dumps(jpegs)}; let n = 0;
function step() {{
  const k = n++ % J.length, i = document.getElementById("i");
  i.src = "data:image/jpeg;base64," + J[k];
  const s = document.getElementById("s"); s.replaceChildren();
  for (let b = 0; b < 6; b++) {{
    const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    r.setAttribute("x", (b * 97 + n * 7) % {w}); r.setAttribute("y", (b * 53) % {h});
    r.setAttribute("width", 40); r.setAttribute("height", 30);
    r.setAttribute("fill", "none"); r.setAttribute("stroke", b % 2 ? "#e33" : "#3e3"); s.appendChild(r);
  }}
  document.getElementById("c").textContent = "frame " + n + " pass " + (n * 3) + " fail " + n;
}}
setInterval(step, 100);
</script></body></html>""")
    return page.as_uri()


def run(station_file: Path, triggers: int, browsers: int, pm, page_url: str | None = None
        ) -> tuple[float, list[float], float]:
    from host.core.station import Station, load_station

    station = Station(load_station(station_file, pm.catalogue), pm)
    station.start()
    screen = next((a for _, a in station.adapters if a.scheme == "http"), None)
    if screen is not None and SCREEN_CPUS:
        import os

        os.sched_setaffinity(screen.process.pid, SCREEN_CPUS)
    pages, latencies = [], []
    try:
        ctx = None
        if browsers:
            from playwright.sync_api import sync_playwright

            ctx = _start_playwright(sync_playwright)
            b = ctx.chromium.launch(executable_path=BROWSER, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            for _ in range(browsers):
                page = b.new_context(bypass_csp=True).new_page()
                if page_url:  # the control: browsers busy on a page of their own
                    page.goto(page_url)
                    continue
                url = next(a.endpoint for _, a in station.adapters if a.scheme == "http")
                page.goto(url + "/")
                page.wait_for_function("document.getElementById('state').textContent === 'Ready'")
                pages.append(page)
        for _ in range(5):  # warm-up
            station.wait_result(station.trigger(), timeout=30)
        created = {}
        t0, c0 = time.perf_counter(), _cpu_s()
        for _ in range(triggers):
            rid = station.trigger()
            res = station.wait_result(rid, timeout=30)
            created[rid] = res.created
        rate = triggers / (time.perf_counter() - t0)
        cpu_ms = (_cpu_s() - c0) * 1e3 / triggers
        for page in pages:
            last = max(created)
            page.wait_for_function(f"window.loupeReceived.some(r => r.id === {last})", timeout=60000)
            for r in page.evaluate("window.loupeReceived"):
                if r["id"] in created:
                    latencies.append(r["at"] - created[r["id"]] * 1e3)
        if ctx is not None:
            ctx.stop()
    finally:
        station.close()
    return rate, latencies, cpu_ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--triggers", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--pin", action="store_true", help="station on CPU 0, browsers on the other CPUs")
    ap.add_argument("--control", action="store_true",
                    help="with --pin: also the station with no screen while busy loops keep the other CPUs as busy "
                         "as the browsers do (what sharing this machine's hardware costs, with no screen at all)")
    ap.add_argument("--control-browsers", action="store_true",
                    help="also the station with no screen while two browsers (on the other CPUs with --pin) "
                         "show a live-view-like page of their own: what browsers beside the station cost it, "
                         "apart from the screen")
    ap.add_argument("--screen-on-station-cpu", action="store_true",
                    help="with --pin: the screen's process on the station's CPU, not on the others")
    args = ap.parse_args()
    global BROWSER, SCREEN_CPUS, BROWSER_CPUS
    tmpdir = tempfile.mkdtemp()
    if args.pin:
        import os

        cpus = sorted(os.sched_getaffinity(0))
        others = ",".join(str(c) for c in cpus[1:]) or str(cpus[0])
        wrapper = Path(tmpdir) / "chromium-pinned"
        wrapper.write_text(f'#!/bin/sh\nexec taskset -c {others} {BROWSER} "$@"\n')
        wrapper.chmod(0o755)
        BROWSER = str(wrapper)
        os.sched_setaffinity(0, {cpus[0]})
        BROWSER_CPUS = set(cpus[1:]) or {cpus[0]}
        SCREEN_CPUS = {cpus[0]} if args.screen_on_station_cpu or len(cpus) == 1 else set(cpus[1:])
    from host import create_plugin_manager

    pm = create_plugin_manager()
    with tempfile.TemporaryDirectory() as tmp:
        with_hmi = _station(Path(tmp))
        text = with_hmi.read_text()
        plain = with_hmi.with_name("plain.yaml")
        plain.write_text("\n".join(line for line in text.splitlines() if not line.startswith("hmi:")) + "\n")
        base, bare_screen, screen, lat = [], [], [], []
        cpu = {"no_screen": [], "screen_no_browser": [], "screen_2_browsers": []}
        control: list[float] = []
        control_browsers: list[float] = []
        page_url = _browser_load_page(Path(tmp)) if args.control_browsers else None
        for _ in range(args.rounds):
            rate, _, c = run(plain, args.triggers, 0, pm)
            base.append(rate)
            cpu["no_screen"].append(c)
            if args.control and args.pin:
                burners = _burn(others)
                try:
                    control.append(run(plain, args.triggers, 0, pm)[0])
                finally:
                    for b in burners:
                        b.kill()
                        b.wait()
            if page_url:
                control_browsers.append(run(plain, args.triggers, 2, pm, page_url)[0])
            rate, _, c = run(with_hmi, args.triggers, 0, pm)
            bare_screen.append(rate)
            cpu["screen_no_browser"].append(c)
            rate, latencies, c = run(with_hmi, args.triggers, 2, pm)
            screen.append(rate)
            cpu["screen_2_browsers"].append(c)
            lat += latencies
    lat.sort()
    out = {
        "triggers_per_round": args.triggers, "rounds": args.rounds,
        "pinned": args.pin,
        "screen_process_cpus": sorted(SCREEN_CPUS) if SCREEN_CPUS else "any",
        "rate_without_screen_hz": round(statistics.median(base), 1),
        "rate_with_screen_no_browser_hz": round(statistics.median(bare_screen), 1),
        "rate_with_screen_2_browsers_hz": round(statistics.median(screen), 1),
        "ratio": round(statistics.median(screen) / statistics.median(base), 3),
        # the configurations run one after another in each round: the median of the rounds' own ratios
        # is less moved by a machine whose speed drifts between rounds
        "ratio_median_of_rounds": round(statistics.median(s / b for s, b in zip(screen, base)), 3),
        "ratio_no_browser_median_of_rounds": round(statistics.median(s / b for s, b in zip(bare_screen, base)), 3),
        **({"rate_without_screen_other_cpus_busy_hz": round(statistics.median(control), 1),
            "ratio_to_other_cpus_busy": round(statistics.median(screen) / statistics.median(control), 3)}
           if control else {}),
        **({"rate_without_screen_2_browsers_on_own_page_hz": round(statistics.median(control_browsers), 1),
            "ratio_to_browsers_on_own_page": round(statistics.median(screen) / statistics.median(control_browsers), 3),
            "ratio_browsers_on_own_page_median_of_rounds": round(statistics.median(
                c / b for c, b in zip(control_browsers, base)), 3),
            "ratio_to_browsers_on_own_page_median_of_rounds": round(statistics.median(
                s / c for s, c in zip(screen, control_browsers)), 3)}
           if control_browsers else {}),
        "per_round_hz": {"no_screen": [round(x, 1) for x in base], "screen_no_browser": [round(x, 1) for x in bare_screen],
                         "screen_2_browsers": [round(x, 1) for x in screen],
                         **({"no_screen_2_browsers_on_own_page": [round(x, 1) for x in control_browsers]}
                            if control_browsers else {})},
        "live_latency_p50_ms": round(lat[len(lat) // 2], 1) if lat else None,
        "live_latency_p99_ms": round(lat[int(len(lat) * 0.99) - 1], 1) if lat else None,
        "live_latency_samples": len(lat),
        # CPU the station's process spends per result (all its threads; the screen's process and the
        # browsers are not in it): what the screen costs the line, less sensitive to a busy machine
        **{f"station_cpu_ms_per_result_{k}": round(statistics.median(v), 3) for k, v in cpu.items()},
        "station_cpu_ratio_2_browsers": round(statistics.median(cpu["no_screen"])
                                              / statistics.median(cpu["screen_2_browsers"]), 3),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>32}: {v}")


if __name__ == "__main__":
    main()
