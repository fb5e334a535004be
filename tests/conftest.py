"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The MovieLens copies kept next to the project (never inside it): ../shared/data.
_FALLBACK_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder holding ml-100k/ and ml-1m/ (RecBole atomic files), or skip."""
    env = os.environ.get("METAREC_DATA")
    for candidate in ([Path(env)] if env else []) + [_FALLBACK_DATA]:
        if (candidate / "ml-100k").is_dir() or (candidate / "ml-1m").is_dir():
            return candidate.resolve()
    pytest.skip("MovieLens not found: set METAREC_DATA or place it at ../shared/data")
