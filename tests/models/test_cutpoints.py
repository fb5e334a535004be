"""Median-rating cutpoints: hand-computed cuts, exact optimality, persistence, validation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from metarec.errors import ModelError
from metarec.models.cutpoints import RatingCutpoints, rating_levels


def test_hand_computed_cuts_fall_midway_between_classes() -> None:
    scores = np.array([0.1, 0.2, 0.5, 0.8, 0.9])
    ratings = np.array([1, 1, 2, 3, 3])
    cuts = RatingCutpoints.fit(scores, ratings, levels=[1, 2, 3], method="exact")
    assert cuts.levels == (1.0, 2.0, 3.0)
    assert cuts.cuts == pytest.approx((0.35, 0.65))
    np.testing.assert_array_equal(cuts.apply(scores), ratings)
    # a score exactly on a cut is not above it
    assert cuts.apply(np.array(0.35)) == 1.0 and cuts.apply(np.array(0.36)) == 2.0


def test_median_beats_the_mean_on_a_skewed_scale() -> None:
    # every score 4.15 (the mean of 45 % 4s, 35 % 5s, 20 % 3s): the median 4 is better
    ratings = np.array([4] * 45 + [5] * 35 + [3] * 20, dtype=float)
    scores = np.full(len(ratings), ratings.mean())
    cuts = RatingCutpoints.fit(scores, ratings, levels=[1, 2, 3, 4, 5])
    assert np.unique(cuts.apply(scores)).tolist() == [4.0]
    assert np.abs(cuts.apply(scores) - ratings).mean() == pytest.approx(0.55)
    assert np.abs(scores - ratings).mean() == pytest.approx(0.595)


def test_fit_is_the_exact_mae_minimiser_over_monotone_cuts() -> None:
    rng = np.random.default_rng(0)
    latent = rng.normal(size=60)
    ratings = np.clip(np.round(2 + latent + rng.normal(scale=0.8, size=60)), 1, 3)
    scores = np.round(latent, 1)  # ties on purpose
    fitted = RatingCutpoints.fit(scores, ratings, levels=[1, 2, 3], method="exact")
    best = np.abs(fitted.apply(scores) - ratings).mean()
    grid = np.unique(np.concatenate([scores - 0.05, scores + 0.05]))
    brute = min(
        np.abs(RatingCutpoints((1.0, 2.0, 3.0), (a, b)).apply(scores) - ratings).mean()
        for a, b in itertools.combinations_with_replacement(grid, 2)
    )
    assert best == pytest.approx(brute)


def test_logistic_cuts_recover_a_known_ordinal_model() -> None:
    # P(rating > j | s) = sigmoid(4 (s - c_j)) with c = (1.5, 2.5, 3.5, 4.5): the
    # median of that model switches level exactly at each c_j
    rng = np.random.default_rng(1)
    s = rng.uniform(0.5, 5.5, size=40_000)
    true_cuts = np.array([1.5, 2.5, 3.5, 4.5])
    u = rng.uniform(size=(len(s), 1))
    # one uniform per rating against decreasing probabilities: nested events, so this
    # is a draw from the cumulative-link model (the rating is 1 + the cuts it is above)
    above = u < 1 / (1 + np.exp(-4 * (s[:, None] - true_cuts)))
    ratings = 1 + above.sum(axis=1)
    cuts = RatingCutpoints.fit(s, ratings, levels=[1, 2, 3, 4, 5])
    np.testing.assert_allclose(cuts.cuts, true_cuts, atol=0.05)


def test_logistic_cuts_are_stable_where_exact_cuts_overfit() -> None:
    # few, noisy ratings: the exact 0/1 optimum swings with the sample, the logistic
    # cut stays near the population one (2.5 here) on every draw
    rng = np.random.default_rng(2)
    spread = {"exact": [], "logistic": []}
    for _ in range(30):
        s = rng.uniform(1, 5, size=60)
        ratings = np.where(rng.uniform(size=60) < 1 / (1 + np.exp(-(s - 2.5))), 2, 1)
        for method in spread:
            spread[method].append(RatingCutpoints.fit(s, ratings, [1, 2], method).cuts[0])
    assert np.std(spread["logistic"]) < np.std(spread["exact"])
    assert abs(np.mean(spread["logistic"]) - 2.5) < 0.15


def test_half_star_scale_and_shapes() -> None:
    cuts = RatingCutpoints((0.5, 1.0, 1.5), (0.0, 1.0))
    out = cuts.apply(np.array([[-1.0, 0.5], [1.5, 0.0]]))
    assert out.shape == (2, 2)
    np.testing.assert_array_equal(out, [[0.5, 1.0], [1.5, 0.5]])


def test_one_sided_class_puts_the_cut_outside_the_scores() -> None:
    cuts = RatingCutpoints.fit(np.array([1.0, 2.0, 3.0]), np.array([2, 2, 3]), levels=[1, 2, 3])
    assert cuts.cuts[0] < 1.0  # nobody rated 1: every score is above the first cut
    np.testing.assert_array_equal(cuts.apply(np.array([1.0, 2.0, 3.0])), [2, 2, 3])


def test_beyond_the_validation_scores_a_score_rounds_to_its_level() -> None:
    # a 1-10 scale whose validation users rated 1-7 only, scores up to 6: the cuts
    # above 7 have no data; a score of 7.0 once read as a 10
    rng = np.random.default_rng(0)
    y = rng.integers(1, 8, size=400).astype(float)
    s = np.clip(y - 1 + rng.normal(0, 0.5, size=400), 0, 6)
    cuts = RatingCutpoints.fit(s, y, levels=range(1, 11))
    np.testing.assert_array_equal(cuts.apply(np.array([7.0, 8.2, 9.6, 12.0])), [7, 8, 10, 10])
    assert cuts.cuts[-3:] == (7.5, 8.5, 9.5)
    # 0/1 clicks whose validation scores all stay under 0.53: the data's edge, not a
    # cut past the scale, so a score of 0.85 reads as a 1
    y01 = (rng.random(400) < 0.2).astype(float)
    s01 = rng.uniform(0.0, 0.53, size=400)
    assert RatingCutpoints.fit(s01, y01).apply(np.array([0.2, 0.85])).tolist() == [0, 1]


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ModelError, match="method 'median'"):
        RatingCutpoints.fit(np.arange(3.0), np.array([1, 2, 3]), method="median")  # type: ignore[arg-type]


def test_round_trip_and_bad_dicts() -> None:
    cuts = RatingCutpoints.fit(np.arange(10.0), np.repeat([1, 2, 3, 4, 5], 2))
    assert RatingCutpoints.from_dict(cuts.to_dict()) == cuts
    for raw, needle in [
        ({"levels": [1, 2, 3]}, "rating_cutpoints must be"),
        ({"levels": [1, 2, 3], "cuts": [2.0, 1.0]}, "non-decreasing"),
        ({"levels": [1, 2, 3], "cuts": [1.0]}, "need 2"),
        ({"levels": [3, 2, 1], "cuts": [1.0, 2.0]}, "increase strictly"),
        ({"levels": [1, 2], "cuts": ["x"]}, "rating_cutpoints must be"),
    ]:
        with pytest.raises(ModelError, match=needle) as err:
            RatingCutpoints.from_dict(raw, source="run/recommender.json")
        assert "run/recommender.json" in str(err.value)


def test_levels_of_a_scale() -> None:
    assert rating_levels(np.array([1, 5, 3, 3, 4])) == (1.0, 3.0, 4.0, 5.0)
    assert rating_levels(np.linspace(0, 1, 50)) is None  # continuous: no levels
    assert rating_levels(np.array([4.0, 4.0])) is None
    # one stray half star among 6,640 whole ones is no level: it was the rating shown
    # for every top item of a whole-star catalogue
    whole = np.tile(np.arange(1.0, 6.0), 1328)
    assert rating_levels(np.append(whole, 4.5)) == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert rating_levels(np.append(whole, [4.5] * 10)) == (1.0, 2.0, 3.0, 4.0, 4.5, 5.0)
    # a click log's rare 1s stay a level: without them there is no scale
    assert rating_levels(np.append(np.zeros(5000), 1.0)) == (0.0, 1.0)
    # and a rare end stays one: dropped, retrain read a user's 1 star as a 2
    twos_up = np.append(np.tile(np.arange(2.0, 6.0), 2500), [1.0] * 10)
    assert rating_levels(twos_up) == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert rating_levels(np.array([])) is None


def test_a_decimal_scales_levels_are_the_values_the_data_wrote() -> None:
    # held in float32, 0.9 read back as 0.8999999762, and the levels' summed steps
    # gave 0.8000000119: a "scale level" no rating has
    ratings = (np.arange(1, 11) / 10).astype(np.float32)
    levels = rating_levels(ratings)
    assert levels == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    cuts = RatingCutpoints(levels, tuple(np.arange(9) + 0.5))
    assert cuts.apply(np.array([0.0, 7.2, 7.9, 100.0])).tolist() == [0.1, 0.8, 0.9, 1.0]
    # fitted on such ratings, a near-perfect predictor is read back level for level (a
    # float32 0.2 sat "above" the level 0.2, and every cut was fitted a level off)
    y = np.repeat(ratings, 50)
    scores = y + np.random.default_rng(0).normal(0, 0.01, len(y))
    fitted = RatingCutpoints.fit(scores, y, levels)
    assert np.abs(fitted.apply(scores) - y).max() < 1e-6
