"""EmbeddingCache and cached_encode, with a fast deterministic stand-in encoder."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from safetensors import safe_open

from metarec.encoders import EmbeddingCache, TfidfSvdEncoder, cached_encode
from metarec.encoders.cache import text_hash
from metarec.errors import ModelError


class HashEncoder:
    """Deterministic pseudo-embeddings derived from the text's hash."""

    def __init__(self, dim: int = 8, name: str = "hash") -> None:
        self.dim = dim
        self.id = f"{name}:d{dim}"

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> npt.NDArray[np.float32]:
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)

    def to_config(self) -> dict[str, Any]:
        return {"type": "hash", "dim": self.dim}


class Counting:
    """Wraps an encoder and records every batch it is asked to encode."""

    def __init__(self, inner: HashEncoder) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    @property
    def id(self) -> str:
        return self.inner.id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> npt.NDArray[np.float32]:
        self.calls.append(list(texts))
        return self.inner.encode(texts, progress=progress)

    def to_config(self) -> dict[str, Any]:
        return self.inner.to_config()


TEXTS = ["alpha", "beta", "alpha", "gamma", "beta", "delta"]


def _shards(cache: EmbeddingCache, encoder_id: str) -> list[Path]:
    return sorted(cache.encoder_dir(encoder_id).glob("shard-*.safetensors"))


