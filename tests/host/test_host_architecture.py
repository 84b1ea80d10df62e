"""The import rules of ARCHITECTURE.md "Never", checked on the source (no import is run).

* plugins import only the host's public face ``host`` (never ``host.core.*``, ``host.reporters.*``
  or any other ``host.<module>``);
* ``host/`` imports no plugin;
* inference plugins (``dl_*``) import neither torch, the trainer nor ``classical``.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (at any depth: function-level imports count), with its line."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def offenders(files, bad) -> list[str]:
    return [f"{p.relative_to(ROOT)}:{line}: imports {mod}" for p in files for line, mod in imports(p) if bad(mod)]


def test_plugins_import_only_the_public_face():
    files = sorted((ROOT / "plugins").glob("*/**/*.py"))
    assert len(files) > 50
    assert offenders(files, lambda m: m.startswith("host.")) == []


def test_host_imports_no_plugin():
    files = sorted((ROOT / "host").rglob("*.py"))
    assert offenders(files, lambda m: m.split(".")[0].startswith("loupe_")) == []


def test_inference_plugins_import_no_torch_trainer_or_classical():
    files = sorted((ROOT / "plugins").glob("dl_*/**/*.py"))
    assert offenders(files, lambda m: m.split(".")[0] in {"torch", "torchvision", "loupe_trainer",
                                                         "loupe_classical"}) == []


def test_the_check_sees_a_private_import(tmp_path):
    p = ROOT / "plugins" / "gui" / "loupe_gui" / "frames.py"
    bad = tmp_path / "x.py"
    bad.write_text(p.read_text(encoding="utf-8") + "\ndef f():\n    from host.core.runner import Pipeline\n")
    assert [m for _, m in imports(bad) if m.startswith("host.")] == ["host.core.runner"]
