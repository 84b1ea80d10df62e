"""``loupe results summary|export|spc`` on SQLite and PostgreSQL stores written by real runs.

SPC figures are checked against published worked examples of the NIST/SEMATECH e-Handbook of Statistical
Methods (https://www.itl.nist.gov/div898/handbook/):
* section 6.3.2.2, "Individuals Control Charts": ten batches of moisture content 49.6 ... 52.1,
  mean 50.81, MR-bar 1.8778, UCL 55.80, LCL 45.82, moving-range UCL 6.13;
* section 6.1.6, "What is Process Capability?": USL 20, LSL 8, mean 16, sigma 2 -> Cp 1.0, Cpk 0.6667.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from pg_helpers import cli, write_gray_images, write_recipe

NIST_X = [49.6, 47.6, 49.9, 51.3, 47.8, 51.2, 52.6, 52.4, 53.6, 52.1]


@pytest.fixture
def nist_stores(tmp_path, pg_db, capsys):
    """One run of the NIST series into both a SQLite and a PostgreSQL store (the recipe says 45 <= mean <= 57)."""
    spec, env = pg_db
    images = write_gray_images(tmp_path / "nist", NIST_X)
    recipe = write_recipe(tmp_path / "r.yaml", lo=45, hi=57)
    db = tmp_path / "store.sqlite"
    r = cli(capsys, "run", str(recipe), "--source", f"folder:{images[0].parent}", "--report", f"sqlite:{db}",
                  "--report", f"{spec}?station=gauge-1", "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    return f"sqlite:{db}", spec, env


def test_spc_individuals_matches_the_nist_worked_example_on_both_stores(nist_stores, tmp_path, capsys):
    sqlite_spec, pg_spec, env = nist_stores
    outs = []
    for store in (sqlite_spec, pg_spec):
        r = cli(capsys, "results", "spc", store, "mean", "--json", "--out", str(tmp_path / "spc"), env=env)
        assert r.returncode == 0, r.stderr
        o = json.loads(r.stdout)
        outs.append(o)
        assert o["step"] == "gray" and o["n"] == 10 and o["chart"] == "individuals/moving-range"
        x, mr = o["charts"]
        # NIST e-Handbook 6.3.2.2
        assert o["mean"] == pytest.approx(50.81, abs=1e-9)
        assert mr["center"] == pytest.approx(1.8778, abs=5e-5)
        assert x["ucl"] == pytest.approx(55.80, abs=0.005) and x["lcl"] == pytest.approx(45.82, abs=0.005)
        assert mr["ucl"] == pytest.approx(6.13, abs=0.005) and mr["lcl"] == 0
        assert x["violations"] == [] and mr["violations"] == []  # the example's process is in control
        # Cp/Cpk against the recipe's limits, by hand: sigma within = MR-bar / d2 (d2 = 1.128 for n = 2)
        sigma = (16.9 / 9) / 1.128
        assert (o["lsl"], o["usl"]) == (45.0, 57.0)
        assert o["cp"] == pytest.approx((57 - 45) / (6 * sigma), rel=1e-9)
        assert o["cpk"] == pytest.approx(min(57 - 50.81, 50.81 - 45) / (3 * sigma), rel=1e-9)
        assert o["ppk"] == pytest.approx(min(57 - 50.81, 50.81 - 45) / (3 * np.std(NIST_X, ddof=1)), rel=1e-9)
        png = tmp_path / "spc" / "spc_gray_mean.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and o["png"] == str(png)
        import cv2

        assert cv2.imread(str(png)).shape[0] > 300
    a, b = outs
    for k in ("mean", "sigma_within", "sigma_overall", "cp", "cpk", "pp", "ppk"):
        assert a[k] == pytest.approx(b[k], rel=1e-12)


def test_capability_matches_the_nist_process_capability_example():
    from host import spc

    capability = spc.capability

    cp, cpk = capability(16.0, 2.0, 8.0, 20.0)  # NIST e-Handbook 6.1.6
    assert cp == pytest.approx(1.0) and cpk == pytest.approx(0.6667, abs=1e-4)
    assert capability(16.0, 2.0, None, 20.0) == (None, pytest.approx(4 / 6))  # one-sided: Cpk only


def test_western_electric_rules_flag_the_points_that_complete_each_pattern():
    from host import spc

    western_electric = spc.western_electric

    x = [0.5, -0.5, 0.5, -0.5, 0.5, -0.5,
         3.5,                     # 6: beyond 3 sigma (rule 1)
         -0.5, 0.5,
         2.5, -0.5, 2.5,          # 9, 11: two of three beyond 2 sigma, completed at 11 (rule 2)
         -0.5,
         1.5, 1.5, 0.2, 1.5, 1.5,  # 13..17: four of five beyond 1 sigma, completed at 17 (rule 3)
         -0.3, -0.3, -0.3, -0.3, -0.3, -0.3, -0.3, -0.3,  # 18..25: eight below the centre (rule 4 at 25)
         0.3]
    got = [(v["rule"], v["index"], v["side"]) for v in western_electric(np.array(x), 0.0, 1.0)]
    assert got == [(1, 6, "above"), (2, 11, "above"), (3, 17, "above"), (4, 25, "below")]


def test_spc_xbar_r_with_subgroups_and_a_shifted_process(tmp_path, capsys):
    rng = np.random.default_rng(7)
    values = np.round(np.concatenate([rng.normal(100, 2, 40), rng.normal(112, 2, 10)]), 2)
    images = write_gray_images(tmp_path / "img", list(values))
    values = [round(v * 100) / 100 for v in values]
    recipe = write_recipe(tmp_path / "r.yaml", lo=90, hi=120)
    db = tmp_path / "s.sqlite"
    assert cli(capsys, "run", str(recipe), "--source", f"folder:{images[0].parent}", "--report", f"sqlite:{db}",
                     "--quiet").returncode == 0
    r = cli(capsys, "results", "spc", f"sqlite:{db}", "mean", "--step", "gray", "--subgroup", "5", "--json")
    assert r.returncode == 0, r.stderr
    o = json.loads(r.stdout)
    g = np.array(values).reshape(10, 5)
    xbb, rbar = g.mean(axis=1).mean(), np.ptp(g, axis=1).mean()
    xc, rc = o["charts"]
    assert o["chart"] == "x-bar/r" and xc["n_points"] == 10
    assert xc["center"] == pytest.approx(xbb) and xc["ucl"] == pytest.approx(xbb + 0.577 * rbar)
    assert rc["ucl"] == pytest.approx(2.114 * rbar) and rc["lcl"] == 0
    assert o["sigma_within"] == pytest.approx(rbar / 2.326)
    assert o["cp"] == pytest.approx(30 / (6 * rbar / 2.326))
    # the last two subgroups come from the shifted process: flagged beyond 3 sigma, with their last frame's key
    assert {(1, 8, "above"), (1, 9, "above")} <= {(v["rule"], v["index"], v["side"]) for v in xc["violations"]}
    assert [v["key"] for v in xc["violations"] if (v["rule"], v["index"]) == (1, 9)] == [str(images[-1])]
    r = cli(capsys, "results", "spc", f"sqlite:{db}", "mean", "--subgroup", "5")
    assert r.returncode == 0 and "rule 1" in r.stdout and "Cpk" in r.stdout


def test_summary_is_the_same_on_sqlite_and_postgresql(tmp_path, pg_db, capsys):
    spec, env = pg_db
    db = tmp_path / "s.sqlite"
    for job, vals, lo in (("gauge", [10, 20, 30, 40, 50, 60], 25), ("caps", [70, 80, 90, 100], 85)):
        images = write_gray_images(tmp_path / job, [float(v) for v in vals], prefix=job)
        recipe = write_recipe(tmp_path / f"{job}.yaml", lo=lo, name=job)
        r = cli(capsys, "run", str(recipe), "--source", f"folder:{images[0].parent}", "--report", f"sqlite:{db}",
                      "--report", f"{spec}?station=st-{job}", "--quiet", env=env)
        assert r.returncode == 0, r.stderr
    sums = []
    for store in (f"sqlite:{db}", spec):
        r = cli(capsys, "results", "summary", store, "--json", env=env)
        assert r.returncode == 0, r.stderr
        sums.append(json.loads(r.stdout))
        s = sums[-1]
        assert s["total"] == {"frames": 10, "pass": 6, "review": 0, "fail": 4, "error": 0, "yield": 0.6}
        assert [(j["job"], j["frames"], j["yield"]) for j in s["by_job"]] == [("caps", 4, 0.5), ("gauge", 6, pytest.approx(4 / 6, abs=1e-6))]
        assert [(r["job"], r["frames"], r["fail"]) for r in s["by_run"]] == [("gauge", 6, 2), ("caps", 4, 2)]
        assert sum(h["frames"] for h in s["by_hour"]) == 10 and s["by_hour"][0]["hour"].endswith(":00Z")
        assert s["top_failing_steps"] == [{"step": "gray", "fail": 4, "error": 0}]
        assert s["top_failing_measurements"] == [{"step": "gray", "name": "mean", "fail": 4, "review": 0}]
    assert [(x["station"], x["frames"]) for x in sums[1]["by_station"]] == [("st-caps", 4), ("st-gauge", 6)]
    r = cli(capsys, "results", "summary", spec, env=env)
    assert r.returncode == 0 and "yield 60.0%" in r.stdout and "gray.mean" in r.stdout


def test_export_csv_and_parquet_one_row_per_frame(nist_stores, tmp_path, capsys):
    import pyarrow.parquet as pq

    sqlite_spec, pg_spec, env = nist_stores
    for i, store in enumerate((sqlite_spec, pg_spec)):
        out = tmp_path / f"e{i}.csv"
        r = cli(capsys, "results", "export", store, "--out", str(out), env=env)
        assert r.returncode == 0, r.stderr
        rows = list(csv.DictReader(out.open()))
        assert len(rows) == 10 and len({r["key"] for r in rows}) == 10
        assert [float(r["gray.mean"]) for r in rows] == pytest.approx(NIST_X)
        assert all(r["verdict"] == "pass" and r["path"] == r["key"] for r in rows)
        pout = tmp_path / f"e{i}.parquet"
        r = cli(capsys, "results", "export", store, "--out", str(pout), env=env)
        assert r.returncode == 0, r.stderr
        t = pq.read_table(pout)
        assert t.num_rows == 10 and t.column("gray.mean").to_pylist() == pytest.approx(NIST_X)
        assert str(t.schema.field("gray.mean").type) == "double" and "timestamp" in str(t.schema.field("ts").type)
        assert t.column("key").to_pylist() == [r["key"] for r in rows]
    assert cli(capsys, "results", "export", sqlite_spec, "--out", str(tmp_path / "x.xlsx")).returncode == 2


def test_bad_store_and_measurement_are_clear_errors(tmp_path, nist_stores, capsys):
    sqlite_spec, pg_spec, env = nist_stores
    r = cli(capsys, "results", "summary", f"sqlite:{tmp_path / 'missing.sqlite'}")
    assert r.returncode == 2 and "missing.sqlite: no such file" in r.stderr and "Traceback" not in r.stderr
    r = cli(capsys, "results", "spc", sqlite_spec, "diameter")
    assert r.returncode == 2 and "no stored measurement is called 'diameter'" in r.stderr
    r = cli(capsys, "results", "spc", pg_spec, "mean", "--step", "nope", env=env)
    assert r.returncode == 2 and "no measurement 'mean' in step 'nope'" in r.stderr
    r = cli(capsys, "results", "summary", "jsonl:x.jsonl")
    assert r.returncode == 2 and "unknown kind" in r.stderr
