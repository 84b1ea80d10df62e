"""A plugin written from the docs alone passes its own tests: ``loupe plugin new`` writes a distribution with a
tool and a reporter, pip installs it (a real install into a folder: dist-info, entry point), and its own test
suite runs against the installed host."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from host.testing import run_loupe


def test_plugin_new_writes_a_plugin_that_passes_its_own_tests(tmp_path):
    out = tmp_path / "loupe-acme"
    r = run_loupe("plugin", "new", "acme", "--out", str(out), "--author", "Test")
    assert r.returncode == 0, r.stderr
    for rel in ("setup.cfg", "pyproject.toml", "README.md", "ci.sh", ".github/workflows/test.yml",
                "loupe_acme/__init__.py", "loupe_acme/plugin.py", "tests/test_plugin.py"):
        assert (out / rel).is_file(), rel
        assert rel in r.stdout
    assert os.access(out / "ci.sh", os.X_OK)
    sh = subprocess.run(["sh", "-n", str(out / "ci.sh")], capture_output=True, text=True)
    assert sh.returncode == 0, sh.stderr

    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(site), str(out)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    assert list(site.glob("loupe_acme-0.1.0.dist-info"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    # its own tests, run from its folder against the installed copy
    t = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=out, env=env,
                       capture_output=True, text=True, timeout=300)
    assert t.returncode == 0, t.stdout + t.stderr
    assert "5 passed" in t.stdout, t.stdout
    # loupe itself sees the installed plugin: its tool and its reporter, from its distribution
    tools = run_loupe("tools", "--json", env=env)
    assert tools.returncode == 0 and "acme.brightness" in tools.stdout
    plugins = run_loupe("plugins", env=env)
    assert "loupe-acme" in plugins.stdout


@pytest.mark.parametrize("name,why", [("Acme", "lower-case"), ("classical", "already uses"), ("1x", "lower-case")])
def test_plugin_new_refuses_bad_names(tmp_path, name, why):
    r = run_loupe("plugin", "new", name, "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and why in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_plugin_new_never_overwrites(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = run_loupe("plugin", "new", "acme", "--out", str(out))
    assert r.returncode == 2 and "not empty" in r.stderr
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1
