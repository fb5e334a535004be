from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import time
import urllib.error
import zipfile
from pathlib import Path

import pytest

from metarec.data import load_dataset, load_path, registry
from metarec.errors import ConfigError, DataError, DatasetNotFoundError

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t100\n2\t10\t3\t101\n"
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "10\tHeat\t1995\tAction\n"
)
U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
U_ITEM = (
    "242|Kolya (1996)|24-Jan-1997||http://x|" + "|".join(["0"] * 5 + ["1"] + ["0"] * 13) + "\n"
    "302|L.A. Confidential (1997)|01-Jan-1997||http://y|"
    + "|".join(["0"] * 6 + ["1"] + ["0"] * 12)
    + "\n"
)


def write_atomic(prefix: Path) -> Path:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_name(prefix.name + ".inter").write_text(INTER)
    prefix.with_name(prefix.name + ".item").write_text(ITEM)
    return prefix


def write_raw(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text(U_DATA)
    (folder / "u.item").write_text(U_ITEM, encoding="latin-1")
    return folder


def zip_bytes(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


FAKE_ZIP = zip_bytes({"ml-100k/u.data": U_DATA, "ml-100k/u.item": U_ITEM})


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


class Opener:
    """Stands in for urllib's urlopen: serves fixed bytes or raises."""

    def __init__(self, payload: bytes | None = None) -> None:
        self.payload = payload
        self.headers: dict[str, str] = {}  # the response's, as a server sends them
        self.calls: list[str] = []

    def __call__(self, url: str, timeout: float | None = None) -> io.BytesIO:
        self.calls.append(url)
        if self.payload is None:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        response = io.BytesIO(self.payload)
        response.headers = self.headers  # type: ignore[attr-defined]
        return response


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Opener:
    """No real network, no real cache, no inherited METAREC_DATA."""
    monkeypatch.delenv(registry.ENV_DATA, raising=False)
    monkeypatch.setenv(registry.ENV_CACHE, str(tmp_path / "cache"))
    opener = Opener()
    monkeypatch.setattr(registry, "urlopen", opener)
    return opener


def pin_fake_zip(monkeypatch: pytest.MonkeyPatch, payload: bytes = FAKE_ZIP) -> None:
    known = registry.KNOWN_DATASETS["ml-100k"]
    pinned = dataclasses.replace(
        known, sha256=hashlib.sha256(payload).hexdigest(), size=len(payload)
    )
    monkeypatch.setitem(registry.KNOWN_DATASETS, "ml-100k", pinned)


@pytest.mark.parametrize("layout", ["nested", "flat", "raw"])
def test_explicit_root(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "root"
    if layout == "nested":
        write_atomic(root / "ml-100k" / "ml-100k")
    elif layout == "flat":
        write_atomic(root / "ml-100k")
    else:
        write_raw(root / "ml-100k")
    ds = load_dataset("ml-100k", root=root)
    assert ds.name == "ml-100k" and ds.rating_range == (1.0, 5.0)
    assert len(ds.interactions) == 2
    assert ds.report is not None and "_line" not in ds.interactions.columns
    raw = load_dataset("ml-100k", root=root, clean=False)
    assert raw.report is None and "_line" in raw.interactions.columns


def test_root_may_be_the_dataset_folder_itself(tmp_path: Path) -> None:
    folder = write_raw(tmp_path / "my-copy")
    assert load_dataset("ml-100k", root=folder).items["title"].tolist() == [
        "Kolya",
        "L.A. Confidential",
    ]
    # A folder holding another MovieLens release is not taken for this one.
    assert registry.find_local("ml-1m", folder) is None
    # nor one of the same layout that GroupLens' name says is another release: ml-10M
    # was loaded as ml-1m, every half-star rating dropped as off the 1-5 scale
    other = write_raw(tmp_path / "ml-10M100K")
    assert registry.find_local("ml-100k", other) is None
    assert registry.find_local("ml-100k", other.parent) is None
    assert registry.find_local("ml-100k", write_raw(tmp_path / "ml-100k")) is not None


def test_metarec_data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_atomic(tmp_path / "d2" / "ml-100k" / "ml-100k")
    monkeypatch.setenv(registry.ENV_DATA, f"{tmp_path / 'd1'}:{tmp_path / 'd2'}")
    assert len(load_dataset("ml-100k").interactions) == 2


def test_root_without_the_data_falls_back_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_atomic(tmp_path / "env" / "ml-100k")
    monkeypatch.setenv(registry.ENV_DATA, str(tmp_path / "env"))
    (tmp_path / "empty").mkdir()
    with pytest.warns(UserWarning, match="not in"):
        ds = load_dataset("ml-100k", root=tmp_path / "empty")
    assert len(ds.interactions) == 2
    # a folder that is not there (a typo) is refused: it fell back to METAREC_DATA, the
    # cache or a download with only a warning, and trained on data from elsewhere
    with pytest.raises(DataError, match=r"nowhere: no such folder; give the folder that"):
        load_dataset("ml-100k", root=tmp_path / "nowhere")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DataError, match=r"a-file: is a file; give the folder that holds"):
        load_dataset("ml-100k", root=tmp_path / "a-file")


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="ml-100k, ml-1m, ml-latest-small"):
        load_dataset("ml-20m")
    with pytest.raises(ConfigError, match="root: expected a folder path or None, got 5"):
        load_dataset("ml-100k", root=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="text: expected an ItemTextConfig"):
        load_dataset("ml-100k", text="title")  # type: ignore[arg-type]
    # "no" is truthy: it cleaned (or downloaded) where the caller said not to
    for flag in ("clean", "download"):
        for value in ("no", 0, None):
            with pytest.raises(ConfigError, match=f"{flag}: expected True or False, got "):
                load_dataset("ml-100k", **{flag: value})  # type: ignore[arg-type]


def test_offline_message_says_where_it_looked_and_what_to_do(
    tmp_path: Path, isolated: Opener
) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("ml-100k")
    msg = str(info.value)
    assert isolated.calls == [registry.KNOWN_DATASETS["ml-100k"].url]
    assert "METAREC_DATA (not set)" in msg
    assert str(tmp_path / "cache" / "datasets" / "ml-100k") in msg
    assert "Temporary failure in name resolution" in msg
    for hint in ("root=", "METAREC_DATA environment variable", "--data"):
        assert hint in msg
    assert "\n" not in msg  # the CLI prints errors on one line
    assert files_under(tmp_path / "cache") == []


def test_no_download_when_switched_off(isolated: Opener) -> None:
    with pytest.raises(DatasetNotFoundError, match="downloading is switched off"):
        load_dataset("ml-100k", download=False)
    assert isolated.calls == []


def test_checksum_mismatch_leaves_nothing_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Opener
) -> None:
    known = registry.KNOWN_DATASETS["ml-100k"]
    # GroupLens' size, other bytes: its hash differs
    monkeypatch.setitem(
        registry.KNOWN_DATASETS, "ml-100k", dataclasses.replace(known, size=len(FAKE_ZIP))
    )
    isolated.payload = FAKE_ZIP
    with pytest.raises(DatasetNotFoundError, match="sha256") as info:
        load_dataset("ml-100k")
    assert "discarded" in str(info.value)
    assert files_under(tmp_path / "cache") == []


