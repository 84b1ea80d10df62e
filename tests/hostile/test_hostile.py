"""Hostile inputs, one table: every case must end as error frames (or a clean exit-2 error),
never as a crashed or hung run, with every reporter holding every frame.

Each case runs the real runner in-process over a real folder of PNG files into the four
built-in reporters (jsonl, csv, sqlite, html), with hostile tools registered from
``hostile_plugin``. The cases that need a process of their own (SIGTERM during a hung
step) run ``sigterm_run.py`` in a subprocess.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from host import Recipe, UsageError
from host.core.runner import StoreError, new_run_info, open_reporter, open_source, run_recipe

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import hostile_plugin  # noqa: E402


@pytest.fixture(scope="module")
def pm():
    return hostile_plugin.plugin_manager()


def _png(path: Path, image: np.ndarray) -> Path:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    assert ok
    with open(path, "wb") as f:  # open() takes the bytes path of a non-UTF-8 name too
        f.write(buf.tobytes())
    return path


def _folder(tmp: Path) -> Path:
    """a_good, b_bad (top-left pixel 255), c_good: 16x16 gray PNGs."""
    d = tmp / "images"
    d.mkdir()
    img = np.full((16, 16), 100, np.uint8)
    _png(d / "a_good.png", img)
    bad = img.copy()
    bad[0, 0] = 255
    _png(d / "b_bad.png", bad)
    _png(d / "c_good.png", img)
    return d


@dataclass
class Outcome:
    summary: Any
    jsonl: list[dict]
    csv: list[dict]
    frames: dict[str, tuple[str, str | None]]  # sqlite: key -> (verdict, error)
    results: list[tuple]  # sqlite: (key, step, verdict, failures, error)
    html: str
    run_ids: set[str]

    def error_of(self, name: str) -> str:
        """Every error text stored for the frame whose key ends with ``name`` (jsonl)."""
        d = next(x for x in self.jsonl if x["key"].endswith(name))
        return " | ".join([d["error"] or ""] + [r["error"] or "" for r in d["results"]])

    def verdict_of(self, name: str) -> str:
        return next(x["verdict"] for x in self.jsonl if x["key"].endswith(name))


def run(pm, tmp: Path, folder: Path, inspect: list[dict], *, preprocess=(), recipe_extra=None, resume=False,
        source_opts=None, reports=(), **kw) -> Outcome:
    doc = {"loupe_recipe": 1, "name": "hostile", "preprocess": list(preprocess), "inspect": inspect,
           **(recipe_extra or {})}
    recipe = Recipe.from_dict(doc, pm.catalogue, base_dir=tmp)
    spec = f"folder:{folder}"
    source = open_source(spec, pm.catalogue, options=source_opts)
    info = new_run_info(recipe, spec, pm)
    info.resume = resume
    out = tmp / "out"
    specs = [f"jsonl:{out}.jsonl", f"csv:{out}.csv", f"sqlite:{out}.sqlite", f"html:{out}_html", *reports]
    reporters = [open_reporter(s, pm.catalogue, info) for s in specs]
    summary = run_recipe(recipe, source, reporters, pm, info, resume=resume, **kw)
    return collect(tmp, summary)


def collect(tmp: Path, summary=None) -> Outcome:
    out = tmp / "out"
    jl = [json.loads(x) for x in Path(f"{out}.jsonl").read_text(encoding="utf-8").splitlines()]
    with open(f"{out}.csv", encoding="utf-8", newline="") as f:
        table = list(csv.DictReader(f))
    con = sqlite3.connect(f"{out}.sqlite")
    frames = {k: (v, e) for k, v, e in con.execute("SELECT key, verdict, error FROM frames")}
    results = con.execute("SELECT f.key, r.step, r.verdict, r.failures, r.error FROM results r "
                          "JOIN frames f ON f.id = r.frame_id").fetchall()
    run_ids = {r for (r,) in con.execute("SELECT run_id FROM runs")}
    con.close()
    html_file = Path(f"{out}_html") / "index.html"
    html = html_file.read_text(encoding="utf-8") if html_file.exists() else ""
    return Outcome(summary, jl, table, frames, results, html, run_ids)


def every_reporter_has_every_frame(o: Outcome, n: int) -> None:
    keys = [x["key"] for x in o.jsonl]
    assert len(keys) == n and len(set(keys)) == n, keys
    assert sorted(r["key"] for r in o.csv) == sorted(keys)
    assert sorted(o.frames) == sorted(keys)
    assert o.html.count('class="card') == n


# ------------------------------------------------------------------ the cases


def _bad_tool_case(tool: str, expect: str) -> dict:
    return {"inspect": [{"tool": tool, "name": "hostile"}, {"tool": "classical.intensity", "name": "light"}],
            "expect": {"b_bad.png": expect}}


def _non_utf8(tmp: Path, folder: Path) -> None:
    _png(Path(os.fsdecode(bytes(folder) + b"/d_caf\xe9.png")), np.full((16, 16), 100, np.uint8))


def _check_non_utf8_then_resume(pm, tmp, folder, o: Outcome) -> None:
    d = next(x for x in o.jsonl if "caf" in x["key"])
    assert d["key"].endswith("d_caf\\xe9.png") and d["verdict"] == "pass"
    # --resume finds the escaped key in the store and skips every frame (no crash loop)
    o2 = run(pm, tmp, folder, [{"tool": "classical.intensity", "name": "light"}], resume=True)
    assert o2.summary.skipped == 4 and o2.summary.frames == 0
    assert len(o2.jsonl) == 4


def _special_files(tmp: Path, folder: Path) -> None:
    os.mkfifo(folder / "fifo.png")
    os.symlink(folder / "nowhere.png", folder / "dangling.png")
    (folder / "folder.png").mkdir()
    sub = folder / "sub"
    sub.mkdir()
    os.symlink(folder, sub / "loop")  # a directory symbolic link loop
    os.symlink(sub, folder / "sub_again")  # a second way into sub
    os.symlink(folder / "a_good.png", sub / "alias.png")  # the same file under another name


def _huge_png(tmp: Path, folder: Path) -> None:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 16, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    body = zlib.compress(b"\x00" * 2_000_000, 9)
    idat = b"IDAT" + body
    (folder / "e_huge.png").write_bytes(head + struct.pack(">I", len(body)) + idat
                                        + struct.pack(">I", zlib.crc32(idat)))


def _check_lazy_junk(pm, tmp, folder, o: Outcome) -> None:
    d = next(x for x in o.jsonl if x["key"].endswith("b_bad.png"))
    assert d["verdict"] == "pass"  # the junk is dropped when the overlays are drawn, the valid shape kept
    assert [s["points"] for s in d["results"][0]["overlays"]] == [[[1.0, 1.0]]]


def _check_failing_reporter(pm, tmp, folder, o: Outcome) -> None:
    (n, first), = o.summary.reporter_errors.values()
    assert n == 1 and "cannot write frame 2" in first  # frame 2 of 3 failed in that reporter only


def _check_reasons(pm, tmp, folder, o: Outcome) -> None:
    d = o.jsonl[0]["results"][0]
    assert d["failures"] == ["score 2.39 > max 1.00", "count 11 ≠ 12", "label 'bad' not in [good]"]
    stored = {json.dumps(json.loads(f)) for _, _, _, f, _ in o.results}
    assert stored == {json.dumps(d["failures"])}  # the same strings in the store
    assert "score 2.39 &gt; max 1.00" in o.html or "score 2.39 > max 1.00" in o.html


def _check_formula(pm, tmp, folder, o: Outcome) -> None:
    cells = sorted(r["formula.label"] for r in o.csv)
    assert cells == ["'-ok", "'-ok", "'=HYPERLINK(\"http://x\",\"y\")"]


def _check_deadline(pm, tmp, folder, o: Outcome) -> None:
    assert o.summary.deadline_overruns == 1
    assert "deadline 300 ms exceeded" in o.error_of("b_bad.png")
    assert o.verdict_of("a_good.png") == "pass"


def _check_busy(pm, tmp, folder, o: Outcome) -> None:
    _check_deadline(pm, tmp, folder, o)
    # the next frame comes while the abandoned call still blocks: that step answers at once
    c = next(x for x in o.jsonl if x["key"].endswith("c_good.png"))
    steps = {r["step"]: r for r in c["results"]}
    assert "busy" in steps["hostile"]["error"] and steps["light"]["verdict"] == "pass"


def _check_spin_thread_ends(pm, tmp, folder, o: Outcome) -> None:
    _check_deadline(pm, tmp, folder, o)
    t0 = time.time()
    while hostile_plugin.SPINNING[0] and time.time() - t0 < 5:
        time.sleep(0.05)
    assert hostile_plugin.SPINNING[0] == 0, "the abandoned worker still spins"


def _check_overlays_mapped(pm, tmp, folder, o: Outcome) -> None:
    # the bright pixel sits at (x=13, y=5) of the 40x30 frame; every step's point must land there
    for d in o.jsonl:
        for r in d["results"]:
            (px, py), = r["overlays"][0]["points"]
            assert abs(px - 13) <= 1.01 and abs(py - 5) <= 1.01, (r["step"], px, py)


def _peak_folder(tmp: Path, folder: Path) -> None:
    for f in folder.iterdir():
        f.unlink()
    img = np.zeros((30, 40), np.uint8)
    img[5, 13] = 255
    _png(folder / "peak.png", img)


CASES: dict[str, dict] = {
    # item 1: a tool's return is checked once, at the boundary
    "returns_none": _bad_tool_case("hostile.none", "returned a NoneType, expected a ToolOutput"),
    "returns_dict": _bad_tool_case("hostile.dict", "returned a dict, expected a ToolOutput"),
    "non_string_key": _bad_tool_case("hostile.int_key", "measurement name 3 is a int, expected text"),
    "unserialisable_value": _bad_tool_case("hostile.object_value", "'mean': a object cannot be stored"),
    "overlays_not_shapes": _bad_tool_case("hostile.not_shapes", "overlay str 'circle' is not a valid Shape"),
    "deep_list_5000": _bad_tool_case("hostile.deep_list", "a list nested deeper than 3 levels"),
    "heatmap_not_array": _bad_tool_case("hostile.bad_heatmap", "heatmap is a str"),
    "raises_system_exit": _bad_tool_case("hostile.system_exit", "SystemExit: 3"),
    "raises_keyboard_interrupt": _bad_tool_case("hostile.keyboard_interrupt", "KeyboardInterrupt"),
    "lazy_overlays_junk": {"inspect": [{"tool": "hostile.lazy_not_shapes", "name": "hostile"}],
                           "expect": {"b_bad.png": None}, "check": _check_lazy_junk},
    "non_utf8_file_name": {"inspect": [{"tool": "classical.intensity", "name": "light"}], "files": _non_utf8,
                           "n": 4, "expect": {}, "check": _check_non_utf8_then_resume},
    # item 1: a reporter whose write fails is recorded; the others keep every frame
    "failing_reporter": {"inspect": [{"tool": "classical.intensity", "name": "light"}], "reports": ["failing:x"],
                         "expect": {}, "check": _check_failing_reporter},
    # item 2: a per-step deadline; a blocking step and a pure-Python endless loop
    "hung_step_deadline": {"inspect": [{"tool": "hostile.sleep", "name": "hostile", "deadline_ms": 300},
                                       {"tool": "classical.intensity", "name": "light"}],
                           "expect": {"b_bad.png": "deadline 300 ms exceeded"}, "check": _check_busy},
    "spinning_step_deadline": {"inspect": [{"tool": "hostile.spin", "name": "hostile"},
                                           {"tool": "classical.intensity", "name": "light"}],
                               "recipe": {"deadline_ms": 300},
                               "expect": {"b_bad.png": "deadline 300 ms exceeded"}, "check": _check_spin_thread_ends},
    # item 3: an image refused by its declared size before decoding
    "png_declares_30000x30000x16bit": {"inspect": [{"tool": "classical.intensity", "name": "light"}],
                                       "files": _huge_png, "n": 4,
                                       "expect": {"e_huge.png": "over the 1024 MiB image budget; not decoded"}},
    # item 4: folder sources
    "fifo_dangling_link_folder_and_loops": {
        "inspect": [{"tool": "classical.intensity", "name": "light"}], "files": _special_files,
        "source": {"recursive": True}, "n": 6,
        "expect": {"fifo.png": "a FIFO (named pipe), not an image file", "dangling.png": "broken symbolic link",
                   "folder.png": "a folder, not an image file"}},
    # item 5: CSV cells that a spreadsheet would run
    "csv_formula_cells": {"inspect": [{"tool": "hostile.formula", "name": "formula"}], "expect": {},
                          "check": _check_formula},
    # item 10: overlays after crop, resize and rotate land on the frame's pixels
    "overlays_after_geometry": {
        "preprocess": [{"tool": "classical.crop", "name": "crop", "params": {"x": 4, "y": 2, "width": 30,
                                                                             "height": 25}},
                       {"tool": "classical.resize", "name": "resize", "params": {"scale": 2.0,
                                                                                 "interpolation": "nearest"}},
                       {"tool": "classical.rotate", "name": "rotate", "params": {"angle": 90, "flip": "horizontal"}}],
        "inspect": [{"tool": "hostile.peak", "name": "final"},
                    {"tool": "hostile.peak", "name": "cropped", "input": "crop"},
                    {"tool": "hostile.peak", "name": "roi", "roi": [6, 2, 40, 40]},
                    {"tool": "hostile.peak", "name": "raw", "input": "raw"}],
        "files": _peak_folder, "n": 1, "expect": {}, "check": _check_overlays_mapped},
    # issue 11 item 1: failure reasons state the limit
    "failure_reasons_state_the_limit": {
        "inspect": [{"tool": "hostile.measure", "name": "m", "params": {"score": 2.389, "count": 11, "label": "bad"},
                     "limits": {"score": {"max": 1}, "count": {"equals": 12}, "label": {"one_of": ["good"]}}}],
        "expect": {}, "check": _check_reasons},
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile(name, pm, tmp_path):
    case = CASES[name]
    folder = _folder(tmp_path)
    if case.get("files"):
        case["files"](tmp_path, folder)
    o = run(pm, tmp_path, folder, case["inspect"], preprocess=case.get("preprocess", ()),
            recipe_extra=case.get("recipe"), source_opts=case.get("source"), reports=case.get("reports", ()))
    every_reporter_has_every_frame(o, case.get("n", 3))
    for file, reason in case["expect"].items():
        if reason is None:
            continue
        assert o.verdict_of(file) == "error", o.error_of(file)
        assert reason in o.error_of(file), o.error_of(file)
        key = next(k for k in o.frames if k.endswith(file))
        stored = " | ".join([o.frames[key][1] or ""] + [e or "" for k, _, _, _, e in o.results if k == key])
        assert reason in stored  # the same reason in the store
    for d in o.jsonl:  # the other frames were inspected normally
        if not any(d["key"].endswith(f) for f in case["expect"]) and "hostile" not in json.dumps(d["results"]):
            assert d["verdict"] != "error", d
    if case.get("check"):
        case["check"](pm, tmp_path, folder, o)


# ------------------------------------------------------------------ the run stops cleanly (exit 2 cases)


def _locked(pm, tmp, folder):
    db = tmp / "locked.sqlite"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE x(a)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="is locked by another process"):
            recipe = Recipe.from_dict({"loupe_recipe": 1, "inspect": [{"tool": "classical.intensity"}]},
                                      pm.catalogue, base_dir=tmp)
            info = new_run_info(recipe, "x", pm)
            rep = open_reporter(f"sqlite:{db}?timeout=0.2", pm.catalogue, info)
            run_recipe(recipe, open_source(f"folder:{folder}", pm.catalogue), [rep], pm, info)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "runs" not in {n for (n,) in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}


def _disk_full(pm, tmp, folder):
    recipe = Recipe.from_dict({"loupe_recipe": 1, "inspect": [{"tool": "classical.intensity"}]}, pm.catalogue,
                              base_dir=tmp)
    info = new_run_info(recipe, "x", pm)
    reps = [open_reporter(f"sqlite:{tmp / 'ok.sqlite'}", pm.catalogue, info),
            open_reporter("jsonl:/dev/full", pm.catalogue, info)]
    with pytest.raises(StoreError, match="No space left on device"):
        run_recipe(recipe, open_source(f"folder:{folder}", pm.catalogue), reps, pm, info)
    con = sqlite3.connect(tmp / "ok.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # every stored frame has its results
    assert con.execute("SELECT COUNT(*) FROM frames f WHERE NOT EXISTS "
                       "(SELECT 1 FROM results r WHERE r.frame_id = f.id)").fetchone()[0] == 0


def _sqlite_disk_full(pm, tmp, folder):
    small = tmp / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        for i in range(400):
            _png(folder / f"m{i:03d}.png", np.full((8, 8), i % 200, np.uint8))
        recipe = Recipe.from_dict({"loupe_recipe": 1, "inspect": [{"tool": "classical.intensity"}]},
                                  pm.catalogue, base_dir=tmp)
        info = new_run_info(recipe, "x", pm)
        rep = open_reporter(f"sqlite:{small / 'store.sqlite'}", pm.catalogue, info)
        rep.batch_frames = 10
        with pytest.raises(StoreError, match="database or disk is full"):
            run_recipe(recipe, open_source(f"folder:{folder}", pm.catalogue), [rep], pm, info)
        con = sqlite3.connect(small / "store.sqlite")
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        n = con.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
        assert 0 < n < 403, n
        assert con.execute("SELECT COUNT(*) FROM frames f WHERE NOT EXISTS "
                           "(SELECT 1 FROM results r WHERE r.frame_id = f.id)").fetchone()[0] == 0
        con.close()
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


def _cli_exit_2_with_the_cause(pm, tmp, folder):
    from host.testing import run_loupe

    (tmp / "r.yaml").write_text("loupe_recipe: 1\ninspect:\n  - tool: classical.intensity\n")
    r = run_loupe("run", tmp / "r.yaml", "--source", f"folder:{folder}", "--report", "jsonl:/dev/full", "-q")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "report jsonl:/dev/full: cannot store results" in r.stderr and "No space left on device" in r.stderr
    (tmp / "r2.yaml").write_text("loupe_recipe: 1\ninspect:\n  - tool: classical.intensity\n"
                                 "report: [jsonl:~/.loupe-hostile.jsonl]\n")
    r = run_loupe("run", tmp / "r2.yaml", "--source", f"folder:{folder}", "-q")
    assert r.returncode == 2 and "--allow-report-outside" in r.stderr and "Traceback" not in r.stderr
    assert not Path("~/.loupe-hostile.jsonl").expanduser().exists()


def _report_outside(pm, tmp, folder):
    recipe = Recipe.from_dict({"loupe_recipe": 1, "inspect": [{"tool": "classical.intensity"}]}, pm.catalogue,
                              base_dir=tmp)
    info = new_run_info(recipe, "x", pm)
    with pytest.raises(UsageError, match="lies outside the recipe's folder"):
        open_reporter("jsonl:~/.loupe-hostile-test.jsonl", pm.catalogue, info, base_dir=tmp)
    os.symlink("/tmp", tmp / "escape")
    with pytest.raises(UsageError, match="--allow-report-outside"):
        open_reporter("jsonl:escape/x.jsonl", pm.catalogue, info, base_dir=tmp)
    assert open_reporter("jsonl:escape/x.jsonl", pm.catalogue, info, base_dir=tmp, allow_outside=True)
    assert open_reporter("jsonl:sub/x.jsonl", pm.catalogue, info, base_dir=tmp)


def _locked_briefly_waits(pm, tmp, folder):
    db = tmp / "busy.sqlite"
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE x(a)")
    holder.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.5, lambda: holder.execute("ROLLBACK")).start()
    recipe = Recipe.from_dict({"loupe_recipe": 1, "inspect": [{"tool": "classical.intensity"}]}, pm.catalogue,
                              base_dir=tmp)
    info = new_run_info(recipe, "x", pm)
    rep = open_reporter(f"sqlite:{db}?timeout=20", pm.catalogue, info)
    s = run_recipe(recipe, open_source(f"folder:{folder}", pm.catalogue), [rep], pm, info)
    assert s.frames == 3 and sqlite3.connect(db).execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 3


def _resume_no_duplicates(pm, tmp, folder):
    insp = [{"tool": "classical.intensity", "name": "light"}]
    first = run(pm, tmp, folder, insp)
    (run_id,) = first.run_ids
    # a crash lost the last uncommitted batch of the store, but the files had those frames already
    con = sqlite3.connect(tmp / "out.sqlite")
    con.execute("DELETE FROM results WHERE frame_id IN (SELECT id FROM frames WHERE key LIKE '%c_good.png')")
    con.execute("DELETE FROM frames WHERE key LIKE '%c_good.png'")
    con.commit()
    con.close()
    (tmp / "out_html").rename(tmp / "html_first")
    again = run(pm, tmp, folder, insp, resume=True)
    assert again.summary.run_id == run_id and again.summary.skipped == 2 and again.summary.frames == 1
    assert len(again.jsonl) == 3 and len({d["key"] for d in again.jsonl}) == 3
    assert len(again.csv) == 3 and len(again.frames) == 3


def _sync_full(pm, tmp, folder):
    recipe = Recipe.from_dict({"loupe_recipe": 1, "inspect": [{"tool": "classical.intensity"}]}, pm.catalogue,
                              base_dir=tmp)
    seen = []
    for spec, want in ((f"sqlite:{tmp / 'a.sqlite'}", 1), (f"sqlite:{tmp / 'b.sqlite'}?sync=full", 2)):
        info = new_run_info(recipe, "x", pm)
        rep = open_reporter(spec, pm.catalogue, info)
        run_recipe(recipe, open_source(f"folder:{folder}", pm.catalogue), [rep], pm, info,
                   on_frame=lambda r: seen.append(rep._db.execute("PRAGMA synchronous").fetchone()[0]))
        assert set(seen) == {want}
        seen.clear()
    with pytest.raises(UsageError, match="sync='sometimes'"):
        open_reporter(f"sqlite:{tmp / 'c.sqlite'}?sync=sometimes", pm.catalogue, new_run_info(recipe, "x", pm))


def _listing_checks_stop(pm, tmp, folder):
    for i in range(30):
        (folder / f"sub{i}").mkdir()
        _png(folder / f"sub{i}" / "x.png", np.zeros((4, 4), np.uint8))
    source = open_source(f"folder:{folder}", pm.catalogue, options={"recursive": True})
    assert source.count() == 33
    source.stop()  # e.g. SIGTERM while a huge tree is being listed
    assert list(source.frames()) == []


STOPS: dict[str, Callable] = {
    "folder_listing_checks_stop_requests": _listing_checks_stop,
    "sqlite_locked_briefly_waits": _locked_briefly_waits,
    "resume_no_duplicate_lines_and_same_run_id": _resume_no_duplicates,
    "sqlite_sync_full_option": _sync_full,
    "sqlite_locked_past_timeout": _locked,
    "disk_full": _disk_full,
    "sqlite_disk_full": _sqlite_disk_full,
    "cli_exit_2_with_the_cause": _cli_exit_2_with_the_cause,
    "report_target_outside_the_recipe_folder": _report_outside,
}


@pytest.mark.parametrize("name", list(STOPS))
def test_hostile_stops_cleanly(name, pm, tmp_path):
    STOPS[name](pm, tmp_path, _folder(tmp_path))


def test_sigterm_during_hung_step_takes_effect_within_the_deadline(tmp_path):
    """A step blocks for 30 s; the deadline is 1 s; SIGTERM arrives while it blocks."""
    folder = _folder(tmp_path)
    proc = subprocess.Popen([sys.executable, str(HERE / "sigterm_run.py"), str(folder), str(tmp_path / "o.jsonl")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # the script prints "started" once its first frame is stored
        assert line.strip() == "started", proc.stderr.read()
        time.sleep(0.2)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        last = ""
        while not last.startswith("{"):  # the summary line: the run is over, its reporters closed
            last = proc.stdout.readline()
            assert last, proc.stderr.read()
        took = time.monotonic() - t0
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert took < 1.0, took  # within the step's deadline (1 s from the step's start, before the signal)
    summary = json.loads(last)
    assert summary["interrupted"] and summary["overruns"] == 1
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [d["verdict"] for d in lines] == ["pass", "error"]
    assert "deadline 1000 ms exceeded" in lines[1]["error"]
