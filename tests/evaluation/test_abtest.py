"""Protocol P4: the split, replay and interleaving statistics, checked by hand."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from metarec.data.schema import Dataset
from metarec.data.tasks import Task
from metarec.errors import ConfigError, DataError, InputError
from metarec.evaluation.ab_stats import (
    fisher_exact_p,
    lift_ci,
    two_proportion_test,
    users_per_arm,
    wilson_ci,
)
from metarec.evaluation.abtest import format_report, replay_hits, replay_report, run_abtest
from metarec.evaluation.interleaving import interleave_credits, interleave_report, team_draft
from metarec.evaluation.p1 import make_p1_split
from metarec.evaluation.p4_split import P4Split, make_p4_split, p4_tasks
from metarec.evaluation.users_spec import check_users_spec, users_from_spec
from metarec.io import jsonable, save_json
from metarec.models.base import ScoringModel, TrainingData


def _frame(counts: dict[str, int]) -> pd.DataFrame:
    """User u rates items 0..n-1; timestamps run backwards so time order ≠ row order."""
    rows = [
        (u, str(i), 5.0 if i % 2 == 0 else 2.0, 1000.0 - i)
        for u, n in counts.items()
        for i in range(n)
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def test_split_skips_short_histories_and_balances_arms(tmp_path: Path) -> None:
    inter = _frame({f"u{i:02d}": 3 + i for i in range(40)})  # 3..42 ratings
    split = make_p4_split(inter, [*inter["user_id"].unique(), "ghost"], support=5, seed=1)
    # users with 3, 4, 5 ratings have nothing after a support of 5
    assert split.skipped == {"not_in_data": 1, "too_few_ratings": 3}
    assert len(split.users) == 37 and "u00" not in split.users and "u03" in split.users
    assert sorted([split.arms.count("A"), split.arms.count("B")]) == [18, 19]
    again = make_p4_split(inter, list(reversed(split.users)), support=5, seed=1)
    assert again.arms == split.arms  # depends on the set and seed, not the order given
    other = make_p4_split(inter, split.users, support=5, seed=2)
    assert other.arms != split.arms
    split.save(tmp_path / "p4.json")
    loaded = P4Split.load(tmp_path / "p4.json")
    assert (loaded.users, loaded.arms, loaded.support, loaded.seed) == (
        split.users,
        split.arms,
        5,
        1,
    )
    with pytest.raises(ConfigError, match="-1"):
        make_p4_split(inter, split.users, support=-1)
    # refused by the interleaving's coins, at the end of a whole replay, naming neither
    # the file nor its field
    raw = json.loads((tmp_path / "p4.json").read_text())
    (tmp_path / "big.json").write_text(json.dumps(raw | {"seed": 2**64}))
    with pytest.raises(DataError, match=r"big\.json.*seed must be below 2\*\*64"):
        P4Split.load(tmp_path / "big.json")


def test_p4_tasks_use_time_order() -> None:
    inter = _frame({"a": 8})  # item i at time 1000 - i: item 7 is the earliest
    split = make_p4_split(inter, ["a"], support=3)
    index = {str(i): i for i in range(8)}
    (task,) = p4_tasks(inter, split, index)
    assert task.support_items.tolist() == [7, 6, 5]
    assert task.query_items.tolist() == [4, 3, 2, 1, 0]
    with pytest.raises(DataError, match="catalogue"):
        p4_tasks(inter, split, {str(i): i for i in range(5)})


def _tiny() -> Dataset:
    """50 users with 15 ratings each (P1's rule draws 13 to 100), 20 items."""
    rows = [(f"u{u}", str((u + i) % 20), float(1 + (u * i) % 5), float(i)) for u in range(50)
            for i in range(15)]  # fmt: skip
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"item_id": [str(i) for i in range(20)], "text": ["t"] * 20})
    return Dataset("tiny", inter, items)


def test_users_from_spec(tmp_path: Path) -> None:
    ds = _tiny()
    everyone = {f"u{i}" for i in range(50)}
    picked = users_from_spec("heldout:0.2", ds, seed=0)
    assert isinstance(picked, list) and len(picked) == 10 and set(picked) <= everyone
    assert picked == users_from_spec("heldout:0.2", ds, seed=0)
    for bad in ("heldout:0", "heldout:1.5", "heldout:x"):
        with pytest.raises(ConfigError, match="FRACTION"):
            users_from_spec(bad, ds)
    with pytest.raises(ConfigError, match="no such file"):
        users_from_spec(str(tmp_path / "missing.txt"), ds)
    ids = tmp_path / "ids.txt"
    ids.write_text("u1\n\n# a comment\nu7  # trailing\n")
    assert users_from_spec(str(ids), ds) == ["u1", "u7"]
    # as Notepad saves it: the byte-order mark was read into "u1", a user not in the data
    ids.write_text("u1\nu7\n", encoding="utf-8-sig")
    assert users_from_spec(str(ids), ds) == ["u1", "u7"]
    split = make_p1_split(ds, seed=0)
    split.save(tmp_path / "p1.json")
    assert users_from_spec(str(tmp_path / "p1.json"), ds) == split.new_users
    P4Split("x", 0, 2, ["u1"], ["B"]).save(tmp_path / "p4.json")
    assert isinstance(users_from_spec(str(tmp_path / "p4.json"), ds), P4Split)
    save_json(tmp_path / "other.json", {"protocol": "p2"})
    with pytest.raises(DataError, match="P1 split"):
        users_from_spec(str(tmp_path / "other.json"), ds)
    with pytest.raises(ConfigError, match="is a folder"):
        users_from_spec(str(tmp_path), ds)


