"""Fixtures for the classical plugin tests; helpers live in classical_helpers.py (importable from here)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def classical_pm():
    """A plugin manager with the classical plugin (and the host built-ins) only."""
    from host import create_plugin_manager
    import loupe_classical.plugin as plugin

    pm = create_plugin_manager(autoload=False)
    pm.register_plugin(plugin, name="classical", distribution="loupe-classical")
    pm.check_pending()
    return pm
