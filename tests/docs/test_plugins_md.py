"""docs/plugins.md is the plugin contract: every Python block on it runs as written, and every registration
hook a plugin can implement has a runnable example there."""
from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "plugins.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[tuple[int, str]]:
    text = DOC.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


BLOCKS = python_blocks()


def test_the_doc_has_examples():
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("line,code", BLOCKS, ids=[f"line{n}" for n, _ in BLOCKS])
def test_snippet_runs(line, code, tmp_path, monkeypatch):
    """Each block runs on its own (a fresh module, an empty working folder); a block that defines pytest
    tests is run by pytest, with the host.testing fixtures a plugin's own tests get."""
    monkeypatch.chdir(tmp_path)
    if re.search(r"^def test_", code, re.M):
        f = tmp_path / "test_snippet.py"
        f.write_text(code, encoding="utf-8")
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(f)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and " passed" in r.stdout, f"docs/plugins.md:{line}\n{r.stdout}\n{r.stderr}"
        return
    name = f"plugins_md_line{line}"
    mod = types.ModuleType(name)
    mod.__file__ = str(tmp_path / f"{name}.py")
    sys.modules[name] = mod
    try:
        exec(compile(code, f"docs/plugins.md:{line}", "exec"), mod.__dict__)
    finally:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("hook", ["loupe_inspect", "loupe_preprocess", "loupe_acquire", "loupe_report",
                                  "loupe_train", "loupe_model_runtime", "loupe_commands", "loupe_after_frame"])
def test_every_contract_has_a_runnable_example(hook):
    assert any(re.search(rf"def {hook}\(", code) for _, code in BLOCKS), f"no example implements {hook}"


def test_every_hook_is_listed():
    """The hook table names every spec in host/core/hookspecs.py."""
    from host.core import hookspecs

    text = DOC.read_text(encoding="utf-8")
    specs = [n for n in dir(hookspecs) if n.startswith("loupe_")]
    assert specs and all(f"`{n}`" in text for n in specs), [n for n in specs if f"`{n}`" not in text]


@pytest.mark.parametrize("name", ["Frame", "ToolOutput", "ToolResult", "FrameResult"])
def test_types_documented_with_their_fields(name):
    """The type table lists every field of each data type (so the doc cannot drift from the code)."""
    import dataclasses

    import host

    text = DOC.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
    missing = [f.name for f in dataclasses.fields(getattr(host, name)) if f"`{f.name}`" not in row]
    assert not missing, f"{name}: fields not in docs/plugins.md: {missing}"


def test_shape_kinds_documented():
    import host

    text = DOC.read_text(encoding="utf-8")
    kinds = re.findall(r"``(\w+)``", host.Shape.__doc__)
    not_kinds = ("status", "verdict", "alert", "color")  # the statuses and the colour attribute, not kinds
    assert kinds and all(f'Shape("{k}"' in text for k in kinds if k not in not_kinds), kinds
