"""The memory check that dense item-by-item fits make before they start."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from metarec.errors import DataError
from metarec.models import memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MemAvailable is Linux's")
def test_available_memory_is_read_from_the_kernel() -> None:
    have = memory.available_bytes()
    assert have is not None and 0 < have <= 2**50


def test_unknown_available_memory_lets_a_fit_go_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory, "_MEMINFO", tmp_path / "absent")
    assert memory.available_bytes() is None
    memory.require_memory("m", 10**9, 1e9)  # nothing known: no refusal
    garbled = tmp_path / "meminfo"
    garbled.write_text("MemTotal: 100 kB\nMemAvailable: lots kB\n")
    monkeypatch.setattr(memory, "_MEMINFO", garbled)
    assert memory.available_bytes() is None


def test_a_catalogue_too_large_for_the_machine_is_refused_with_the_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = tmp_path / "meminfo"
    info.write_text("MemTotal: 8388608 kB\nMemAvailable: 4194304 kB\n")  # 4 GiB available
    monkeypatch.setattr(memory, "_MEMINFO", info)
    assert memory.available_bytes() == 4 * 2**30
    memory.require_memory("metarec-episodic", 4_000, 180.0)  # 2.7 GiB: fits
    with pytest.raises(DataError) as err:
        memory.require_memory("metarec-episodic", 10_000, 180.0)  # 16.8 GiB
    message = str(err.value)
    assert message.startswith("metarec-episodic: 10,000 items need about 16.8 GiB")
    assert "4.0 GiB available" in message and "MetaModel" in message
