"""The two predicates every argument and JSON-field check asks (metarec.values)."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from metarec.encoders.tfidf import TfidfSvdEncoder
from metarec.errors import ConfigError
from metarec.service.server import check_workers
from metarec.values import is_number, is_whole

WHOLE = [0, -3, 7, np.int64(5), np.uint8(2)]
NOT_WHOLE = [True, False, np.bool_(True), 2.0, np.float64(2.0), "2", None, [2], 2 + 0j]
NUMBERS = [0, 1.5, -2, np.float32(0.5), np.int32(4), float("nan"), float("inf")]
NOT_NUMBERS = [True, np.bool_(False), "1.5", None, 1j, np.complex128(1), Fraction(1, 2), [1.0]]


@pytest.mark.parametrize("value", WHOLE)
def test_whole_numbers_are_whole(value: object) -> None:
    assert is_whole(value)
    assert is_number(value)  # every whole number is a number


@pytest.mark.parametrize("value", NOT_WHOLE)
def test_booleans_floats_and_text_are_not_whole(value: object) -> None:
    assert not is_whole(value)


@pytest.mark.parametrize("value", NUMBERS)
def test_numbers_are_numbers(value: object) -> None:
    assert is_number(value)


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_booleans_text_and_complex_are_not_numbers(value: object) -> None:
    assert not is_number(value)


def test_numpy_integers_are_taken_and_stored_as_int() -> None:
    # a setting from np.arange is a whole number; stored as numpy's it would not
    # survive json.dumps when the encoder's config is saved
    enc = TfidfSvdEncoder(dim=np.int64(8), seed=np.int64(3), max_features=np.int32(50))
    settings = {"dim": enc.dim, "seed": enc.seed, "max_features": enc.max_features}
    assert json.loads(json.dumps(settings)) == {"dim": 8, "seed": 3, "max_features": 50}
    assert type(check_workers(np.int64(2))) is int


def test_a_boolean_is_still_refused_where_a_count_is_expected() -> None:
    with pytest.raises(ConfigError, match="dim must be a positive integer, got True"):
        TfidfSvdEncoder(dim=True)
    with pytest.raises(ConfigError, match=r"--workers: 2\.0"):
        check_workers(2.0)


def test_off_scale_compares_as_ratings_are_held() -> None:
    import warnings

    from metarec.values import float32_decimal, off_scale

    # a float32 0.3 is 0.30000001: on a 0-0.3 scale, not above it
    assert not off_scale(np.float32(0.3), 0.0, 0.3)
    assert off_scale([0.31, -0.01, float("nan")], 0.0, 0.3).tolist() == [True, True, False]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning for a value float32 cannot hold
        assert off_scale(1e300, 1.0, 5.0)
    assert float32_decimal(np.float32(0.7)) == 0.7