def test_second_run_does_not_call_the_encoder(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    enc = Counting(HashEncoder())
    first = cached_encode(enc, TEXTS, cache)
    assert enc.calls == [["alpha", "beta", "gamma", "delta"]]  # deduplicated, first-seen order
    np.testing.assert_array_equal(first, HashEncoder().encode(TEXTS))
    assert first.dtype == np.float32 and first.shape == (6, 8)

    again = cached_encode(enc, TEXTS, EmbeddingCache(tmp_path))  # fresh instance, same disk
    assert len(enc.calls) == 1
    np.testing.assert_array_equal(again, first)


def test_only_missing_texts_are_encoded_into_a_new_shard(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    enc = Counting(HashEncoder())
    cached_encode(enc, ["alpha", "beta"], cache)
    out = cached_encode(enc, ["beta", "epsilon", "alpha", "epsilon"], cache)
    assert enc.calls[1] == ["epsilon"]
    np.testing.assert_array_equal(
        out, HashEncoder().encode(["beta", "epsilon", "alpha", "epsilon"])
    )
    assert [p.name for p in _shards(cache, enc.id)] == [
        "shard-0.safetensors",
        "shard-1.safetensors",
    ]


class StopsAtCall(Counting):
    """Ctrl-C in the middle of its ``n``-th batch."""

    def __init__(self, inner: HashEncoder, n: int) -> None:
        super().__init__(inner)
        self.n = n

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> npt.NDArray[np.float32]:
        if len(self.calls) + 1 == self.n:
            raise KeyboardInterrupt
        return super().encode(texts, progress=progress)


def test_an_interrupted_encoding_keeps_the_chunks_it_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one store at the end lost every vector of an interrupted encoding: minutes of a
    # large catalogue's, encoded again from the first text
    from metarec.encoders import cache as cache_module

    monkeypatch.setattr(cache_module, "ENCODE_CHUNK", 2)
    texts = ["a", "b", "a", "c", "d", "e", "f", "g"]  # distinct: a b | c d | e f | g
    stopped = StopsAtCall(HashEncoder(), 3)
    with pytest.raises(KeyboardInterrupt):
        cached_encode(stopped, texts, EmbeddingCache(tmp_path))
    assert stopped.calls == [["a", "b"], ["c", "d"]]
    rerun = Counting(HashEncoder())
    out = cached_encode(rerun, texts, EmbeddingCache(tmp_path))
    assert rerun.calls == [["e", "f"], ["g"]]  # the same chunks as a run never stopped
    np.testing.assert_array_equal(out, HashEncoder().encode(texts))
    # chunks are cut from the distinct texts, then what is cached leaves them
    again = Counting(HashEncoder())
    cached_encode(again, ["a", "x", "c", "y", "z"], EmbeddingCache(tmp_path))
    assert again.calls == [["x"], ["y"], ["z"]]  # a x | c y | z


class WidensAfterFirstCall(HashEncoder):
    def __init__(self) -> None:
        super().__init__(dim=8, name="widens")
        self.calls = 0

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> npt.NDArray[np.float32]:
        self.calls += 1
        return HashEncoder(dim=8 if self.calls == 1 else 9).encode(texts)


@pytest.mark.parametrize("cached", [False, True])
def test_an_encoder_whose_width_changes_between_chunks_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: bool
) -> None:
    # without a cache the check read as an AssertionError; with one it blamed the cache
    from metarec.encoders import cache as cache_module

    monkeypatch.setattr(cache_module, "ENCODE_CHUNK", 2)
    cache = EmbeddingCache(tmp_path) if cached else None
    with pytest.raises(ModelError, match=r"gave 8-dim vectors for some texts and 9-dim ones"):
        cached_encode(WidensAfterFirstCall(), ["a", "b", "c"], cache)


def test_shard_layout(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    enc = HashEncoder(name="org/model:v1")
    cached_encode(enc, ["alpha", "beta"], cache)
    directory = cache.encoder_dir(enc.id)
    assert directory.parent == tmp_path
    assert all(c.isalnum() or c in "._-" for c in directory.name)
    with safe_open(str(directory / "shard-0.safetensors"), framework="np") as f:
        assert list(f.keys()) == ["vectors"]
        assert f.get_tensor("vectors").shape == (2, 8)
        meta = f.metadata()
    assert json.loads(meta["hashes"]) == [text_hash("alpha"), text_hash("beta")]
    assert meta["encoder_id"] == enc.id
    assert not [n for n in os.listdir(directory) if n.endswith(".tmp")]
    # Ids that sanitise alike still get separate directories.
    assert cache.encoder_dir("a:b") != cache.encoder_dir("a/b")


def test_encoders_do_not_share_entries(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    a, b = Counting(HashEncoder(name="a")), Counting(HashEncoder(name="b"))
    cached_encode(a, ["alpha"], cache)
    cached_encode(b, ["alpha"], cache)
    assert a.calls == b.calls == [["alpha"]]


def _swap(data: bytes, a: bytes, b: bytes) -> bytes:
    return data.replace(a, b"\0" * len(a)).replace(b, a).replace(b"\0" * len(a), b)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated body
        lambda data: data[:5],  # truncated header length
        lambda data: b"",
        lambda data: b"not a safetensors file at all" * 10,
        # the same size, other values: caught by the vectors' checksum
        lambda data: data[:-16] + bytes(16),  # the tail zeroed, as a crash can leave it
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),  # one bit flipped
        # the texts' hashes swapped in the header: each text served the other's vector
        lambda data: _swap(data, text_hash("alpha").encode(), text_hash("beta").encode()),
    ],
)
def test_corrupt_shard_warns_and_is_reencoded(tmp_path: Path, damage: Any) -> None:
    cache = EmbeddingCache(tmp_path)
    enc = Counting(HashEncoder())
    expected = cached_encode(enc, ["alpha", "beta"], cache)
    shard = _shards(cache, enc.id)[0]
    shard.write_bytes(damage(shard.read_bytes()))
    with pytest.warns(RuntimeWarning, match="removing damaged shard"):
        out = cached_encode(enc, ["alpha", "beta"], cache)
    assert enc.calls[-1] == ["alpha", "beta"]
    np.testing.assert_array_equal(out, expected)
    # the damaged shard is gone: it stayed, and was warned about on every later run
    assert len(_shards(cache, enc.id)) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(cached_encode(enc, ["alpha", "beta"], cache), expected)
    assert len(enc.calls) == 2


