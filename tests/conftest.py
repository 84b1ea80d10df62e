"""Every test directory: widgets are drawn offscreen (no display needed), also when one directory runs alone
(the detection and segmentation tests open the desktop app's workspaces).

``make test`` runs the directories in parallel (pytest-xdist, ``--dist loadgroup``): each top-level directory is
one group that one worker runs whole, so a directory's session fixtures (a trained bundle, a database server, a
broker, a Ray instance) are built once, as in a serial run.
"""
import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        rel = os.path.relpath(str(item.path), TESTS)
        item.add_marker(pytest.mark.xdist_group(rel.split(os.sep)[0]))