def test_a_users_list_with_a_repeated_id_is_refused_naming_the_line(tmp_path: Path) -> None:
    # deduplicated without a word, 20 users listed twice were reported as 20 users
    ids = tmp_path / "ids.txt"
    ids.write_text("u1\nu2\n# u1 again below\n\nu3\n u1  # pasted twice\n")
    with pytest.raises(DataError) as err:
        users_from_spec(str(ids), _tiny())
    assert str(err.value) == (
        f"{ids}, line 6: user 'u1' is listed again (first on line 1); list each user once"
    )


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda r: r["new_users"].append("u99"), "1 of its new_users are not users of tiny"),
        (lambda r: r["new_users"].append(r["new_users"][0]), "more than once"),
        (lambda r: r.update(dataset="ml-1m"), "a split of 'ml-1m', not of 'tiny'"),
        # abtest's new users must not have trained the runs: a leak reads as a lift
        (lambda r: r["new_users"].append(r["train_users"][0]), "share 1 users"),
        (lambda r: r.pop("train_users"), "missing field 'train_users'"),
    ],
)
def test_a_p1_split_for_users_is_checked_as_every_p1_split_is(
    tmp_path: Path, edit: Any, needle: str
) -> None:
    ds = _tiny()
    make_p1_split(ds, seed=0).save(tmp_path / "p1.json")
    raw = json.loads((tmp_path / "p1.json").read_text())
    edit(raw)
    save_json(tmp_path / "p1.json", raw)
    with pytest.raises(DataError, match=needle) as err:
        users_from_spec(str(tmp_path / "p1.json"), ds)
    assert "p1.json" in str(err.value)


@pytest.mark.parametrize(
    "raw, needle",
    [
        # a string of ids is not its letters
        (
            {"protocol": "p1", "dataset": "tiny", "seed": 0, "new_items": ["1"],
             "train_users": ["u1"], "validation_users": [], "new_users": "12"},
            "new_users must be a list of ids, got str",
        ),
        (
            {"protocol": "p4", "users": "12", "arms": "AB", "seed": 0, "support": 1},
            "users must be a list of ids, got str",
        ),
        (
            {"protocol": "p4", "users": ["1", "2"], "arms": ["A", "B"], "seed": 2.9, "support": 1},
            "seed must be a whole number, got 2.9",
        ),
        (
            {"protocol": "p4", "users": ["1", "2"], "arms": ["A", "B"], "seed": 0, "support": "5"},
            "support must be a whole number, got '5'",
        ),
        # counted twice, perhaps once in each arm, a user narrows the CIs
        (
            {"protocol": "p4", "users": ["1", "2", "1"], "arms": ["A", "B", "B"], "seed": 0,
             "support": 1},
            "user '1' is listed 2 times; each user belongs to one arm once",
        ),
        ({"protocol": "p4", "users": [], "arms": [], "seed": 0, "support": 1}, "no users in it"),
        (
            {"protocol": "p4", "users": ["1", "2"], "arms": ["A", "B"], "seed": 0, "support": 1,
             "skipped": [1, 2]},
            "skipped must be an object of reason: count, got [1, 2]",
        ),
    ],
)  # fmt: skip
def test_a_users_file_that_does_not_hold_what_it_says_is_refused(
    raw: dict[str, Any], needle: str, tmp_path: Path
) -> None:
    path = tmp_path / "split.json"
    save_json(path, raw)
    with pytest.raises(DataError) as err:
        users_from_spec(str(path), _tiny())
    assert needle in str(err.value) and str(path) in str(err.value)


# -- replay statistics ------------------------------------------------------------
def test_replay_hits_by_hand() -> None:
    top = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    liked = [np.array([3, 2]), np.array([], dtype=np.int64), np.array([10])]
    success, rate = replay_hits(top, liked, 3)
    assert success.tolist() == [True, False, False]
    np.testing.assert_allclose(rate, [2 / 3, 0, 0])


def test_fisher_exact_p_by_hand() -> None:
    # 3/3 against 0/3: of the C(6, 3) = 20 tables with these margins, the observed one
    # and its mirror (0/3 against 3/3) are as extreme, each of probability 1/20
    assert fisher_exact_p(3, 3, 0, 3) == pytest.approx(2 / 20)
    # 1/2 against 1/2 is the most likely table: nothing is as unlikely, p = 1
    assert fisher_exact_p(1, 2, 1, 2) == pytest.approx(1.0)
    # where the z-test's normal approximation is poor (4.5 expected failures an arm),
    # the exact p is larger: 34/41 against 39/41 gives 0.077 by z and 0.155 exactly
    assert two_proportion_test(34, 41, 39, 41)[1] == pytest.approx(0.0773, abs=1e-4)
    assert fisher_exact_p(34, 41, 39, 41) == pytest.approx(0.1549, abs=1e-4)
    assert math.isnan(fisher_exact_p(0, 0, 3, 5))
    with pytest.raises(InputError, match="need 0 <= x_b <= n_b, got x_b=6"):
        fisher_exact_p(1, 5, 6, 5)
    report = replay_report(np.array([1, 1, 1, 0, 0, 0], bool), np.zeros(6), list("AAABBB"))
    assert report["p_exact"] == pytest.approx(0.1)
    head = {"dataset": "d", "users": 6, "support": 5, "k": 10, "seed": 0, "threshold": 4}
    text = format_report(head | {"replay": report}, {"A": "a", "B": "b"})
    assert "(two-proportion z-test, two-sided); Fisher's exact p = 0.1" in text
    # z = 40 (1,500 of 5,000 against 3,500): p underflows to 0.0, printed "p = 0"
    wide = np.r_[np.arange(5000) < 1500, np.arange(5000) < 3500]
    far = replay_report(wide, wide.astype(float), ["A"] * 5000 + ["B"] * 5000)
    assert far["p"] == 0.0
    text = format_report(head | {"users": 10_000, "replay": far}, {"A": "a", "B": "b"})
    assert "p < 1e-300 (two-proportion z-test" in text and "p = 0 " not in text


