"""Artifacts get the permissions the umask gives, not owner-only ones: a service
running as another account must be able to read the run a training job wrote."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from metarec.io import remove_orphan_temps, save_json, save_tensors
from metarec.tempfiles import create_temp_dir, create_temp_file


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_artifacts_are_readable_by_others_under_a_022_umask(
    umask_022: None, tmp_path: Path
) -> None:
    save_json(tmp_path / "run" / "config.json", {"seed": 0})
    save_tensors(tmp_path / "run" / "model.safetensors", {"w": torch.zeros(2)})
    assert _mode(tmp_path / "run" / "config.json") == 0o644
    assert _mode(tmp_path / "run" / "model.safetensors") == 0o644
    folder = create_temp_dir(tmp_path, ".model.", ".tmp")
    assert _mode(folder) == 0o755
    assert folder.name.startswith(".model.") and folder.name.endswith(".tmp")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == [folder.name]


def test_the_umask_is_still_obeyed(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        fd, path = create_temp_file(tmp_path, ".x.", ".tmp")
        os.close(fd)
        assert _mode(path) == 0o600
        assert _mode(create_temp_dir(tmp_path, ".y.")) == 0o700
    finally:
        os.umask(old)


def test_temporary_names_never_clash(tmp_path: Path) -> None:
    made = set()
    for _ in range(50):
        fd, path = create_temp_file(tmp_path, ".x.", ".tmp")
        os.close(fd)
        made.add(path)
    assert len(made) == 50


def test_what_killed_writers_left_is_removed_and_nothing_else(tmp_path: Path) -> None:
    # a SIGKILL mid-write left ".model.safetensors.<hex>.tmp" that nothing removed
    (tmp_path / ".model.safetensors.0123456789ab.tmp").write_bytes(b"half")
    (tmp_path / ".ensemble.0123456789ab.tmp").mkdir()
    (tmp_path / ".ensemble.0123456789ab.tmp" / "members.json").write_text("{}")
    keep = [".hidden", "model.safetensors", ".x.tmp", ".shard-0123456789ab.tmp"]
    for name in keep:
        (tmp_path / name).write_text("kept")
    remove_orphan_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    remove_orphan_temps(tmp_path / "not-there")  # nothing to do, nothing raised


def test_a_staged_folder_sweeps_what_killed_writers_of_it_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a kill between the move aside and the move in, or before either, left the
    # ensemble's staged copy and its old one (6.6 MB each) beside it for good
    import time

    import metarec.tempfiles
    from metarec.models.persist import staged_folder

    monkeypatch.setattr(metarec.tempfiles, "STALE_AGE_S", 0.5)
    old_copy, staged = tmp_path / ".ens.old-1a2b3c4d", tmp_path / ".ens.0123456789ab.tmp"
    other = tmp_path / ".ens2.0123456789ab.tmp"  # another folder's
    odd = tmp_path / ".e[1].0123456789ab.tmp"  # a name glob would read as a pattern
    for folder in (old_copy, staged, other, odd):
        folder.mkdir()
        (folder / "manifest.json").write_text("{}")
    time.sleep(0.6)
    young = tmp_path / ".ens.ba9876543210.tmp"  # another writer's, still at work
    young.mkdir()
    # a write that fails sweeps nothing: the old copy may be the only one there is
    with pytest.raises(RuntimeError), staged_folder(tmp_path / "ens"):
        raise RuntimeError("killed")
    assert old_copy.is_dir() and staged.is_dir()
    with staged_folder(tmp_path / "ens") as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ens", young.name, other.name, odd.name]
    )
    with staged_folder(tmp_path / "e[1]") as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert not odd.exists() and other.exists()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name a descriptor")
def test_renames_into_place_are_synced_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a rename lives in the folder: without syncing it, a power loss after the rename
    # could bring back the old name though the new file's bytes were on disk
    import numpy as np

    from metarec.encoders.cache import EmbeddingCache
    from metarec.models.persist import staged_folder

    synced: list[Path] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    save_json(tmp_path / "a" / "x.json", {"a": 1})
    assert synced == [tmp_path / "a"]
    synced.clear()
    for _ in range(2):  # a new folder, then one replacing it
        with staged_folder(tmp_path / "run") as tmp:
            (tmp / "f").write_text("x")
        assert synced[-1] == tmp_path
    cache = EmbeddingCache(tmp_path / "cache")
    synced.clear()
    cache.store("enc", ["h"], np.ones((1, 3), dtype=np.float32))
    assert synced == [cache.encoder_dir("enc")]


def test_sync_tree_flushes_every_file_and_folder(tmp_path: Path, fsync_log: list[Path]) -> None:
    from metarec.tempfiles import sync_tree

    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("top.txt", "a/one.bin", "a/b/two.json"):
        (tmp_path / name).write_text(name)
    sync_tree(tmp_path)
    assert set(fsync_log) == {
        tmp_path / "top.txt", tmp_path / "a" / "one.bin", tmp_path / "a" / "b" / "two.json",
        tmp_path / "a" / "b", tmp_path / "a", tmp_path,
    }  # fmt: skip
    # a folder after what it holds: its entries name flushed files
    assert fsync_log.index(tmp_path / "a" / "b") > fsync_log.index(
        tmp_path / "a" / "b" / "two.json"
    )
    assert fsync_log[-1] == tmp_path


def test_a_file_is_synced_before_its_rename_and_an_interrupt_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the rename is durable only over bytes already on disk: file first, then the name
    steps: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        steps.append((kind, Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        steps.append(("rename", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_json(tmp_path / "x.json", {"a": 1})
    assert [kind for kind, _ in steps] == ["file", "rename", "dir"]
    assert steps[0][1].startswith(".x.json.") and steps[0][1].endswith(".tmp")

    def interrupted(src: str | Path, dst: str | Path) -> None:
        raise KeyboardInterrupt  # Ctrl-C between the write and the rename

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_json(tmp_path / "y.json", {"b": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_temp_folder_renamed_a_moment_ago_is_not_stale_whatever_its_mtime(
    tmp_path: Path,
) -> None:
    from metarec.tempfiles import remove_stale

    young = tmp_path / ".run.0123456789ab.tmp"
    young.mkdir()
    hours_ago = os.stat(young).st_mtime - 7200
    os.utime(young, (hours_ago, hours_ago))  # its ctime is now, as after a rename
    remove_stale(tmp_path, ".run.*.tmp", age_s=60)
    assert young.exists()
    remove_stale(tmp_path, ".run.*.tmp", age_s=0)
    assert not young.exists()
