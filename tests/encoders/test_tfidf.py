"""TfidfSvdEncoder: fitting, determinism, and pickle-free persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from metarec.encoders import Encoder, TfidfSvdEncoder, encoder_from_config, make_encoder
from metarec.encoders.base import FittableEncoder, StatefulEncoder, encoder_state_tensors
from metarec.encoders.tfidf import check_saved_state
from metarec.errors import ConfigError, DataError, ModelError

CORPUS = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "Toy Story 2 (1999). Genres: Animation, Children's, Comedy.",
    "Schindler's List (1993). Genres: Drama, War.",
    "Saving Private Ryan (1998). Genres: Action, Drama, War.",
    "The Lion King (1994). Genres: Animation, Children's, Musical.",
    "Heat (1995). Genres: Action, Crime, Thriller.",
    "Casablanca (1942). Genres: Drama, Romance, War.",
    "Aladdin (1992). Genres: Animation, Children's, Comedy, Musical.",
]
NEW = ["A Bug's Life (1998). Genres: Animation, Children's, Comedy.", "zzz qqq"]


def _fitted(**kw: object) -> TfidfSvdEncoder:
    return TfidfSvdEncoder(**kw).fit(CORPUS)  # type: ignore[arg-type]


def test_shape_norm_and_zero_padding() -> None:
    encoder = _fitted(dim=64)
    vectors = encoder.encode(CORPUS)
    assert vectors.shape == (len(CORPUS), 64) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    # Eight documents allow at most eight components; the rest is padding.
    assert not vectors[:, len(CORPUS) :].any()
    assert encoder.state_tensors()["components"].shape[0] == len(CORPUS)


def test_unknown_terms_give_a_zero_row() -> None:
    vectors = _fitted(dim=4).encode(NEW)
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-6)
    assert not vectors[1].any()


def test_similar_items_are_closer() -> None:
    vectors = _fitted(dim=6).encode(CORPUS)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_deterministic_and_id_tracks_fitted_state() -> None:
    a, b = _fitted(dim=4, seed=3), _fitted(dim=4, seed=3)
    np.testing.assert_array_equal(a.encode(NEW), b.encode(NEW))
    assert a.id == b.id and a.id.startswith("tfidf-svd:d4:")
    other_corpus = TfidfSvdEncoder(dim=4, seed=3).fit(CORPUS[:5])
    assert other_corpus.id != a.id
    assert _fitted(dim=4, seed=3, ngram_range=(1, 1)).id != a.id


def test_fits_implicitly_on_first_encode_only() -> None:
    encoder = TfidfSvdEncoder(dim=4)
    assert not encoder.is_fitted
    assert encoder.id.endswith(":unfitted")
    first = encoder.encode(CORPUS)
    fitted_id = encoder.id
    np.testing.assert_array_equal(first, _fitted(dim=4).encode(CORPUS))
    encoder.encode(NEW)
    assert encoder.id == fitted_id


def test_round_trip_through_safetensors_and_json(tmp_path: Path) -> None:
    encoder = _fitted(dim=16, ngram_range=(1, 2), min_df=1)
    save_file(encoder.state_tensors(), tmp_path / "state.safetensors")
    (tmp_path / "encoder.json").write_text(json.dumps(encoder.to_config()))

    config = json.loads((tmp_path / "encoder.json").read_text())
    tensors = load_file(tmp_path / "state.safetensors")
    rebuilt = TfidfSvdEncoder.from_state(config, tensors)
    assert rebuilt.id == encoder.id
    for texts in (CORPUS, NEW):
        np.testing.assert_array_equal(rebuilt.encode(texts), encoder.encode(texts))
    via_factory = encoder_from_config(config, tensors)
    np.testing.assert_array_equal(via_factory.encode(NEW), encoder.encode(NEW))


def test_unfitted_round_trip() -> None:
    encoder = TfidfSvdEncoder(dim=8, seed=2)
    rebuilt = encoder_from_config(json.loads(json.dumps(encoder.to_config())))
    assert isinstance(rebuilt, TfidfSvdEncoder) and not rebuilt.is_fitted
    assert (rebuilt.dim, rebuilt.seed) == (8, 2)
    assert encoder_state_tensors(encoder) == {}


def test_tampered_state_is_rejected() -> None:
    encoder = _fitted(dim=4)
    config, tensors = encoder.to_config(), encoder.state_tensors()
    changed = {**config, "idf": [x * 2 for x in config["idf"]]}
    with pytest.raises(ModelError, match="does not match"):
        TfidfSvdEncoder.from_state(changed, tensors)
    with pytest.raises(ModelError, match="components"):
        TfidfSvdEncoder.from_state(config, {})
    with pytest.raises(ModelError, match="shape"):
        TfidfSvdEncoder.from_state(config, {"components": tensors["components"][:, :-1]})
    with pytest.raises(ModelError):
        encoder_from_config({"type": "word2vec"})
    # hand-edited settings and arrays: ModelError, not the TypeError and ValueError met
    # when the first item was added (the check a run's load makes sees the settings too)
    for ngrams in (2, None):
        edited = {**config, "ngram_range": ngrams}
        with pytest.raises(ModelError, match=r"settings are invalid: ngram_range must be two"):
            TfidfSvdEncoder.from_state(edited, tensors)
        with pytest.raises(ModelError, match="ngram_range"):
            check_saved_state(edited, tensors)
    with pytest.raises(ModelError, match="components are not numeric"):
        TfidfSvdEncoder.from_state(config, {"components": np.array([["xyz"]])})


def test_tiny_corpora() -> None:
    one_term = TfidfSvdEncoder(dim=3, ngram_range=(1, 1)).fit(["hello", "hello hello"])
    np.testing.assert_allclose(one_term.encode(["hello"]), [[1.0, 0.0, 0.0]])
    single_doc = TfidfSvdEncoder(dim=3).fit(["hello big world"])
    assert single_doc.encode(["big world"]).shape == (1, 3)
    with pytest.raises(DataError):
        TfidfSvdEncoder().fit(["", "a"])
    with pytest.raises(DataError):
        TfidfSvdEncoder(min_df=5).fit(CORPUS[:2])


@pytest.mark.parametrize(
    "bad",
    [
        {"dim": 0},
        {"seed": -1},
        {"min_df": 0},
        {"min_df": 1.5},
        {"ngram_range": (2, 1)},
        {"max_features": 0},
    ],
)
def test_invalid_settings(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        TfidfSvdEncoder(**bad)  # type: ignore[arg-type]


def test_protocols_and_factory() -> None:
    encoder = make_encoder("tfidf", dim=16, seed=1)
    assert isinstance(encoder, TfidfSvdEncoder) and encoder.dim == 16
    assert isinstance(encoder, Encoder)
    assert isinstance(encoder, StatefulEncoder) and isinstance(encoder, FittableEncoder)
    with pytest.raises(ConfigError, match="bogus"):
        make_encoder("tfidf", bogus=1)


def test_the_vocabulary_is_capped_by_default() -> None:
    from metarec.encoders.tfidf import MAX_FEATURES

    # unbounded, a catalogue's ids and SKUs grew the vocabulary (and the run) with it
    encoder = TfidfSvdEncoder(dim=4)
    assert encoder.to_config()["max_features"] == MAX_FEATURES == 2**18
    capped = _fitted(dim=4, max_features=5)
    assert len(capped.to_config()["vocabulary"]) == 5
