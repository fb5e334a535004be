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
    monkeypatch.setattr(memory, "_SELF_CGROUP", tmp_path / "absent")
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
    monkeypatch.setattr(memory, "_SELF_CGROUP", tmp_path / "absent")  # no container limit
    assert memory.available_bytes() == 4 * 2**30
    memory.require_memory("metarec-episodic", 4_000, 180.0)  # 2.7 GiB: fits
    with pytest.raises(DataError) as err:
        memory.require_memory("metarec-episodic", 10_000, 180.0)  # 16.8 GiB
    message = str(err.value)
    assert message.startswith("metarec-episodic: 10,000 items need about 16.8 GiB")
    assert "4.0 GiB available, enough for about 4,884 items" in message  # sqrt(4 GiB / 180)
    assert "MetaModel" in message


def _fake_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proc: str) -> Path:
    (tmp_path / "self_cgroup").write_text(proc)
    monkeypatch.setattr(memory, "_SELF_CGROUP", tmp_path / "self_cgroup")
    monkeypatch.setattr(memory, "_CGROUP_ROOT", tmp_path / "cg")
    info = tmp_path / "meminfo"
    info.write_text("MemAvailable: 33554432 kB\n")  # 32 GiB on the host
    monkeypatch.setattr(memory, "_MEMINFO", info)
    return tmp_path / "cg"


def test_a_containers_cgroup_v2_limit_is_the_room_that_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _fake_cgroup(tmp_path, monkeypatch, "0::/box/app\n")
    own = root / "box" / "app"
    own.mkdir(parents=True)
    (own / "memory.max").write_text(f"{8 * 2**30}\n")
    (own / "memory.current").write_text(f"{3 * 2**30}\n")
    (own / "memory.stat").write_text(f"anon 1\ninactive_file {2**30}\n")
    # 8 GiB limit, 3 used of which 1 is droppable cache: 6 GiB of room, not the host's 32
    assert memory.available_bytes() == 6 * 2**30
    (own / "memory.max").write_text("max\n")
    assert memory.available_bytes() == 32 * 2**30
    # no limit of its own, but its parent's counts
    (root / "box" / "memory.max").write_text(f"{2**30}\n")
    (root / "box" / "memory.current").write_text(f"{2**28}\n")
    assert memory.available_bytes() == 2**30 - 2**28


def test_a_cgroup_v1_limit_counts_and_its_no_limit_value_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _fake_cgroup(tmp_path, monkeypatch, "5:cpu:/\n4:memory:/job/7\n")
    own = root / "memory" / "job" / "7"
    own.mkdir(parents=True)
    (own / "memory.limit_in_bytes").write_text(f"{4 * 2**30}\n")
    (own / "memory.usage_in_bytes").write_text(f"{2**30}\n")
    (own / "memory.stat").write_text(f"total_inactive_file {2**29}\n")
    assert memory.available_bytes() == 4 * 2**30 - 2**29
    (own / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "none"
    assert memory.available_bytes() == 32 * 2**30
    # a container in its own cgroup namespace sees its cgroup at the mount's root
    (tmp_path / "self_cgroup").write_text("4:memory:/\n")
    base = root / "memory"
    (base / "memory.limit_in_bytes").write_text(f"{2**30}\n")
    (base / "memory.usage_in_bytes").write_text("0\n")
    assert memory.available_bytes() == 2**30
