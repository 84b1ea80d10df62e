"""The operator screen of a real `loupe serve` station: API, security, metrics, and a real browser."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import descendants, wait_gone
from hmi_helpers import PASSWORDS, QR_TEXT


class Plc:
    """A TCP client on the station's ASCII channel (the way a PLC triggers it)."""

    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=30)
        self.f = self.sock.makefile("rwb")

    def send(self, line: str) -> str:
        self.f.write(line.encode() + b"\r\n")
        self.f.flush()
        return self.f.readline().decode().strip()

    def close(self):
        self.f.close()
        self.sock.close()


def trigger(station, n=1) -> list[str]:
    plc = Plc(station["tcp"])
    try:
        return [plc.send("TRG") for _ in range(n)]
    finally:
        plc.close()


def login(station, user) -> tuple[httpx.Client, str]:
    c = httpx.Client(base_url=station["url"], timeout=30)
    r = c.post("/api/login", json={"user": user, "password": PASSWORDS[user]})
    assert r.status_code == 200, r.text
    return c, r.json()["csrf"]


def wait_for(fn, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


# ------------------------------------------------------------------ API


def test_probes_openapi_and_metrics(station):
    with httpx.Client(base_url=station["url"], timeout=30) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json()["state"] == "Ready"
        paths = c.get("/openapi.json").json()["paths"]
        for p in ("/api/state", "/api/results", "/api/results/last", "/api/trigger", "/api/job", "/metrics",
                  "/healthz", "/readyz", "/api/results/{result_id}/image.jpg"):
            assert p in paths, p
        replies = trigger(station, 2)
        assert all(r.startswith("OK,") for r in replies)
        # the step histograms are fed by the events the screen's process hears, a moment after the TCP reply
        last_id = int(replies[-1].split(",")[1])
        assert wait_for(lambda: c.get("/api/results/last").json().get("id") == last_id)
        text = c.get("/metrics").text  # the station's counters are read from the station when scraped
        st = c.get("/api/state").json()
        assert float(re.search(r"^loupe_results_issued_total (\S+)$", text, re.M).group(1)) >= 2
        assert float(re.search(r'^loupe_frames_total\{verdict="pass"\} (\S+)$', text, re.M).group(1)) \
            == st["counts"]["pass"]
        for name in ("loupe_frames_total", "loupe_missed_triggers_total", "loupe_queue_depth",
                     "loupe_adapter_connected", "loupe_step_seconds_bucket", "loupe_station_state"):
            assert name in text, name


def test_results_query_and_images_serve_only_known_ids(station):
    replies = trigger(station, 3)
    last_id = int(replies[-1].split(",")[1])
    with httpx.Client(base_url=station["url"], timeout=30) as c:
        # the live view's frame follows its result (at most live_fps a second, always the last of a burst)
        got = wait_for(lambda: (r := c.get("/api/results/last").json()) and r.get("id") == last_id and r["image"] and r)
        assert got["verdict"] in ("pass", "fail") and got["steps"]
        rows = c.get("/api/results", params={"limit": 2}).json()
        assert [r["id"] for r in rows] == [last_id, last_id - 1]
        fails = c.get("/api/results", params={"verdict": "fail", "limit": 100}).json()
        assert fails and all(r["verdict"] == "fail" for r in fails)
        img = c.get(f"/api/results/{last_id}/image.jpg")
        assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg" and img.content[:2] == b"\xff\xd8"
        assert c.get("/api/results/999999/image.jpg").status_code == 404
        assert c.get("/api/results/..%2F..%2Fetc%2Fpasswd/image.jpg").status_code in (404, 422)
        assert c.get("/api/results/1;ls/image.jpg").status_code == 422


def test_actions_need_a_role_and_csrf(station):
    with httpx.Client(base_url=station["url"], timeout=30) as anon:
        assert anon.post("/api/job", json={"job": "qr"}).status_code == 401
        assert anon.post("/api/trigger").status_code == 401
        assert anon.post("/api/login", json={"user": "eng", "password": "wrong"}).status_code == 401
    op, op_csrf = login(station, "op")
    assert op.post("/api/job", json={"job": "qr"}, headers={"X-CSRF-Token": op_csrf}).status_code == 403
    op.close()
    eng, csrf = login(station, "eng")
    r = eng.post("/api/job", json={"job": "qr"})  # a cookie alone is not enough: cross-site forms carry it
    assert r.status_code == 403 and "CSRF" in r.text
    r = eng.post("/api/job", json={"job": "qr"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["job"] == "qr", r.text
    assert eng.get("/api/state").json()["job"] == "qr"
    r = eng.post("/api/job", json={"job": "nope"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 409 and r.json()["detail"]["code"] == "unknown_job"
    assert eng.post("/api/job", json={"job": "four"}, headers={"X-CSRF-Token": csrf}).status_code == 200
    eng.close()
    with httpx.Client(base_url=station["url"], timeout=30,
                      headers={"Authorization": f"Bearer {station['token']}"}) as prog:
        r = prog.post("/api/trigger")
        assert r.status_code == 200 and r.json()["result_id"] > 0
        assert prog.post("/api/job", json={"job": "qr"}).status_code == 403  # a token of the operator role
    with httpx.Client(base_url=station["url"], timeout=30, headers={"Authorization": "Bearer forged"}) as bad:
        assert bad.post("/api/trigger").status_code == 401


def test_secrets_file_holds_only_hashes(station):
    text = (station["dir"] / "secrets.yaml").read_text()
    assert PASSWORDS["eng"] not in text and station["token"] not in text
    assert "scrypt$" in text


# --------------------------------------------------------------- browser


def test_live_view_updates_and_job_change_in_the_browser(station, browser):
    # the screen's Content-Security-Policy forbids eval; Playwright's wait_for_function needs it
    page = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 800}).new_page()
    page.goto(station["url"] + "/")
    page.wait_for_function("document.getElementById('state').textContent === 'Ready'", timeout=30000)
    replies = trigger(station, 2)
    rid = replies[-1].split(",")[1]
    page.wait_for_function(f"document.getElementById('verdict-sub').textContent.startsWith('result {rid} ')",
                           timeout=30000)
    assert page.locator("#verdict").inner_text().lower() in ("pass", "fail")
    page.wait_for_function("document.getElementById('live-img').naturalWidth > 0", timeout=30000)
    assert page.locator("#live-svg polygon, #live-svg circle").count() > 0  # overlays drawn over the image
    # without a login the job cannot be changed
    page.click("nav button[data-tab=jobs]")
    assert page.locator("#job-apply").is_disabled()
    status = page.evaluate("fetch('/api/job', {method: 'POST', headers: {'Content-Type': 'application/json'},"
                           " body: JSON.stringify({job: 'qr'})}).then(r => r.status)")
    assert status == 401
    # an engineer logs in through the form and changes job
    page.click("#login-btn")
    page.fill("#l-user", "eng")
    page.fill("#l-pass", PASSWORDS["eng"])
    page.click("#login-form button[type=submit]")
    page.wait_for_function("document.getElementById('who').textContent.startsWith('eng')", timeout=30000)
    page.select_option("#job-select", "qr")
    page.click("#job-apply")
    page.wait_for_function("document.getElementById('job').textContent === 'qr'", timeout=30000)
    with httpx.Client(base_url=station["url"], timeout=30) as c:
        assert c.get("/api/state").json()["job"] == "qr"
    # QR text is attacker-controlled: it shows as text and runs nothing
    replies = trigger(station, 3)
    page.click("nav button[data-tab=live]")
    page.wait_for_function(f"document.getElementById('verdict-sub').textContent.startsWith('result "
                           f"{replies[-1].split(',')[1]} ')", timeout=30000)
    with httpx.Client(base_url=station["url"], timeout=30) as c:
        rows = c.get("/api/results", params={"limit": 3}).json()
    qr_row = next(r for r in rows if r["steps"] and r["steps"][0]["measurements"].get("text") == QR_TEXT)
    page.click(f"nav button[data-tab=failures]")
    page.click("nav button[data-tab=live]")
    page.evaluate(f"fetch('/api/results?limit=1&before={qr_row['id'] + 1}').then(r => r.json())"
                  ".then(l => window.__show = l[0])")
    page.wait_for_function("window.__show !== undefined", timeout=30000)
    page.evaluate("onResult(window.__show)")
    page.wait_for_function("document.getElementById('measure').textContent.includes('onerror')", timeout=30000)
    assert QR_TEXT in page.locator("#measure").inner_text()
    assert page.evaluate("window.pwned") is None
    assert page.locator("#measure img").count() == 0
    page.click("nav button[data-tab=jobs]")
    page.select_option("#job-select", "four")
    page.click("#job-apply")
    page.wait_for_function("document.getElementById('job').textContent === 'four'", timeout=30000)
    page.close()


def test_alarm_shows_when_the_plc_disconnects(station, browser):
    page = browser.new_context(bypass_csp=True).new_page()
    page.goto(station["url"] + "/")
    plc = Plc(station["tcp"])
    assert plc.send("STATE?").startswith("OK,")
    page.click("nav button[data-tab=alarms]")
    page.wait_for_function("!document.getElementById('alarms-now').textContent.includes('tcp://')", timeout=30000)
    plc.close()
    page.wait_for_function("document.getElementById('alarms-now').textContent.includes('tcp://')", timeout=30000)
    assert "no client" in page.locator("#alarms-now").inner_text()
    assert page.locator("#alarm-badge").is_visible()
    page.close()


# --------------------------------------------------------------- process


def test_screen_process_dies_with_its_station(station):
    """The screen's server is a child process of the station: its pid is in the adapter's detail; when the
    station's process is killed outright (no clean close), the screen's process exits too (its pipe closed)."""
    with httpx.Client(base_url=station["url"], timeout=30) as c:
        detail = next(a["detail"] for n, a in c.get("/api/state").json()["adapters"].items() if n.startswith("http"))
    pid = int(re.search(r"process (\d+)", detail).group(1))
    assert pid != station["proc"].pid and pid in descendants(station["proc"].pid)
    d = station["dir"]
    (d / "killed.yaml").write_text("loupe_station: 1\nname: killed\njobs: {four: four-holes.yaml}\n"
                                   "source: folder:images\ntrigger: software\nhmi: {listen: \"127.0.0.1:0\"}\n")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("loupe")), "serve", "killed.yaml"], cwd=d,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if m := re.search(r"io: (http://[\d.]+:\d+)", line):
                url = m.group(1)
                break
        else:
            raise AssertionError("".join(lines))
        assert httpx.get(url + "/healthz", timeout=30).status_code == 200
        family = descendants(proc.pid)
        assert family
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assert wait_gone(family) == [], "the screen's process outlived its killed station"
    finally:
        if proc.poll() is None:
            proc.kill()
