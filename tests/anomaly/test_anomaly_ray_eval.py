"""``loupe eval --executor ray``: predictions on 2 Ray workers, metrics on the driver, the local eval's JSON."""
from __future__ import annotations

import json

import pytest

from anomaly_helpers import ENV
from host.testing import run_loupe

TIMINGS = ("ms_per_image", "report")  # the time per image differs from run to run; --out adds "report"


def _same(d: dict) -> str:
    return json.dumps({k: v for k, v in d.items() if k not in TIMINGS}, sort_keys=True)  # NaN-safe equality


def test_ray_eval_gives_the_local_json(anomaly_bundle, anomaly_eval, texture_data, tmp_path):
    pytest.importorskip("ray")
    _out, local = anomaly_eval  # the session's local eval (with --out: the same metrics code)
    env = {**ENV, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    r = run_loupe("eval", anomaly_bundle, texture_data, "--json", "--executor", "ray", "--workers", "2",
                  env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    assert local["n_images"] == got["n_images"] == 20 and "pixel_auroc" in got  # maps and masks travelled
    assert got["ms_per_image"] > 0
    assert _same(got) == _same(local)
    # what a distributed evaluation cannot do is refused with one line, before Ray starts
    bad = run_loupe("eval", anomaly_bundle, texture_data, "--executor", "ray", "--out", tmp_path / "o", env=env)
    assert bad.returncode == 2 and "--out with --executor ray" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_loupe("eval", anomaly_bundle, texture_data, "--executor", "spark", env=env)
    assert bad.returncode == 2 and "unknown executor 'spark'" in bad.stderr