def test_a_download_cut_short_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Opener
) -> None:
    """A connection closed early ends a read without an error; the checksum then
    failed and the message blamed a proxy or a new release."""
    pin_fake_zip(monkeypatch)
    isolated.payload = FAKE_ZIP[:-40]
    with pytest.raises(DatasetNotFoundError, match=r"stopped short: .* bytes of"):
        load_dataset("ml-100k")
    assert files_under(tmp_path / "cache") == []


def test_a_page_instead_of_the_archive_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Opener
) -> None:
    """A proxy's or login page's whole answer was reported as a download that 'stopped
    short; try again', which never helps."""
    pin_fake_zip(monkeypatch)
    page = b"<html><body>Please log in</body></html>"
    isolated.payload = page
    isolated.headers = {"Content-Length": str(len(page)), "Content-Type": "text/html"}
    with pytest.raises(DatasetNotFoundError, match=r"answered with \d+ bytes of text/html, not "
                       r"the [\d,]+-byte archive \(a proxy or login page\?\)"):  # fmt: skip
        load_dataset("ml-100k")
    assert files_under(tmp_path / "cache") == []


def test_a_full_disk_while_unpacking_names_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Opener
) -> None:
    # a bare "[Errno 28] No space left on device", naming no folder
    pin_fake_zip(monkeypatch)
    isolated.payload = FAKE_ZIP

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", full)
    with pytest.raises(DatasetNotFoundError, match=r"unpacking into the download cache .*datasets "
                       r"failed \(No space left on device\); free space there"):  # fmt: skip
        load_dataset("ml-100k")
    assert files_under(tmp_path / "cache") == []


