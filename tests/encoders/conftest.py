"""Shared fixtures: one loaded MiniLM for the whole session, in a throwaway cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from metarec.encoders import SentenceEncoder


@pytest.fixture(scope="session")
def minilm_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """METAREC_CACHE used to unpack the bundled model (never the user's real cache)."""
    return tmp_path_factory.mktemp("metarec-cache")


@pytest.fixture(scope="session")
def minilm(minilm_cache_dir: Path) -> SentenceEncoder:
    """The default encoder with the real bundled weights, loaded once."""
    # The variable is only needed while the model is unpacked and loaded, so
    # it is restored at once instead of leaking into other tests.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METAREC_CACHE", str(minilm_cache_dir))
        encoder = SentenceEncoder()
        encoder.load()
    return encoder
