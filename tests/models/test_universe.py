"""The item universe of the dense item-by-item models: which items, the restricted data,
support sets mapped into it, and how the rest of the catalogue is ranked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metarec.catalogue import Catalogue
from metarec.errors import ConfigError, ModelError
from metarec.models.base import TrainingData
from metarec.models.universe import Universe, check_max_items

from .conftest import support_task


def _data() -> TrainingData:
    """Six items; rating counts 3, 1, 3, 0, 2, 1 (items 0 and 2 tie, item 3 unrated)."""
    rows = [
        ("a", "i0", 5.0, 1), ("a", "i2", 4.0, 2), ("a", "i4", 2.0, 3),
        ("b", "i0", 4.0, 1), ("b", "i1", 5.0, 2), ("b", "i2", 1.0, 3),
        ("c", "i0", 2.0, 1), ("c", "i2", 5.0, 2), ("c", "i4", 4.0, 3), ("c", "i5", 5.0, 4),
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(6)], "title": "t"})
    vectors = np.arange(12, dtype=np.float32).reshape(6, 2)
    validation = frame[frame["user_id"] == "c"].assign(user_id="v")
    cat = Catalogue(items, vectors, encoder=None)  # type: ignore[arg-type]
    return TrainingData(frame, cat, None, validation, (1.0, 5.0), 0)


def test_most_rated_items_with_ties_by_index_and_like_rates_of_all() -> None:
    data = _data()
    u = Universe.most_rated(data, 3, like_threshold=4.0)
    np.testing.assert_array_equal(u.items, [0, 2, 4])  # 3, 3, 2 ratings; 1 and 5 have 1
    # likes (>= 4) per item over 3 users: i0 2, i1 1, i2 2, i3 0, i4 1, i5 1
    np.testing.assert_allclose(u.like_rate, np.array([2, 1, 2, 0, 1, 1]) / 3)
    np.testing.assert_array_equal(u.position, [0, -1, 1, -1, 2, -1])
    assert not u.is_whole and u.n_catalogue == 6
    # a tie at the cut goes to the lower index: items 1 and 5 both have one rating
    np.testing.assert_array_equal(Universe.most_rated(data, 4, 4.0).items, [0, 1, 2, 4])
    for whole in (None, 6, 100):
        assert Universe.most_rated(data, whole, 4.0).is_whole


def test_restricted_data_keeps_order_vectors_and_only_universe_ratings() -> None:
    data = _data()
    sub = Universe.most_rated(data, 3, 4.0).restrict(data)
    assert sub.catalogue.items["item_id"].tolist() == ["i0", "i2", "i4"]
    np.testing.assert_array_equal(sub.catalogue.vectors, data.catalogue.vectors[[0, 2, 4]])
    assert set(sub.interactions["item_id"]) == {"i0", "i2", "i4"}
    assert len(sub.interactions) == 8  # 10 ratings less i1's and i5's
    assert sub.validation is not None and set(sub.validation["item_id"]) == {"i0", "i2", "i4"}
    assert sub.rating_range == data.rating_range and sub.seed == data.seed
    np.testing.assert_array_equal(sub.ratings.items, [0, 1, 2, 0, 1, 0, 1, 2])
    assert Universe.whole(6).restrict(data) is data


def test_support_sets_are_mapped_and_outside_items_dropped_with_their_ratings() -> None:
    u = Universe(np.array([0, 2, 4]), np.zeros(6))
    # 1 and 5 are outside; 7 was added after training (beyond the catalogue at fit)
    (t,) = u.tasks([support_task([4, 1, 0, 7, 5, 2], [1.0, 2.0, 3.0, 4.0, 5.0, 1.5])])
    np.testing.assert_array_equal(t.support_items, [2, 0, 1])
    np.testing.assert_array_equal(t.support_ratings, [1.0, 3.0, 1.5])
    assert len(t.query_items) == 0


def test_outside_items_rank_below_the_universe_in_like_rate_order() -> None:
    u = Universe(np.array([1, 3]), np.array([0.9, 0.2, 0.0, 0.1, 0.4]))
    scores = np.array([[2.0, -1.0], [0.5, 0.5]])
    out = u.expand(scores, np.array([1.0, 0.1]))
    np.testing.assert_array_equal(out[:, [1, 3]], scores)
    # lowest - gap + gap / 2 * rate / 0.9 (the largest outside rate)
    np.testing.assert_allclose(out[0, [0, 2, 4]], [-1.5, -2.0, -2.0 + 0.5 * 0.4 / 0.9])
    np.testing.assert_allclose(out[1, [0, 2, 4]], [0.45, 0.4, 0.4 + 0.05 * 0.4 / 0.9])
    assert (out[:, [0, 2, 4]].max(axis=1) < out[:, [1, 3]].min(axis=1)).all()
    with pytest.raises(ModelError, match="universe of 2 items, but scores for 3"):
        u.expand(np.zeros((1, 3)), 1.0)
    np.testing.assert_array_equal(Universe.whole(2).expand(scores, 1.0), scores)


def test_a_grown_catalogue_puts_added_items_last_and_states_round_trip() -> None:
    u = Universe(np.array([0, 2]), np.array([0.5, 0.3, 0.1])).grown(2)
    assert u.n_catalogue == 5
    out = u.expand(np.array([[1.0, 3.0]]), 1.0)
    assert out[0, 3] == out[0, 4] == 0.0 < out[0, 1]  # rate 0: lowest - gap
    back = Universe.from_arrays(u.arrays(), 2, 5, "m")
    np.testing.assert_array_equal(back.items, u.items)
    np.testing.assert_array_equal(back.like_rate, u.like_rate)
    # a state saved before universes: the first n_known items of the catalogue
    old = Universe.from_arrays({}, 3, 5, "m")
    np.testing.assert_array_equal(old.items, [0, 1, 2])
    assert old.n_catalogue == 5
    with pytest.raises(ModelError, match=r"m: universe\.items has 2 items, not 3"):
        Universe.from_arrays(u.arrays(), 3, 5, "m")
    with pytest.raises(ModelError, match=r"like_rate has shape \(5,\), not \(6,\)"):
        Universe.from_arrays(u.arrays(), 2, 6, "m")
    bad = {**u.arrays(), "universe.items": np.array([2, 0])}
    with pytest.raises(ModelError, match="ascending catalogue indices below 5"):
        Universe.from_arrays(bad, 2, 5, "m")


@pytest.mark.parametrize("bad", [0, -3, 2.5, 7.0, True, "10", float("nan")])
def test_max_items_must_be_a_positive_whole_number(bad: object) -> None:
    # NaN and "10" were int()'s bare ValueError; a float is no count, as elsewhere
    with pytest.raises(ConfigError, match="m: max_items: must be a whole number >= 1"):
        check_max_items("m", bad)  # type: ignore[arg-type]
    assert check_max_items("m", None) is None and check_max_items("m", 7) == 7