def test_download_verifies_unpacks_and_then_uses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Opener
) -> None:
    pin_fake_zip(monkeypatch)
    isolated.payload = FAKE_ZIP
    ds = load_dataset("ml-100k")
    assert ds.interactions["item_id"].tolist() == ["242", "302"]
    cache = tmp_path / "cache" / "datasets"
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k"]  # no temporary leftovers
    assert (cache / "ml-100k" / "u.data").is_file()

    isolated.payload = None  # offline now: the cache must serve
    assert len(load_dataset("ml-100k").interactions) == 2
    assert len(isolated.calls) == 1


def test_an_installed_data_set_is_on_disk_before_and_after_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Opener, fsync_log: list[Path]
) -> None:
    # extractall leaves the files' bytes in the page cache and the rename was not
    # flushed: a power loss could leave the cache's folder with empty files, which
    # looks complete and is read as data
    pin_fake_zip(monkeypatch)
    isolated.payload = FAKE_ZIP
    load_dataset("ml-100k")
    cache = tmp_path / "cache" / "datasets"
    synced_files = [p for p in fsync_log if p.name == "u.data"]
    assert synced_files and synced_files[0].parent != cache / "ml-100k"  # before the rename
    assert fsync_log[-1] == cache  # the rename, after


def test_unsafe_archive_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Opener
) -> None:
    payload = zip_bytes({"../evil.txt": "x", "ml-100k/u.data": U_DATA})
    pin_fake_zip(monkeypatch, payload)
    isolated.payload = payload
    with pytest.raises(DatasetNotFoundError, match="unsafe path"):
        load_dataset("ml-100k")
    assert files_under(tmp_path) == []  # neither in the cache nor beside it


def test_load_path(tmp_path: Path) -> None:
    assert load_path(write_raw(tmp_path / "raw")).name == "raw"
    assert load_path(write_atomic(tmp_path / "atomic" / "mine")).name == "mine"
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="no data set found"):
        load_path(tmp_path / "nothing")
    # a typo: said to be missing, not searched for files that are not there
    with pytest.raises(
        DataError, match=r"/typo: no such file or directory \(nor RecBole atomic files"
    ):
        load_path(tmp_path / "typo")
    # a folder of one's own files: ratings.csv alone is no MovieLens layout (it needs
    # movies.csv), and the message said only "ratings.csv", which it holds
    own = tmp_path / "books"
    own.mkdir()
    for name in ("ratings.csv", "books.csv"):
        (own / name).write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"ratings\.csv with movies\.csv\); it holds books\.csv, "
                       r"ratings\.csv: name your own files with --interactions FILE"):  # fmt: skip
        load_path(own)


# --------------------------------------------------------------------------- real data


