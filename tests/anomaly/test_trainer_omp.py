"""The trainer package bounds torch's OpenMP spin-wait unless the user chose a policy."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import os, loupe_trainer; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"


@pytest.mark.parametrize("given, expected", [
    ({}, "10000 None"),                                   # the default: bounded spinning
    ({"GOMP_SPINCOUNT": "5"}, "5 None"),                  # the user's spin count is kept
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "None ACTIVE"),       # a chosen policy is not overridden
])
def test_spin_count_default_respects_the_users_setting(given, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**env, **given}, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == expected
