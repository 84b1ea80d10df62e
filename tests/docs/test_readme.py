"""The README's quick start runs as written: the YAML and the shell commands of its "A first recipe" section are
taken from README.md and run verbatim (bash, in a copy of the repository's layout), and the outcome is the one
the README states. The Python version check of the Makefile gives a clear message."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def blocks(text: str, lang: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)]


def test_first_recipe_runs_as_written(tmp_path):
    pytest.importorskip("cv2")
    quick = section("A first recipe")
    (recipe,) = [b for b in blocks(quick, "yaml") if b.startswith("# coins.yaml\n")]
    setup, commands = blocks(quick, "sh")[:2]
    # the recipe in the README is the one in the repository, and the images are there
    example = ROOT / "examples" / "first-recipe"
    assert (example / "coins.yaml").read_text(encoding="utf-8") == recipe
    assert len(list((example / "images").glob("*.png"))) == 6

    # a copy of the repository's layout: the example folder and the venv the README activates
    repo = tmp_path / "repo"
    shutil.copytree(example, repo / "examples" / "first-recipe")
    venv = Path(sys.executable).parent.parent
    assert (venv / "bin" / "activate").is_file(), "the README activates .venv: run the tests from the venv"
    (repo / ".venv").symlink_to(venv, target_is_directory=True)
    # the YAML block is the file, as a reader would save it
    (repo / "examples" / "first-recipe" / "coins.yaml").write_text(recipe, encoding="utf-8")
    before = {p.name: p.read_bytes() for p in (example / "images").glob("*.png")}

    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = "/usr/bin:/bin"     # nothing but what the README's commands put on the PATH
    script = "set -e\n" + setup + "set -x\n" + commands
    r = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    work = repo / "examples" / "first-recipe"
    # make_images.py writes the same images as the ones in the repository
    assert {p.name: p.read_bytes() for p in (work / "images").glob("*.png")} == before

    out = r.stdout
    assert re.search(r"^OK coins.yaml", out, re.M)
    runs = re.findall(r"^(\d+) frames: (\d+) pass, (\d+) review, (\d+) fail, (\d+) error", out, re.M)
    assert len(runs) == 3, out
    assert runs[0] == ("6", "4", "0", "2", "0")                 # what the README says the first run prints
    assert "6 frames: 4 pass, 0 review, 2 fail, 0 error" in quick
    assert runs[1][0] == "0" and re.search(r"\b6 already stored", out)   # the resumed run inspects none
    assert runs[2] == ("6", "4", "0", "2", "0")
    assert (work / "results.sqlite").is_file() and (work / "report" / "index.html").is_file()
    rows = (work / "out.csv").read_text(encoding="utf-8").splitlines()
    failed = sorted(Path(line.split(",")[1]).name for line in rows[1:] if line.split(",")[3] == "fail")
    assert failed == ["coins_04.png", "coins_05.png"]            # the too dark and the too bright image
    assert "`coins_04.png` is too dark" in quick and "`coins_05.png` too bright" in quick


def test_python_version_is_checked():
    """setup.cfg declares the Python the README asks for, and make says plainly when it is too old."""
    cfg = (ROOT / "setup.cfg").read_text(encoding="utf-8")
    assert re.search(r"^python_requires = >=3\.11$", cfg, re.M)
    assert "Python 3.11 or newer" in section("A first recipe")
    if shutil.which("make") is None:
        pytest.skip("no make")
    ok = subprocess.run(["make", "-s", "python-check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    old = subprocess.run(["make", "-s", "python-check", "PYTHON_MIN=3.99"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert old.returncode != 0
    assert "loupe needs Python 3.99 or newer" in old.stderr and "Python 3." in old.stderr
    assert "Traceback" not in old.stderr