def test_proportion_statistics_by_hand() -> None:
    # 50/500 = 0.10 in A, 75/500 = 0.15 in B
    # pooled p̄ = 125/1000 = 0.125; se = sqrt(0.125·0.875·(2/500)) = 0.0209165
    # z = 0.05 / 0.0209165 = 2.39046; two-sided p = erfc(z/√2) = 0.016827
    z, p = two_proportion_test(50, 500, 75, 500)
    assert z == pytest.approx(2.39046, abs=1e-4)
    assert p == pytest.approx(math.erfc(2.3904572 / math.sqrt(2)), rel=1e-5)
    assert p == pytest.approx(0.016827, abs=1e-5)
    # lift 0.15/0.10 - 1 = 0.5; se(log ratio) = sqrt(0.9/50 + 0.85/75) = 0.171270;
    # log 1.5 = 0.405465 ± 1.959964·0.171270 → exp(0.069782) - 1, exp(0.741148) - 1
    lift, lo, hi = lift_ci(50, 500, 75, 500)
    assert lift == pytest.approx(0.5)
    assert lo == pytest.approx(math.exp(0.069782) - 1, abs=1e-4)
    assert hi == pytest.approx(math.exp(0.741148) - 1, abs=1e-4)
    # arms of unequal size (each rate's variance over its own arm: swapped, equal arms
    # hid it) and a 90 % level (z = 1.644854; the level was never read back):
    # 50/500 against 75/1000, se = sqrt(0.9/50 + 0.925/75) = 0.174165, log 0.75 = -0.287682
    lift, lo, hi = lift_ci(50, 500, 75, 1000)
    assert lift == pytest.approx(-0.25)
    assert (lo, hi) == pytest.approx((math.exp(-0.629039) - 1, math.exp(0.053674) - 1), abs=1e-5)
    _, lo, hi = lift_ci(50, 500, 75, 1000, level=0.9)
    assert (lo, hi) == pytest.approx((math.exp(-0.574157) - 1, math.exp(-0.001207) - 1), abs=1e-5)
    # Wilson, 50/500: z² = 3.841459; centre = (0.1 + z²/1000) / (1 + z²/500) = 0.10304;
    # half = z/(1 + z²/500) · sqrt(0.1·0.9/500 + z²/(4·500²)) = 0.026372
    # the pooled rate over both arms' users, not the mean of the two rates (arms of
    # unequal size tell them apart): 50/500 against 75/1000, p̄ = 125/1500 = 0.083333;
    # se = sqrt(0.083333·0.916667·(1/500 + 1/1000)) = 0.0151383, z = -0.025/se
    z, p = two_proportion_test(50, 500, 75, 1000)
    assert z == pytest.approx(-1.65145, abs=1e-4)
    assert p == pytest.approx(math.erfc(1.651446 / math.sqrt(2)), rel=1e-4)
    # A all successes (B not): ½ added to each cell for the CI, not only when B's rate
    # is 0 or 1; 20.5/21 against 10.5/21: log ratio log(10.5/20.5) = -0.669050, se =
    # sqrt(1/10.5 - 1/21 + 1/20.5 - 1/21) = 0.220863; the lift itself is uncorrected
    lift, lo, hi = lift_ci(20, 20, 10, 20)
    assert lift == pytest.approx(-0.5)
    assert (lo, hi) == pytest.approx(
        (
            math.exp(-0.669050 - 1.959964 * 0.220863) - 1,
            math.exp(-0.669050 + 1.959964 * 0.220863) - 1,
        ),
        abs=1e-5,
    )
    wlo, whi = wilson_ci(50, 500)
    assert wlo == pytest.approx(0.10304 - 0.026372, abs=1e-4)
    assert whi == pytest.approx(0.10304 + 0.026372, abs=1e-4)
    assert wilson_ci(0, 20)[0] == 0.0 and wilson_ci(20, 20)[1] == 1.0
    # rounding once put the bound just past p (0/7: lower 2.8e-17), and a report's
    # error bar p - lower came out negative; every interval holds its p
    for bad, needle in (  # once a math-domain error or (0, 1)
        ((5, 3, 0.95), "wilson_ci: need 0 <= successes <= n"),
        ((-1, 3, 0.95), "wilson_ci: need 0 <= successes <= n"),
        ((1, 3, 1.5), r"wilson_ci: level must be in \(0, 1\)"),
    ):
        with pytest.raises(ValueError, match=needle):  # an InputError is a ValueError
            wilson_ci(*bad)
    # impossible counts, levels and powers: named, not answered with numbers (11 of 10
    # gave p = 8e-7, a negative count a lift) or a math-domain / overflow error
    for call, needle in [
        (lambda: two_proportion_test(11, 10, 0, 10), "need 0 <= x_a <= n_a, got x_a=11"),
        (lambda: two_proportion_test(5, 10, -5, 10), "need 0 <= x_b <= n_b, got x_b=-5"),
        (lambda: two_proportion_test(5.5, 10, 5, 10), "x_a must be a whole number, got 5.5"),
        # a negative number of users passed as an empty arm: NaNs, not an error
        (lambda: two_proportion_test(0, -1, 7, 10), "n_a must be >= 0 .*, got -1"),
        (lambda: wilson_ci(0, -3), "wilson_ci: n must be >= 0 .*, got -3"),
        (lambda: lift_ci(0, 10, 0, -2), "lift_ci: n_b must be >= 0"),
        (lambda: lift_ci(20, 10, 5, 10), "lift_ci: need 0 <= x_a <= n_a"),
        # counts past a float's: a bare OverflowError (to float, or numpy's C long)
        (lambda: wilson_ci(10**400, 10**400), "n must be at most 2\\*\\*53 .* of 401 digits"),
        (lambda: fisher_exact_p(1, 10**30, 1, 3), "n_a must be at most 2\\*\\*53"),
        (lambda: lift_ci(5, 10, 6, 10, level=0), r"lift_ci: level must be in \(0, 1\), got 0"),
        (lambda: users_per_arm(0.1, 0.12, alpha=0.0), r"alpha must be in \(0, 1\), got 0.0"),
        (lambda: users_per_arm(0.1, 0.12, power=1.0), r"power must be in \(0, 1\), got 1.0"),
        (lambda: users_per_arm(1.5, 0.1), r"p1 must be a rate in \[0, 1\], got 1.5"),
        (lambda: users_per_arm("0.1", 0.1), r"p1 must be a rate in \[0, 1\], got '0.1'"),
    ]:
        with pytest.raises(InputError, match=needle):
            call()
    assert math.isnan(users_per_arm(math.nan, 0.1))  # an arm without users: no answer
    # a gap whose square underflows (ZeroDivisionError) or whose quotient overflows
    assert users_per_arm(0.0, 1e-300) == math.inf and users_per_arm(0.5, 0.5 + 1e-160) == math.inf
    with pytest.raises(InputError, match="must be 1-d, one a user"):
        interleave_report(np.array([1, 2]), np.array([1]))  # broadcast to "2 users"
    with pytest.raises(InputError, match="k: must be a whole number > 0"):
        replay_hits(np.array([[1, 2]]), [np.array([1])], 0)  # NaN hit rates before
    with pytest.raises(ConfigError, match="k: must be a whole number > 0"):
        interleave_credits(np.array([[1]]), np.array([[2]]), [np.array([1])], -1)
    for n in range(1, 200):
        for x in (0, n // 3, n):
            lo, hi = wilson_ci(x, n)
            assert lo <= x / n <= hi, (x, n)
    assert all(math.isnan(v) for v in lift_ci(0, 10, 3, 10))  # p_A = 0: no ratio
    # a rate of 1 made the delta method's variance 0 (a CI of [0 %, 0 %]); with ½ added
    # to each cell: p = 20.5/21 in both arms, var = 2 · (0.5/21) / 20.5 = 0.0023229,
    # se = 0.048196, log ratio 0 ± 1.959964 · se = ± 0.094463
    lift, lo, hi = lift_ci(20, 20, 20, 20)
    assert lift == 0.0
    assert lo == pytest.approx(math.exp(-0.094463) - 1, abs=1e-5)
    assert hi == pytest.approx(math.exp(0.094463) - 1, abs=1e-5)
    # B without a success: lift -100 %, and an interval all the same
    # (A 10.5/21, B 0.5/21: var = 0.5/10.5 + (20.5/21)/0.5 = 2.0000, se = 1.414214)
    lift, lo, hi = lift_ci(10, 20, 0, 20)
    assert lift == -1.0
    log_ratio = math.log((0.5 / 21) / (10.5 / 21))
    assert hi == pytest.approx(math.exp(log_ratio + 1.959964 * 1.414214) - 1, abs=1e-4)
    assert lo == -1.0  # the interval holds the observed lift (corrected alone: -99.7 %)
    # away from 0 and 1 nothing is added: the textbook value above holds
    assert two_proportion_test(10, 10, 10, 10) == (0.0, 1.0)


def test_users_per_arm_textbook_value() -> None:
    # p1 = 0.10, p2 = 0.15, pooled form: p̄ = 0.125
    # 1.959964·sqrt(2·0.125·0.875) = 0.916684; 0.841621·sqrt(0.09 + 0.1275) = 0.392507
    # (0.916684 + 0.392507)² / 0.05² = 1.713981 / 0.0025 = 685.59 → 686 per arm
    assert users_per_arm(0.10, 0.15) == 686
    assert users_per_arm(0.15, 0.10) == 686
    assert math.isinf(users_per_arm(0.3, 0.3))
    assert users_per_arm(0.10, 0.15, power=0.9) > 686


def test_users_per_arm_rounds_a_fraction_below_a_half_up() -> None:
    # 685.59 above rounds up either way; rounded to nearest, 387.34 would give 387 users, short
    # of the power asked for. p1 = 0.5, p2 = 0.6, pooled p̄ = 0.55:
    # 1.959964·sqrt(2·0.55·0.45) = 1.378957; 0.841621·sqrt(0.25 + 0.24) = 0.589135
    # (1.378957 + 0.589135)² / 0.1² = 3.873385 / 0.01 = 387.34 → 388 per arm
    assert users_per_arm(0.5, 0.6) == 388


def test_replay_report() -> None:
    success = np.array([1, 1, 0, 0, 1, 1, 1, 0], dtype=bool)
    rate = np.array([0.2, 0.1, 0, 0, 0.3, 0.1, 0.1, 0])
    arms = ["A", "A", "A", "A", "B", "B", "B", "B"]
    rep = replay_report(success, rate, arms)
    a, b = rep["arms"]["A"], rep["arms"]["B"]
    assert (a["users"], a["successes"], a["rate"]) == (4, 2, 0.5)
    assert (b["users"], b["successes"], b["rate"]) == (4, 3, 0.75)
    assert a["hits_per_k"] == pytest.approx(0.075) and b["hits_per_k"] == pytest.approx(0.125)
    assert rep["lift"] == pytest.approx(0.5)
    assert rep["p"] == pytest.approx(two_proportion_test(2, 4, 3, 4)[1])
    assert rep["users_per_arm_80"] == users_per_arm(0.5, 0.75)
    assert rep["users_per_arm_80_note"] is None
    assert rep["lift_ci_method"] == "delta method on log(p_B / p_A)"  # no rate of 0 or 1


def test_replay_report_says_how_it_read_the_edge_cases() -> None:
    """Strict JSON writes an infinity and a NaN alike as null, and the lift's method
    said "delta method" where its interval had ½ added to each cell: the record says
    which, in words."""
    both = np.ones(4, dtype=bool)
    equal = replay_report(both, np.full(4, 0.1), ["A", "A", "B", "B"])
    assert math.isinf(equal["users_per_arm_80"])
    assert equal["users_per_arm_80_note"] == (
        "the arms' rates are equal: no number of users detects a difference"
    )
    assert equal["lift_ci_method"].endswith("1/2 added to each cell (an arm's rate is 0 or 1)")
    one_arm = replay_report(both[:2], np.full(2, 0.1), ["A", "A"])
    assert math.isnan(one_arm["users_per_arm_80"])
    assert one_arm["users_per_arm_80_note"] == "an arm has no users: no rates to compare"
    # 2 of 4 against 1 of 4: rates inside (0, 1), the plain delta method
    mixed = replay_report(
        np.array([1, 1, 0, 0, 1, 0, 0, 0], dtype=bool), np.zeros(8), [*"AAAABBBB"]
    )
    assert mixed["lift_ci_method"] == "delta method on log(p_B / p_A)"
    assert mixed["users_per_arm_80_note"] is None and mixed["users_per_arm_80"] > 0


@pytest.mark.parametrize(
    "success, rate, arms, needle",
    [
        # labels other than A and B were counted in neither arm: 0 users each
        ([True, False], [0.1, 0.0], ["a", "b"], r"arms must be 'A' or 'B'; got \['a', 'b'\]"),
        ([True, False], [0.1, 0.0], "AB", "arms must be a list of 'A' or 'B'"),
        # once a raw IndexError from a boolean mask
        ([True, False, True], [0.1, 0.0], ["A", "B"],
         "success, hit_rate and arms must be 1-d.*success 3, hit_rate 2, arms 2"),
        ([True, False], [0.1, float("nan")], ["A", "B"],
         r"hit_rate\[1\] is nan; expected a number in \[0, 1\]"),
        ([True, False], [0.1, "x"], ["A", "B"], "hit_rate must be numbers"),
        ([1, 2], [0.1, 0.0], ["A", "B"], r"success\[1\] is 2; expected True or False"),
    ],
)  # fmt: skip
def test_replay_report_refuses_what_is_not_one_value_a_user(
    success: Any, rate: Any, arms: Any, needle: str
) -> None:
    with pytest.raises(InputError, match=needle):
        replay_report(success, rate, arms)


# -- team-draft interleaving -------------------------------------------------------
def test_team_draft_by_hand() -> None:
    a, b = np.array([1, 2, 3, 4]), np.array([2, 5, 1, 6])
    # coin 0: A picks first in the round, 1: B first. Walked through by hand:
    expected = {
        (0, 0): ([1, 2, 3, 5], [0, 1, 0, 1]),  # A 1, B 2, A 3 (2 is taken), B 5
        (0, 1): ([1, 2, 5, 3], [0, 1, 1, 0]),
        (1, 0): ([2, 1, 3, 5], [1, 0, 0, 1]),
        (1, 1): ([2, 1, 5, 3], [1, 0, 1, 0]),  # B 2, A 1, B 5 (1 is taken), A 3
    }
    for seed in range(8):
        coins = np.random.default_rng(seed)
        key = (int(coins.integers(2)), int(coins.integers(2)))
        items, teams = team_draft(a, b, 4, np.random.default_rng(seed))
        assert (items.tolist(), teams.tolist()) == expected[key]


def test_team_draft_properties() -> None:
    rng = np.random.default_rng(0)
    same = np.array([4, 3, 2, 1])
    assert team_draft(same, same, 4, rng)[0].tolist() == [4, 3, 2, 1]  # identical lists agree
    for _ in range(50):
        a, b = rng.permutation(30)[:10], rng.permutation(30)[:10]
        items, teams = team_draft(a, b, 10, rng)
        assert len(items) == 10 and len(set(items.tolist())) == 10
        for n in range(0, 11, 2):  # after every round the teams are even
            assert teams[:n].sum() == n // 2
    short = team_draft(np.array([1]), np.array([1]), 5, rng)[0]
    assert short.tolist() == [1]  # stops when both lists are used up
    # and when one is (Radlinski et al.'s Algorithm 1): drafting on from the longer list
    # credited its team with 4, 5 and 6, which the short one had no chance to show
    longer, padded = np.arange(1, 7), np.array([1, 2, -1, -1, -1, -1])
    for seed in range(4):
        items, teams = team_draft(longer, padded, 6, np.random.default_rng(seed))
        assert sorted(items.tolist()) == [1, 2] and sorted(teams.tolist()) == [0, 1]
    credits = interleave_credits([longer] * 50, [padded] * 50, [np.array([4, 5, 6])] * 50, 6)
    assert credits[0].sum() == credits[1].sum() == 0


def test_interleave_credits_and_report() -> None:
    top_a = np.array([[1, 2], [1, 2], [1, 2]])
    top_b = np.array([[3, 4], [3, 4], [3, 4]])
    liked = [np.array([3]), np.array([1, 3]), np.array([], dtype=np.int64)]
    ca, cb = interleave_credits(top_a, top_b, liked, 2, seed=0)
    # k = 2: one item from each team whatever the coin, 1 for A and 3 for B
    assert ca.tolist() == [0, 1, 0] and cb.tolist() == [1, 1, 0]
    # one generator serves the users in turn: one started afresh per user gave every user
    # the same first pick, a position bias in every comparison. At k = 1 each user takes
    # one coin, and the team it names contributes the one item shown
    users = 40
    ca, cb = interleave_credits([[1]] * users, [[2]] * users, [[1, 2]] * users, 1, seed=7)
    coins = np.random.default_rng(7).integers(2, size=users)
    assert ca.tolist() == (coins == 0).astype(int).tolist() and (ca + cb == 1).all()
    rep = interleave_report(np.array([1, 0, 2, 0, 1]), np.array([0, 1, 2, 3, 0]))
    # wins A: users 0, 4; wins B: 1, 3; tie: 2 → Δ = 0; sign test 2 of 4 → p = 1
    assert (rep["wins_a"], rep["wins_b"], rep["ties"]) == (2, 2, 1)
    assert rep["delta"] == 0.0 and rep["p"] == pytest.approx(1.0)
    rep = interleave_report(np.zeros(6), np.array([1, 1, 1, 1, 1, 0]))
    # B wins 5 of 5 decided users: p = 2 · (1/2)^5 = 0.0625; Δ = 5/6
    assert rep["p"] == pytest.approx(0.0625) and rep["delta"] == pytest.approx(5 / 6)
    assert interleave_report(np.zeros(3), np.zeros(3))["p"] == 1.0


@pytest.mark.parametrize(
    "call, error, needle",
    [
        # an int for the generator was an AttributeError on .integers
        (lambda g: team_draft([1, 2], [2, 3], 3, 0), InputError,
         r"rng must be a numpy Generator \(np.random.default_rng\(seed\)\), got int 0"),
        # -1 gave an empty list, 1.5 a list of two
        (lambda g: team_draft([1, 2], [2, 3], -1, g), ConfigError,
         "team_draft: k: must be a whole number > 0, got -1"),
        (lambda g: team_draft([1, 2], [2, 3], 1.5, g), ConfigError,
         "team_draft: k: must be a whole number > 0, got 1.5"),
        # raw ValueError / TypeError from numpy before
        (lambda g: team_draft(["a"], [2, 3], 2, g), InputError,
         r"team_draft: a must hold whole item indices; a\[0\] is 'a'"),
        (lambda g: team_draft([1, 2], [[2, 3]], 2, g), InputError,
         "team_draft: b must be a 1-d list of item indices"),
        (lambda g: team_draft([1, 2.5], [2, 3], 2, g), InputError,
         r"a\[1\] is 2.5"),  # read as item 2 before
        # raw numpy SeedSequence errors before
        *[(lambda g, s=s: interleave_credits([[1]], [[2]], [[1]], 1, seed=s), ConfigError,
           "interleave_credits: seed: must be a whole number >= 0")
          for s in ("x", -1, 1.5)],
        (lambda g: interleave_credits(5, [[2]], [[1]], 1), InputError,
         "top_a must hold a row per user, got int 5"),
        (lambda g: interleave_credits([[1]], [[2]], [["x"]], 1), InputError,
         r"liked\[0\] must hold whole item indices; liked\[0\]\[0\] is 'x'"),
        (lambda g: interleave_credits([[1], ["y"]], [[2], [3]], [[1], [1]], 1), InputError,
         r"top_a\[1\] must hold whole item indices"),
        # strings compared as strings; a NaN lost both comparisons and counted a tie
        (lambda g: interleave_report(["a"], ["b"]), InputError,
         "credits_a must be counts of items, got <U1"),
        (lambda g: interleave_report([np.nan], [1]), InputError,
         r"credits_a must be whole counts >= 0; credits_a\[0\] is nan"),
        (lambda g: interleave_report([0.5, 2], [1, 0]), InputError,  # half a click: no count
         r"credits_a must be whole counts >= 0; credits_a\[0\] is 0\.5"),
        (lambda g: interleave_report([1, 2], [0, -1]), InputError,
         r"credits_b\[1\] is -1"),
    ],
)  # fmt: skip
def test_interleaving_refuses_bad_input(call: Any, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle):
        call(np.random.default_rng(0))


def test_interleaving_takes_what_it_took_before() -> None:
    rng = np.random.default_rng(0)
    assert team_draft([], [], 3, rng)[0].tolist() == []  # [] is float64 to numpy
    assert sorted(team_draft(np.array([3.0, 1.0]), [1, 3, -1], 2, rng)[0].tolist()) == [1, 3]
    ca, cb = interleave_credits([[1, 2], [3]], [[2], [4, 5]], [[2], []], 2, seed=np.int64(3))
    assert ca.sum() + cb.sum() == 1
    assert interleave_report([], [])["users"] == 0


@pytest.mark.parametrize("spec", [1, None, ["heldout:0.5"], b"heldout:0.5"])
def test_users_spec_that_is_not_text_is_refused(spec: Any) -> None:
    # 1 was an AttributeError on .startswith
    with pytest.raises(ConfigError, match="--users: expected a file of user ids, a P1 or P4"):
        check_users_spec(spec)


def test_users_spec_takes_a_path(tmp_path: Path) -> None:
    (tmp_path / "users.txt").write_text("u1\n")
    assert check_users_spec(tmp_path / "users.txt") is None
    assert check_users_spec("heldout:0.5") == 0.5


# -- running two policies --------------------------------------------------------
class FixedScores(ScoringModel):
    """A policy that ignores the user: every catalogue item has a fixed score."""

    def __init__(self, scores: np.ndarray, name: str) -> None:
        self.scores = np.asarray(scores, dtype=np.float64)
        self.name = name

    def fit(self, data: TrainingData) -> FixedScores:
        return self

    @property
    def n_items(self) -> int:
        return len(self.scores)

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        return np.tile(self.scores, (len(tasks), 1))


def test_run_abtest_with_two_policies() -> None:
    # 20 users each rate items 0..11; even items get 5, odd 2; the earliest (by time) are
    # the highest-numbered items, so the support of 3 is items 11, 10, 9.
    inter = _frame({f"u{i}": 12 for i in range(20)})
    index = {str(i): i for i in range(12)}
    good = FixedScores(np.where(np.arange(12) % 2 == 0, 1.0, 0.0), "good")  # liked items first
    bad = FixedScores(np.where(np.arange(12) % 2 == 0, 0.0, 1.0), "bad")  # disliked first
    split = make_p4_split(inter, inter["user_id"].unique(), support=3, seed=0, dataset="toy")
    rep = run_abtest(bad, good, inter, split, index, k=2, method="both")
    a, b = rep["replay"]["arms"]["A"], rep["replay"]["arms"]["B"]
    assert a["users"] + b["users"] == 20 and a["successes"] == 0 and b["successes"] == b["users"]
    assert b["hits_per_k"] == 1.0  # the two best even items (0, 2) are both liked later
    assert math.isnan(rep["replay"]["lift"])  # p_A = 0
    assert rep["replay"]["p"] < 0.001
    inter_rep = rep["interleave"]
    assert inter_rep["wins_b"] == 20 and inter_rep["delta"] == 1.0
    assert inter_rep["p"] == pytest.approx(2 * 0.5**20)
    # replay alone scores only each arm's own users and agrees
    only = run_abtest(bad, good, inter, split, index, k=2, method="replay")
    assert jsonable(only["replay"]) == jsonable(rep["replay"]) and "interleave" not in only
    assert rep["support_order"] == "time" and "drawn at random" not in format_report(rep, {})
    # without times the support is K drawn at random: said where "later" was
    untimed = inter.drop(columns="timestamp")
    split_u = make_p4_split(untimed, untimed["user_id"].unique(), support=3, seed=0)
    rep_u = run_abtest(bad, good, untimed, split_u, index, k=2)
    assert rep_u["support_order"] == "random"
    assert "K ratings drawn at random per user (the data has no timestamps)" in format_report(
        rep_u, {}
    )
    with pytest.raises(ConfigError, match=r"^k: must be a whole number > 0, got 0$"):
        run_abtest(bad, good, inter, split, index, k=0)
    # a served run (another recommend()) or a name: a raw TypeError or AttributeError
    with pytest.raises(ConfigError, match=r"policy_b: expected a fitted model .* got str"):
        run_abtest(bad, "popularity", inter, split, index)  # type: ignore[arg-type]
    # a threshold no rating reaches, or NaN: 0 successes in both arms, without a word
    with pytest.raises(DataError, match=r"threshold: 99 is above every rating in the data"):
        run_abtest(bad, good, inter, split, index, threshold=99)
    # the data's top rating itself is a threshold: only what was past it is refused
    none = run_abtest(bad, good, inter, split, index, k=2, method="replay", threshold=5.0)
    assert none["replay"]["arms"]["B"]["successes"] == none["replay"]["arms"]["B"]["users"]
    for threshold in (float("nan"), "4"):
        with pytest.raises(ConfigError, match="threshold: expected a finite rating"):
            run_abtest(bad, good, inter, split, index, threshold=threshold)  # type: ignore[arg-type]
    users = list(inter["user_id"].unique())
    for call, error, needle in [
        # "u1" read as users "u" and "1": an empty split
        (lambda: make_p4_split(inter, "u1"), ConfigError, "users: expected a list of user ids"),
        (lambda: make_p4_split(inter, users, support=2.5), ConfigError, "whole number >= 0"),
        (lambda: make_p4_split(inter, users, support="5"), ConfigError, "whole number >= 0"),
        (lambda: make_p4_split(inter, users, seed=-1), ConfigError, "seed"),
        (lambda: make_p4_split(inter.values, users), DataError, "interactions: expected a Data"),
        (lambda: make_p4_split(inter.drop(columns="user_id"), users), DataError,
         r"interactions: missing column\(s\) \['user_id'\]"),
        (lambda: p4_tasks(inter, None, index), ConfigError, "split: expected a P4Split"),
        (lambda: p4_tasks(inter, split, list(index)), ConfigError, "item_index: expected a map"),
        (lambda: p4_tasks(inter.drop(columns="rating"), split, index), DataError, "rating"),
    ]:  # fmt: skip
        with pytest.raises(error, match=needle):
            call()  # type: ignore[no-untyped-call]


def test_replay_never_shows_a_user_the_items_of_their_own_support() -> None:
    # listed with the support in, B's top 2 would be items 10, which the user rated before the
    # test began, and 8: 0.5 hits per k. As above the support of 3 is items 11, 10, 9;
    # B scores even (liked) items highest, support item 10 above all (1.10), then 8
    # (1.08), 6 (1.06): without 10, both of its two are liked later, 1.0 hits per k
    inter = _frame({f"u{i}": 12 for i in range(20)})
    index = {str(i): i for i in range(12)}
    liked_first = np.where(np.arange(12) % 2 == 0, 1.0, 0.0) + np.arange(12) / 100
    good = FixedScores(liked_first, "good")
    bad = FixedScores(np.where(np.arange(12) % 2 == 0, 0.0, 1.0), "bad")
    split = make_p4_split(inter, inter["user_id"].unique(), support=3, seed=0, dataset="toy")
    rep = run_abtest(bad, good, inter, split, index, k=2, method="replay")
    assert rep["replay"]["arms"]["B"]["hits_per_k"] == 1.0


def test_the_names_abtest_had_before_the_split_still_import_from_it() -> None:
    """The split, the statistics and the interleaving moved to modules of their own;
    code written against ``metarec.evaluation.abtest`` must get the same objects."""
    from metarec.evaluation import ab_stats, abtest, interleaving, p4_split, users_spec

    homes = {
        p4_split: ["ARMS", "P4Split", "id_list", "make_p4_split", "p4_tasks", "whole_number"],
        users_spec: ["check_users_spec", "users_from_spec"],
        ab_stats: ["lift_ci", "two_proportion_test", "users_per_arm", "wilson_ci"],
        interleaving: ["interleave_credits", "interleave_report", "team_draft"],
    }
    for module, names in homes.items():
        for name in names:
            assert getattr(abtest, name) is getattr(module, name), name
    own = ["Method", "format_report", "replay_hits", "replay_report", "run_abtest"]
    assert sorted(abtest.__all__) == sorted([*own, *(n for ns in homes.values() for n in ns)])


def test_a_click_log_is_told_as_clicks_not_as_ratings() -> None:
    # every interaction is 1 (clicks): "rated >= 1" read as a scale that is not there
    inter = _frame({f"u{i}": 12 for i in range(20)}).assign(rating=1.0)
    index = {str(i): i for i in range(12)}
    good = FixedScores(np.where(np.arange(12) % 2 == 0, 1.0, 0.0), "good")
    bad = FixedScores(np.where(np.arange(12) % 2 == 0, 0.0, 1.0), "bad")
    split = make_p4_split(inter, inter["user_id"].unique(), support=3, seed=0, dataset="toy")
    clicks = run_abtest(bad, good, inter, split, index, k=2, threshold=1.0)
    assert clicks["liked"] == "interacted with"
    assert (
        clicks["replay"]["success"]
        == "at least one of the top k interacted with later than the support"
    )
    text = format_report(clicks, {})
    assert "Replay: success = at least one of the top 2 interacted with later" in text
    assert "rated >=" not in text
    # ratings keep their threshold, in the record and in the text
    rated = _frame({f"u{i}": 12 for i in range(20)})
    ratings = run_abtest(bad, good, rated, split, index, k=2, threshold=4.0)
    assert ratings["liked"] == "rated >= 4"
    # every rating (2s and 5s) clears a threshold of 2: ratings still, not clicks
    assert run_abtest(bad, good, rated, split, index, k=2, threshold=2.0)["liked"] == "rated >= 2"
    assert "at least one of the top 2 rated >= 4 later" in format_report(ratings, {})
