"""``loupe eval --batch``: batched classify evaluation gives the same verdicts as batch 1."""
from __future__ import annotations

import json

from host.testing import run_loupe


def test_batched_eval_matches_batch_1(tiny_bundle, fmnist_small):
    got = {}
    for batch in ("1", None):
        args = ["eval", tiny_bundle, fmnist_small, "--json"] + (["--batch", batch] if batch else [])
        r = run_loupe(*args, env={"OMP_NUM_THREADS": "2"})
        assert r.returncode == 0, r.stderr
        got[batch] = json.loads(r.stdout)
    assert got["1"]["batch"] == 1 and got[None]["batch"] == 8
    for key in ("accuracy", "confusion_matrix", "n_images"):
        assert got["1"][key] == got[None][key], key
    r = run_loupe("eval", tiny_bundle, fmnist_small, "--batch", "0")
    assert r.returncode == 2 and "--batch: give 1..256" in r.stderr and "Traceback" not in r.stderr
