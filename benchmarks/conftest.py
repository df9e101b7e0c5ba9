"""Fixtures shared by the benchmarks: the real Ped2 data, from the same place the tests use."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PED2  # one definition of where the shared data lives


@pytest.fixture(scope="session")
def ped2_root() -> Path:
    """Root holding ped2/ (the community layout), read-only."""
    assert PED2.is_dir(), f"real Ped2 data expected at {PED2} (set MAMA_SHARED to the shared/ folder)"
    return PED2.parent
