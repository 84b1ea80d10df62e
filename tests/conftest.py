"""Every test directory: widgets are drawn offscreen (no display needed), also when one directory runs alone
(the detection and segmentation tests open the desktop app's workspaces).

``make test`` runs the directories in parallel (pytest-xdist): each top-level directory under ``tests/`` is one
unit of work that one worker runs whole, so a directory's session fixtures (a trained bundle, a database server,
a broker, a Ray instance) are built once, as in a serial run. The directories go out largest first and a worker
takes the next one when it is nearly done with its own.
"""
import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByDirectory(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            parts = nodeid.split("::")[0].split("/")
            return "/".join(parts[:2]) if len(parts) > 2 and parts[0] == "tests" else parts[0]

    return ByDirectory(config, log)
