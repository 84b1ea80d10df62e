"""Fixtures for the GenICam tests: two real software GenTL producers.

- viky.cti (inside the pinned `genicam` wheel): three cameras that stream Mono8 / RGBa8
  frames, with Width, Height, AcquisitionFrameRate; no trigger features.
- TLSimu.cti (the EMVA reference simulator, unpacked from the genicam 1.5.0 wheel by
  scripts/install-gentl-producers.sh, which `make test` runs): a Mono8 and an RGB8 camera
  with TriggerMode, TriggerSource (Software) and TriggerSoftware.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def viky_cti() -> str:
    spec = importlib.util.find_spec("genicam")
    assert spec is not None and spec.origin, "the genicam package is not installed (make install)"
    cti = Path(spec.origin).parent / "viky.cti"
    assert cti.is_file(), f"{cti} missing: the genicam 1.6.0 wheel ships it"
    return str(cti)


@pytest.fixture(scope="session")
def tlsimu_cti() -> str:
    cti = ROOT / ".cache" / "gentl" / "tlsimu" / "TLSimu.cti"
    assert cti.is_file(), f"{cti} missing: run scripts/install-gentl-producers.sh .venv/bin/python (make test does)"
    return str(cti)


@pytest.fixture
def genicam_pm():
    from host import create_plugin_manager
    import loupe_classical.plugin as classical
    import loupe_genicam.plugin as genicam

    pm = create_plugin_manager(autoload=False)
    pm.register_plugin(genicam, name="genicam", distribution="loupe-genicam")
    pm.register_plugin(classical, name="classical", distribution="loupe-classical")
    pm.check_pending()
    return pm
