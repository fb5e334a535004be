"""Significance tests and confidence intervals against values worked out by hand."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy.stats import norm

from metarec.errors import ConfigError, InputError
from metarec.evaluation.stats import (
    bootstrap_ci,
    compare_to_peers,
    holm,
    paired_bootstrap_ci,
    paired_wilcoxon,
)


def test_wilcoxon_exact_small_sample_by_hand() -> None:
    # differences 1, -2, 3, 4, 5 → |d| ranks 1..5; W+ = 1+3+4+5 = 13, W- = 2 → statistic 2.
    # Exact null: of the 2^5 = 32 sign patterns, W- <= 2 for {}, {1}, {2} → 3/32;
    # two-sided p = 2 · 3/32 = 0.1875.
    res = paired_wilcoxon([1, -2, 3, 4, 5], [0, 0, 0, 0, 0])
    assert res.statistic == pytest.approx(2.0)
    assert res.pvalue == pytest.approx(0.1875)
    assert res.n == 5


def test_wilcoxon_drops_nan_pairs_and_all_zero_means_p_one() -> None:
    a = [1, -2, 3, 4, 5, np.nan, 7]
    b = [0, 0, 0, 0, 0, 1, np.nan]
    assert paired_wilcoxon(a, b).pvalue == pytest.approx(0.1875)
    assert paired_wilcoxon(a, b).n == 5
    same = paired_wilcoxon([0.5, 0.7, np.nan], [0.5, 0.7, 0.1])
    assert same.pvalue == 1.0 and same.n == 2
    assert math.isnan(paired_wilcoxon([np.nan], [1.0]).pvalue)


def test_wilcoxon_users_on_whom_models_agree_leave_the_exact_test_exact() -> None:
    # five users better by 0.01..0.05: all 2^5 sign patterns, W- = 0 for one of them,
    # so the exact two-sided p is 2/32 = 0.0625, however many users the models tie on.
    # With 55 ties scipy chose the normal approximation by the count before dropping
    # them (p = 0.043), and the report marked a win that five users cannot show
    better = [0.71, 0.72, 0.73, 0.74, 0.75]
    for ties in (0, 9, 55):
        res = paired_wilcoxon(better + [0.8] * ties, [0.7] * 5 + [0.8] * ties)
        assert res.pvalue == pytest.approx(0.0625) and res.n == 5 + ties
    tied = compare_to_peers(
        {"m": better + [0.8] * 55, "peer": [0.7] * 5 + [0.8] * 55}, "m", ["peer"], False
    )
    assert not tied["peer"]["significant"]


def test_wilcoxon_differences_of_rounding_are_ties() -> None:
    # equal values summed in another order differ by 4e-16 with a consistent sign: read
    # as 1,000 real differences, p was 2e-50 and the report marked a significant loss
    x = np.random.default_rng(0).uniform(0.2, 1.5, 1000)
    twin = 0.7 * x + 0.3 * x
    assert np.any(twin != x)
    assert paired_wilcoxon(twin, x).pvalue == 1.0
    assert paired_wilcoxon(x + 1e-9, x).pvalue < 1e-100  # a real shift, however small


def test_wilcoxon_differences_equal_but_for_rounding_share_a_rank() -> None:
    # 0.6 - 0.4 and 0.6 - 0.8 are 0.19999999999999996 and -0.20000000000000007: ranked
    # apart, 10 users better by 0.2 and 10 worse gave p = 0.05 where there is no evidence
    a = np.full(20, 0.6)
    b = np.array([0.4] * 10 + [0.8] * 10)
    assert len(set(np.abs(a - b))) == 2  # what the test sees before it snaps them
    got = paired_wilcoxon(a, b)
    assert (got.statistic, got.pvalue) == (105.0, 1.0)  # W+ = W- = 105: no side wins
    # with more users the wrong p only shrank (200 of them: 3e-10)
    assert paired_wilcoxon(np.full(200, 0.6), np.repeat([0.4, 0.8], 100)).pvalue == 1.0
    # each difference tied on its own pair's scale: one grid for all pairs, sized by the
    # largest value, made these five real differences of 1e-9 zeros again (p = 1)
    small = paired_wilcoxon([1e4] + [0.5] * 5, [1e4 - 1] + [0.5 - 1e-9] * 5)
    assert small.pvalue == pytest.approx(0.03125)  # six of six positive: exact 2 / 2**6
    # and a tie that fell on a half-step of the grid was split by its rounding
    x = 1 / 8192
    split = paired_wilcoxon([x, -x * (1 + 2**-52), x, -x], [0.0] * 4)
    assert split.statistic == 5.0 and split.pvalue == 1.0


def test_wilcoxon_of_differences_of_one_size_is_exact_past_thirteen() -> None:
    # a hit@k: 12 users better by 1, 4 worse by 1. Given the tied ranks, W+ counts the
    # positive signs, so the test is the sign test: p = 2 P(Bin(16, 1/2) <= 4)
    # = 2 (1 + 16 + 120 + 560 + 1820) / 2^16 = 0.0768. The normal approximation scipy
    # used past 13 ties said z = (102 - 68) / 17 = 2, p = 0.0455: a win it cannot show
    got = paired_wilcoxon([1.0] * 12 + [0.0] * 4, [0.0] * 12 + [1.0] * 4)
    assert got.pvalue == pytest.approx(2 * 2517 / 2**16)
    assert got.statistic == 4 * 8.5  # W- over the midrank 8.5 of sixteen ties
    # and two sizes of tie, by hand: |d| = 1, 1, 2, 2 have midranks 1.5, 1.5, 3.5, 3.5;
    # signs +, +, +, -: W- = 3.5, and of the 16 sign patterns W- <= 3.5 for {}, {a},
    # {b}, {a, b}, {c}, {d}: 6/16, two-sided 0.75
    two = paired_wilcoxon([1, 1, 2, -2], [0, 0, 0, 0])
    assert (two.statistic, two.pvalue) == (3.5, pytest.approx(0.75))


def test_wilcoxon_detects_a_consistent_shift() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=200)
    assert paired_wilcoxon(base + 0.3 + rng.normal(0, 0.1, 200), base).pvalue < 1e-6


def test_holm_by_hand() -> None:
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max so far 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    # capped at 1: 0.5·2 = 1.0, then max(1.0, 0.6·1) = 1.0
    np.testing.assert_allclose(holm([0.6, 0.5]), [1.0, 1.0])
    # NaN is not a hypothesis: m = 2 here
    out = holm([0.01, np.nan, 0.04])
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm([]).shape == (0,)


def test_bootstrap_ci_is_seeded_and_sized_like_the_standard_error() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 1.0, size=400)
    lo, hi = bootstrap_ci(x, seed=3)
    assert (lo, hi) == bootstrap_ci(x, seed=3)
    assert (lo, hi) != bootstrap_ci(x, seed=4)
    assert lo < x.mean() < hi
    # normal theory: width ≈ 2 · 1.96 · sd / sqrt(n)
    expected = 2 * 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert hi - lo == pytest.approx(expected, rel=0.15)
    lo90, hi90 = bootstrap_ci(x, seed=3, level=0.90)
    assert lo < lo90 < hi90 < hi


def test_bootstrap_ci_edge_cases() -> None:
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert bootstrap_ci([1.0, np.nan, 1.0]) == (1.0, 1.0)  # NaN dropped
    assert all(math.isnan(v) for v in bootstrap_ci([np.nan]))
    assert all(math.isnan(v) for v in bootstrap_ci([0.7, np.nan]))  # one user: no spread seen
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0], level=1.5)
    # a table's cells were pooled as if each were a user, and one number was taken
    for table in ([[1.0, 2.0], [3.0, 4.0]], 2.0):
        with pytest.raises(InputError, match=r"values must be a 1-d list, one a user"):
            bootstrap_ci(table)  # type: ignore[arg-type]
        # the paired tests too: a mask flattened the tables before any check saw them
        for paired in (paired_bootstrap_ci, paired_wilcoxon):
            with pytest.raises(InputError, match=r"paired values must be 1-d lists"):
                paired(table, table)  # type: ignore[arg-type]


def test_bootstrap_ci_at_a_level_is_the_central_interval_of_that_level() -> None:
    # both tails cut at (1 - level)/2: cut at 1 - level, the 95 % interval would be a 90 %
    # one, which the rel=0.15 width check above lets pass
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 1.0, size=400)
    # resampling the sample itself: the mean's spread is the plug-in sd (ddof=0) / sqrt(n)
    se = x.std(ddof=0) / math.sqrt(len(x))
    for level in (0.95, 0.80):
        lo, hi = bootstrap_ci(x, seed=3, n_boot=20000, level=level)
        # normal theory: width = 2 · z_{(1 + level)/2} · se (1.96 at 95 %, 1.28 at 80 %)
        z = norm.ppf(0.5 + level / 2)
        assert hi - lo == pytest.approx(2 * z * se, rel=0.05), level


def test_bootstrap_ci_resamples_every_value() -> None:
    # drawn from all but the last value, [0, 1] would resample only 0s: a CI of (0, 0).
    # By hand: two draws are both 0 with chance 1/4, both 1 with 1/4, so the 2.5 % and
    # 97.5 % quantiles of the resampled means are 0 and 1
    assert bootstrap_ci([0.0, 1.0], seed=0) == (0.0, 1.0)


def test_paired_bootstrap_is_the_bootstrap_of_differences() -> None:
    a = np.array([1.0, 2.0, 4.0, np.nan, 3.0])
    b = np.array([0.5, 2.5, 3.0, 1.0, 1.0])
    assert paired_bootstrap_ci(a, b, seed=5) == bootstrap_ci([0.5, -0.5, 1.0, 2.0], seed=5)


def test_compare_to_peers() -> None:
    rng = np.random.default_rng(0)
    peer = rng.uniform(0.6, 1.0, size=300)
    model = peer - 0.05 + rng.normal(0, 0.02, size=300)  # lower MAE for nearly every user
    per_user = {"metarec": model, "bias": peer, "twin": model.copy(), "strong": model - 0.1}
    rows = compare_to_peers(per_user, "metarec", ["bias", "twin", "strong"], lower_is_better=True)
    bias, twin, strong = rows["bias"], rows["twin"], rows["strong"]
    assert bias["mean_diff"] == pytest.approx(float(np.mean(model - peer)))
    assert bias["ci"][0] < bias["mean_diff"] < bias["ci"][1] < 0
    assert bias["significant"] and bias["better"]
    assert twin["p"] == 1.0 and not twin["significant"] and not twin["better"]
    # a peer with lower MAE everywhere: significant, and metarec is not better
    assert strong["mean_diff"] == pytest.approx(0.1) and strong["significant"]
    assert not strong["better"]
    # Holm over the three peers: the smallest p is multiplied by 3
    smallest = min(r["p"] for r in rows.values())
    assert min(r["p_holm"] for r in rows.values()) == pytest.approx(min(1.0, 3 * smallest))
    # higher-is-better flips the direction of "better", not the test
    flipped = compare_to_peers(per_user, "metarec", ["bias"], lower_is_better=False)
    assert not flipped["bias"]["better"] and flipped["bias"]["p"] == bias["p"]
    # the bootstrap draws from the seed given: the same seed, the same interval; another
    # seed, another (seed=0 was used whatever was asked)
    again = compare_to_peers(per_user, "metarec", ["bias"], True)["bias"]["ci"]
    other = compare_to_peers(per_user, "metarec", ["bias"], True, seed=1)["bias"]["ci"]
    assert again == bias["ci"] and other != bias["ci"]
    strict = compare_to_peers(per_user, "metarec", ["bias"], True, alpha=np.float64(1e-300))
    assert not strict["bias"]["significant"] and strict["bias"]["p"] == bias["p"]
    with pytest.raises(InputError, match=r"no per-user values for \['nope'\]"):
        compare_to_peers(per_user, "metarec", ["nope"], lower_is_better=True)
    with pytest.raises(InputError, match="peers must be a list of names, got 'bias'"):
        compare_to_peers(per_user, "metarec", "bias", lower_is_better=True)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="lower_is_better must be True or False"):
        compare_to_peers(per_user, "metarec", ["bias"], lower_is_better="no")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="per_user must map model names"):
        compare_to_peers([model], "metarec", ["bias"], lower_is_better=True)  # type: ignore[arg-type]


def test_a_reference_picked_from_several_is_judged_by_p_times_their_number() -> None:
    # p-values by hand: differences +1..+8 all one way give the exact two-sided
    # Wilcoxon p = 2 / 2^8 = 0.0078125; Holm over one peer leaves it
    ref = np.arange(1.0, 9.0)
    per_user = {"ref": ref, "peer": np.zeros(8)}
    alone = compare_to_peers(per_user, "ref", ["peer"], lower_is_better=False)["peer"]
    assert alone["p_holm"] == pytest.approx(0.0078125)
    assert alone["p_choice"] == alone["p_holm"] and alone["significant"]
    # the best of 6 on the same users: 6 x 0.0078 = 0.047, still a win; of 7, 0.055 is not
    six = compare_to_peers(per_user, "ref", ["peer"], False, chosen_from=6)["peer"]
    assert six["p_choice"] == pytest.approx(0.046875) and six["significant"]
    seven = compare_to_peers(per_user, "ref", ["peer"], False, chosen_from=7)["peer"]
    assert seven["p_choice"] == pytest.approx(0.0546875) and not seven["significant"]
    assert seven["p_holm"] == alone["p_holm"]  # the printed p is Holm's, untouched
    capped = compare_to_peers(per_user, "ref", ["peer"], False, chosen_from=1000)["peer"]
    assert capped["p_choice"] == 1.0
    for bad in (0, 2.5, "3", True):
        with pytest.raises(InputError, match="chosen_from must be a whole number >= 1"):
            compare_to_peers(per_user, "ref", ["peer"], False, chosen_from=bad)  # type: ignore[arg-type]


def test_holm_refuses_what_is_not_a_p_value() -> None:
    # once returned -0.2 for a p of -0.1
    with pytest.raises(ValueError, match=r"p-values must lie in \[0, 1\], got -0.1"):
        holm([-0.1, 0.1])


PER_USER = {"m": [0.5, 0.6, 0.7, 0.8] * 5, "p": [0.5, 0.6, 0.7, 0.81] * 5, "q": [0.4] * 20}


@pytest.mark.parametrize(
    "call, error, needle",
    [
        # plain ValueErrors before: the same message, now an InputError (still a ValueError)
        (lambda: paired_wilcoxon([1, 2], [1, 2, 3]), InputError,
         r"paired_wilcoxon: paired values need equal shapes, got \(2,\) and \(3,\)"),
        (lambda: holm([2.0]), InputError, r"holm: p-values must lie in \[0, 1\], got 2"),
        # raw numpy errors before, naming neither the function nor the argument
        (lambda: holm("ab"), InputError, "holm: pvalues: expected numbers, got 'ab'"),
        (lambda: holm("0.5"), InputError, "holm: pvalues: expected numbers, got '0.5'"),
        (lambda: holm([[0.1, 0.2]]), InputError, "holm: pvalues must be a 1-d list"),
        (lambda: paired_wilcoxon(["a"], [1]), InputError,
         "paired_wilcoxon: a: expected numbers"),
        (lambda: paired_bootstrap_ci([1], ["x"]), InputError,
         "paired_bootstrap_ci: b: expected numbers"),
        (lambda: bootstrap_ci([1, "x"]), InputError, "bootstrap_ci: values: expected numbers"),
        *[(lambda s=s: bootstrap_ci([1, 2], seed=s), ConfigError,
           "bootstrap_ci: seed: must be a whole number >= 0")
          for s in ("x", -1, 1.5)],
        (lambda: bootstrap_ci([1, 2], n_boot=1.5), InputError,
         r"bootstrap_ci: n_boot must be a whole number in \[1, 10,000,000\], got 1\.5"),
        (lambda: bootstrap_ci([1, 2], n_boot=2**62), InputError,  # numpy's "array is too big"
         r"n_boot must be a whole number in \[1, 10,000,000\], got 4611686018427387904"),
        (lambda: bootstrap_ci([1, 2], level="x"), InputError,
         r"bootstrap_ci: level must be a number in \(0, 1\), got 'x'"),
        (lambda: bootstrap_ci([1, 2], level=math.nan), InputError,
         r"bootstrap_ci: level must be in \(0, 1\), got nan"),
        # alpha 0 or NaN made nothing significant, 5 near-identical values significant,
        # "x" a raw UFuncTypeError
        *[(lambda a=a: compare_to_peers(PER_USER, "m", ["p"], True, alpha=a), InputError,
           rf"compare_to_peers: alpha must be in \(0, 1\), got {a}")
          for a in (0, math.nan, 5, 1.0)],
        *[(lambda a=a: compare_to_peers(PER_USER, "m", ["p"], True, alpha=a), InputError,
           r"compare_to_peers: alpha must be a number in \(0, 1\), got ")
          for a in ("x", None, True)],
        # one row per name: Holm counted one comparison of the two asked for
        (lambda: compare_to_peers(PER_USER, "m", ["p", "q", "p"], True), InputError,
         r"compare_to_peers: peers name \['p'\] more than once"),
        (lambda: compare_to_peers(PER_USER, "m", [["p"]], True), InputError,
         r"compare_to_peers: peers must be a list of names, got \[\['p'\]\]"),
        # "unhashable type: 'list'" before
        (lambda: compare_to_peers(PER_USER, ["m"], ["p"], True), InputError,
         r"compare_to_peers: model must be a model name, got \['m'\]"),
    ],
)  # fmt: skip
def test_statistics_name_what_they_cannot_take(
    call: Callable[[], object], error: type[Exception], needle: str
) -> None:
    with pytest.raises(error, match=needle):
        call()


def test_picking_the_best_of_several_inflates_wins_and_chosen_from_restores_the_rate() -> None:
    """The reason for ``chosen_from``: with no true difference, testing the best of six
    candidates as if it had been named in advance marks a significant win several times
    as often as the nominal 2.5 % (one side of a two-sided 5 %)."""
    rng = np.random.default_rng(7)
    runs, users, candidates = 300, 60, 6
    naive = corrected = 0
    for _ in range(runs):
        peer = rng.normal(size=users)
        ours = peer + rng.normal(size=(candidates, users))  # no model truly better
        best = int(np.argmax(ours.mean(axis=1)))
        per_user = {"best": ours[best], "peer": peer}
        for chosen_from in (1, candidates):
            row = compare_to_peers(per_user, "best", ["peer"], False, chosen_from=chosen_from)
            win = row["peer"]["significant"] and row["peer"]["better"]
            naive += win and chosen_from == 1
            corrected += win and chosen_from == candidates
    assert naive / runs > 0.1  # several times 0.025
    assert corrected / runs <= 0.04


def test_the_choice_correction_takes_only_what_it_can_use() -> None:
    from metarec.evaluation.stats import choice_p

    assert choice_p(0.02, 3) == pytest.approx(0.06) and choice_p(0.5, 3) == 1.0
    assert math.isnan(choice_p(float("nan"), 2))
    # 0 candidates made every p 0 ("significant"), -3 a negative p
    for p, n in ((0.5, 0), (0.5, -3), (0.5, 1.5), (1.2, 2), (-0.1, 2), ("0.5", 2)):
        with pytest.raises(InputError, match="choice_p"):
            choice_p(p, n)  # type: ignore[arg-type]