def test_real_data_from_root_and_env(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (shared_data / "ml-100k").is_dir():
        pytest.skip("ml-100k not in the shared data folder")
    ds = load_dataset("ml-100k", root=shared_data, download=False)
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (943, 1682, 100_000)
    monkeypatch.setenv(registry.ENV_DATA, str(shared_data))
    assert registry.locate("ml-100k", download=False) == (
        "atomic",
        shared_data / "ml-100k" / "ml-100k",
    )


def test_a_loader_that_loses_the_install_race_uses_the_winners_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process installs the folder between the check and the rename: the
    rename meets a non-empty folder (ENOTEMPTY), which was a raw OSError."""
    import os
    import shutil

    known = registry.KNOWN_DATASETS["ml-100k"]
    ours, target = write_raw(tmp_path / "ours"), tmp_path / "cache" / "ml-100k"
    real_replace = os.replace

    def other_process_first(src: str | Path, dst: str | Path) -> None:
        shutil.copytree(src, dst)  # the winner's copy lands first
        real_replace(src, dst)

    monkeypatch.setattr(registry.os, "replace", other_process_first)
    registry._install(ours, target, known)
    assert registry.detect_layout(target) == known.layout


def test_a_killed_loaders_leftovers_are_swept_but_a_running_ones_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Opener
) -> None:
    import os
    import time

    pin_fake_zip(monkeypatch)
    isolated.payload = FAKE_ZIP
    cache = tmp_path / "cache" / "datasets"
    cache.mkdir(parents=True)
    old_part, old_unpack = cache / ".ml-100k-dead.zip.part", cache / ".ml-100k-unpack-dead"
    old_part.write_bytes(b"half")
    old_unpack.mkdir()
    hours_ago = time.time() - 7 * 3600
    for p in (old_part, old_unpack):
        os.utime(p, (hours_ago, hours_ago))
    running = cache / ".ml-100k-live.zip.part"  # another loader's, still downloading
    running.write_bytes(b"partial")
    load_dataset("ml-100k")
    assert not old_part.exists() and not old_unpack.exists() and running.exists()


def test_a_copy_of_a_release_with_other_ratings_or_a_cut_line_is_warned_about(
    tmp_path: Path,
) -> None:
    # the archive is checksummed when downloaded, but an unpacked copy that lost its
    # tail still parsed: its last row read with timestamp 880 and "ok" from validate
    folder = write_raw(tmp_path / "ml-100k")
    with pytest.warns(UserWarning, match=r"holds 2 ratings where GroupLens' ml-100k has 100,000"):
        load_dataset("ml-100k", root=tmp_path)
    (folder / "u.data").write_text(U_DATA[:-7])
    with pytest.warns(UserWarning, match=r"u\.data: the last line \(2\) has no line end"):
        load_dataset("ml-100k", root=tmp_path)


def test_a_cache_that_is_a_file_and_a_missing_path_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # raw NotADirectoryError and TypeError, where the README promises metarec's errors
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv(registry.ENV_CACHE, str(tmp_path / "a-file"))
    with pytest.raises(DatasetNotFoundError, match=r"cannot use the download cache .*a-file"):
        load_dataset("ml-100k")
    # a file where the data set's folder goes: a NotADirectoryError after the download
    monkeypatch.setenv(registry.ENV_CACHE, str(tmp_path / "cache"))
    (tmp_path / "cache" / "datasets").mkdir(parents=True)
    (tmp_path / "cache" / "datasets" / "ml-100k").write_text("x")
    with pytest.raises(DatasetNotFoundError, match=r"ml-100k is a file, where the data set's"):
        load_dataset("ml-100k")
    with pytest.raises(ConfigError, match="path: expected a data set folder or prefix, got None"):
        load_path(None)  # type: ignore[arg-type]


def test_a_path_given_as_a_data_set_name_is_pointed_to_data() -> None:
    # `metarec data validate a/ok/ok` said only "unknown data set"
    with pytest.raises(
        ConfigError,
        match=r"'a/ok/ok' looks like a path \(given with --data a/ok/ok, load_path in Python\), "
        "but there is no such file or folder",
    ):
        load_dataset("a/ok/ok")


def test_an_existing_folder_given_as_a_data_set_name_is_pointed_to_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"looks like a path: give it with --data /"):
        load_dataset(str(tmp_path))


@pytest.mark.parametrize(
    "payload, needle",
    [(FAKE_ZIP[: len(FAKE_ZIP) // 2], "is not a zip"),  # its checksum pinned as it is
     (zip_bytes({"ml-100k/u.data": U_DATA}), "does not hold the expected ml-100k files")],
)  # fmt: skip
def test_an_archive_that_is_no_data_set_is_refused_and_nothing_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Opener, payload: bytes, needle: str
) -> None:
    pin_fake_zip(monkeypatch, payload)
    isolated.payload = payload
    with pytest.raises(DatasetNotFoundError, match=needle):
        load_dataset("ml-100k")
    assert files_under(tmp_path / "cache") == []


def test_metarec_data_comes_before_the_cache_and_a_typo_in_it_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's order (--data, then METAREC_DATA, then the cache) was tested only in
    part; a mistyped METAREC_DATA fell through to the cache without a word."""
    write_raw(tmp_path / "cache" / "datasets" / "ml-100k")  # two ratings in the cache
    env = tmp_path / "env"
    write_atomic(env / "ml-100k" / "ml-100k")  # and two others in METAREC_DATA
    monkeypatch.setenv(registry.ENV_DATA, str(env))
    assert set(load_dataset("ml-100k").items["item_id"]) == {"10"}  # METAREC_DATA's
    monkeypatch.setenv(registry.ENV_DATA, str(tmp_path / "envv"))
    with pytest.warns(UserWarning, match=r"METAREC_DATA names .*envv, which is no folder"):
        assert set(load_dataset("ml-100k").items["item_id"]) == {"242", "302"}  # the cache's


def test_a_killed_downloads_leftovers_go_once_the_data_set_is_cached(tmp_path: Path) -> None:
    # swept only by a later download, which a cached data set never needs
    datasets = tmp_path / "cache" / "datasets"
    write_raw(datasets / "ml-100k")
    part = datasets / ".ml-100k-abc.zip.part"
    part.write_bytes(b"half")
    old = time.time() - registry.LEFTOVER_AGE_S - 60
    os.utime(part, (old, old))
    load_dataset("ml-100k")
    assert not part.exists()


def test_a_damaged_download_cache_is_fetched_again_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Opener
) -> None:
    """A cached copy cut short or edited after unpacking was read as it was (a warning
    at most, none for an edit or a lost u.user): it is now checked against what was
    unpacked from the verified archive, and fetched again, or refused offline."""
    pin_fake_zip(monkeypatch)
    isolated.payload = FAKE_ZIP
    load_dataset("ml-100k")
    folder = tmp_path / "cache" / "datasets" / "ml-100k"
    data = folder / "u.data"
    data.write_text(data.read_text().replace("242", "243"))  # one id edited
    with pytest.warns(UserWarning, match=r"damaged \(u.data changed or missing .*again"):
        ds = load_dataset("ml-100k")
    assert ds.interactions["item_id"].tolist() == ["242", "302"] and len(isolated.calls) == 2
    data.write_text("")  # offline, and emptied: refused, naming the folder to delete
    isolated.payload = None
    with pytest.raises(DataError, match=r"damaged .*delete this folder") as info:
        load_dataset("ml-100k", download=False)
    assert info.value.path == str(folder)
    # a download that fails keeps the damaged copy for the user to mend or delete
    failed = r"damaged .*a fresh one was not fetched"
    with (
        pytest.warns(UserWarning, match="downloading it again"),
        pytest.raises(DatasetNotFoundError, match=failed),
    ):
        load_dataset("ml-100k")
    assert data.is_file() and data.read_text() == ""
    assert sorted(p.name for p in folder.parent.iterdir()) == ["ml-100k"]  # nothing aside


def test_a_zip_given_as_the_data_folder_is_told_to_be_unzipped(tmp_path: Path) -> None:
    # what the failed download asks for, given as it comes: "is a file" sent users to
    # --interactions
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(FAKE_ZIP)
    with pytest.raises(DataError, match="is a zip archive: unzip it and give the folder"):
        registry.load_path(archive)
    with pytest.raises(DataError, match="is a zip archive: unzip it and give the folder that"):
        load_dataset("ml-100k", root=archive)