def test_shards_take_the_umask_and_orphans_of_killed_writers_go(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    enc = HashEncoder()
    directory = cache.encoder_dir(enc.id)
    directory.mkdir(parents=True)
    old, fresh = directory / ".shard-0123456789ab.tmp", directory / ".shard-ba9876543210.tmp"
    old.write_bytes(b"half a shard")
    fresh.write_bytes(b"a live writer's")
    os.utime(old, (time.time() - 2 * 3600, time.time() - 2 * 3600))
    umask = os.umask(0o022)
    try:
        cached_encode(enc, ["alpha"], cache)
    finally:
        os.umask(umask)
    # safetensors' save_file made shards owner-only whatever the umask
    assert stat.S_IMODE(_shards(cache, enc.id)[0].stat().st_mode) == 0o644
    assert not old.exists() and fresh.exists()


def test_mismatched_hash_list_is_ignored(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    enc = Counting(HashEncoder())
    directory = cache.encoder_dir(enc.id)
    directory.mkdir(parents=True)
    from safetensors.numpy import save_file

    meta = {"format": "metarec-embeddings-1", "encoder_id": enc.id, "hashes": json.dumps(["x"])}
    save_file({"vectors": np.zeros((2, 8), np.float32)}, directory / "shard-0.safetensors", meta)
    with pytest.warns(RuntimeWarning, match="hash list"):
        cached_encode(enc, ["alpha"], cache)
    assert enc.calls == [["alpha"]]


def test_without_cache_still_deduplicates() -> None:
    enc = Counting(HashEncoder())
    out = cached_encode(enc, TEXTS, None)
    assert enc.calls == [["alpha", "beta", "gamma", "delta"]]
    np.testing.assert_array_equal(out, HashEncoder().encode(TEXTS))
    assert cached_encode(enc, [], None).shape == (0, 8)


def test_unwritable_cache_warns_but_returns_vectors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    enc = Counting(HashEncoder())
    with pytest.warns(RuntimeWarning, match="not cached"):
        out = cached_encode(enc, ["alpha"], EmbeddingCache(blocker))
    np.testing.assert_array_equal(out, HashEncoder().encode(["alpha"]))


def test_dimension_change_under_the_same_id_is_an_error(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    cached_encode(HashEncoder(dim=8, name="x"), ["alpha"], cache)
    liar = HashEncoder(dim=4, name="x")
    liar.id = "x:d8"  # an id that fails to reflect a changed setting
    with pytest.raises(ModelError, match="dim"):
        cached_encode(liar, ["alpha", "beta"], cache)


def test_unfitted_tfidf_is_fitted_on_the_texts(tmp_path: Path) -> None:
    corpus = ["red apple pie", "green apple tart", "blue sky high", "red sky night"]
    cache = EmbeddingCache(tmp_path)
    encoder = TfidfSvdEncoder(dim=4)
    out = cached_encode(encoder, corpus, cache)
    assert encoder.is_fitted
    np.testing.assert_array_equal(out, TfidfSvdEncoder(dim=4).encode(corpus))
    assert _shards(cache, encoder.id)


class NoDim(Counting):
    """An encoder whose dimension is costly (a model load) and so must not be read."""

    @property
    def dim(self) -> int:
        raise AssertionError("dim was read although every text was cached")


def test_fully_cached_run_reads_neither_model_nor_dim(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    expected = cached_encode(HashEncoder(), TEXTS, cache)
    enc = NoDim(HashEncoder())
    np.testing.assert_array_equal(cached_encode(enc, TEXTS, cache), expected)
    assert enc.calls == []


def test_small_shards_are_merged_by_size_tier_and_stay_findable(tmp_path: Path) -> None:
    # a service's PUT of one item at a time adds a shard each: 300 of them were 300 files
    # every lookup read the header of, for as long as the service ran
    cache = EmbeddingCache(tmp_path)
    enc = HashEncoder()
    texts = [f"item {i}" for i in range(300)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a merged-away shard is not a damaged one
        for text in texts:
            cached_encode(enc, [text], cache)
    shards = _shards(cache, enc.id)
    rows = []
    for path in shards:
        with safe_open(str(path), framework="np") as f:
            rows.append(len(json.loads(f.metadata()["hashes"])))
    assert sum(rows) == 300  # every text once: nothing lost or kept twice by a merge
    assert len(shards) < 2 * 16  # at most 15 a tier is left unmerged
    assert max(rows) == 256  # 16 merged shards of 16, themselves 16 merged single rows
    counting = Counting(enc)
    fresh = EmbeddingCache(tmp_path)
    np.testing.assert_array_equal(cached_encode(counting, texts, fresh), enc.encode(texts))
    assert counting.calls == []


def test_a_reader_whose_listed_shards_were_merged_away_finds_their_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc = HashEncoder()
    reader = EmbeddingCache(tmp_path)
    writer = EmbeddingCache(tmp_path)
    texts = [f"item {i}" for i in range(15)]
    for text in texts:
        cached_encode(enc, [text], writer)
    listed = reader._shards(enc.id)
    assert len(listed) == 15
    for path in listed:  # headers read, as a long-running reader has them
        reader._read_index(path, enc.id)
    cached_encode(enc, ["one more"], writer)  # the 16th small shard: all merged into one
    assert len(_shards(writer, enc.id)) == 1 and not any(p.exists() for p in listed)
    # the merge came between the reader's listing and its reads
    listings = iter([listed])
    real = reader._shards
    monkeypatch.setattr(reader, "_shards", lambda eid: next(listings, None) or real(eid))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = reader.lookup(enc.id, [text_hash(t) for t in texts])
    assert len(found) == 15
    np.testing.assert_array_equal(found[text_hash("item 3")], enc.encode(["item 3"])[0])


def test_a_merge_of_a_crowded_tier_keeps_the_shard_size_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 20 shards of 10 rows (merges skipped while another process held the lock) merged
    # into one of 201 rows where shards hold at most 160
    from metarec.encoders import cache as cache_module

    cache = EmbeddingCache(tmp_path)
    enc = HashEncoder()
    monkeypatch.setattr(cache_module, "_MERGE_AT", 10**6)  # no merging while they pile up
    for n in range(20):
        cached_encode(enc, [f"item {n} {i}" for i in range(10)], cache)
    monkeypatch.setattr(cache_module, "_MERGE_AT", 16)
    monkeypatch.setattr(cache_module, "_MAX_ROWS_PER_SHARD", 160)
    cached_encode(enc, ["one more"], cache)
    rows = []
    for path in _shards(cache, enc.id):
        with safe_open(str(path), framework="np") as f:
            rows.append(len(json.loads(f.metadata()["hashes"])))
    assert max(rows) <= 160 and sum(rows) == 201


def test_a_merge_that_cannot_remove_its_sources_keeps_every_row_and_says_nothing_false(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a shard held open elsewhere: "vectors were not cached" was warned for cached vectors
    cache = EmbeddingCache(tmp_path)
    enc = HashEncoder()
    for n in range(15):
        cached_encode(enc, [f"item {n}"], cache)

    real = Path.unlink

    def refuse(self: Path, missing_ok: bool = False) -> None:
        if self.name.startswith("shard-"):
            raise PermissionError(13, "in use", str(self))
        real(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached_encode(enc, ["item 15"], cache)
    monkeypatch.undo()
    counting = Counting(enc)
    texts = [f"item {n}" for n in range(16)]
    np.testing.assert_array_equal(
        cached_encode(counting, texts, EmbeddingCache(tmp_path)), enc.encode(texts)
    )
    assert counting.calls == []


class NaNForBeta(HashEncoder):
    """What damaged weights gave: NaN vectors for some texts."""

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> npt.NDArray[np.float32]:
        out = super().encode(texts, progress=progress)
        out[[t == "beta" for t in texts]] = np.nan
        return out


def test_non_finite_vectors_are_refused_and_never_cached(tmp_path: Path) -> None:
    # stored, they were read back as a damaged shard (its good rows with them) and
    # training on them "diverged"
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(
        ModelError, match=r"NaN or infinite vectors for 1 of 2 texts \(e\.g\. 'beta'\)"
    ):
        cached_encode(NaNForBeta(name="n"), ["alpha", "beta"], cache)
    assert not list(tmp_path.rglob("*.safetensors"))


@pytest.mark.parametrize("key", ["sha256", None])
def test_shards_of_earlier_versions_are_still_read(tmp_path: Path, key: str | None) -> None:
    # written before the checksum covered the hash list ("sha256": the vectors alone),
    # or before there was one: read, not re-encoded
    from safetensors.numpy import save as save_np

    from metarec.encoders.cache import _digest

    cache = EmbeddingCache(tmp_path)
    enc = Counting(HashEncoder())
    expected = cached_encode(enc, ["alpha", "beta"], cache)
    shard = _shards(cache, enc.id)[0]
    with safe_open(str(shard), framework="np") as f:
        metadata = dict(f.metadata())
        vectors = f.get_tensor("vectors")
    del metadata["sha256_rows"]
    if key is not None:
        metadata[key] = _digest(vectors)
    shard.write_bytes(save_np({"vectors": vectors}, metadata))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(cached_encode(enc, ["alpha", "beta"], cache), expected)
    assert len(enc.calls) == 1
