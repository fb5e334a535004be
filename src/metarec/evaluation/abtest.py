"""Protocol P4: an offline A/B test of two recommendation policies on logged ratings.

The test runs on a P4 split (:mod:`metarec.evaluation.p4_split`): held-out
users, each in arm A or B, each with a support of K ratings and the later
ones. Two methods judge the policies on it: replay, here, with the rates'
statistics in :mod:`metarec.evaluation.ab_stats`, and team-draft interleaving
(:mod:`metarec.evaluation.interleaving`).

Replay (one arm, one policy per user). The arm's policy recommends k items,
the support excluded. A user is a *success* when at least one of the k was
rated >= ``threshold`` (4) in the later period — the logged analogue of "the
user clicked something we showed"; users without any later-liked item count
as failures. The secondary rate is hits / k (how many of the k were liked
later), per user, averaged over the arm.

An offline proxy: a shown item the user never rated counts as a miss, and ratings
are not missing at random (people rate what they found), so it favours policies
that show popular items; it is not Li et al.'s (2011) unbiased replay, which needs
logs of a uniformly random policy. Its lift and power figures size an online test;
they do not forecast one (``benchmarks/README.md``, P4).

The statistics take top-k lists or counts (pure functions, tested without
models); :func:`run_abtest` feeds them from two
:class:`~metarec.models.base.ScoringModel` policies. The split's, the
statistics' and the interleaving's public names are importable from here too,
where they were before they had modules of their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from metarec.data.features import user_rows
from metarec.data.schema import has_timestamps, liked_words
from metarec.data.tasks import Task, liked_query_items
from metarec.errors import ConfigError, DataError, InputError
from metarec.evaluation.ab_stats import (
    fisher_exact_p,
    lift_ci,
    lift_ci_corrected,
    two_proportion_test,
    users_per_arm,
    wilson_ci,
)
from metarec.evaluation.interleaving import interleave_credits, interleave_report, team_draft
from metarec.evaluation.metrics import hit_matrix
from metarec.evaluation.p4_split import (
    ARMS,
    P4Split,
    id_list,
    make_p4_split,
    p4_tasks,
    whole_number,
)
from metarec.evaluation.users_spec import check_users_spec, users_from_spec
from metarec.models.base import ScoringModel, check_k
from metarec.values import is_number

__all__ = [
    "ARMS",
    "Method",
    "P4Split",
    "check_users_spec",
    "format_report",
    "id_list",
    "interleave_credits",
    "interleave_report",
    "lift_ci",
    "make_p4_split",
    "p4_tasks",
    "replay_hits",
    "replay_report",
    "run_abtest",
    "team_draft",
    "two_proportion_test",
    "users_from_spec",
    "users_per_arm",
    "whole_number",
    "wilson_ci",
]

Method = Literal["replay", "interleave", "both"]


# -- replay --------------------------------------------------------------------
def replay_hits(
    top: np.ndarray, liked: Sequence[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per user: success (any of the top ``k`` liked later) and hits / k."""
    hits = hit_matrix(top, liked, k)  # checks k: 0 gave NaN hit rates
    return np.asarray(hits.any(axis=1)), hits.sum(axis=1) / k


# how the lift's method reads where its interval was taken with a continuity correction
HALF_PER_CELL = ", 1/2 added to each cell (an arm's rate is 0 or 1)"


def replay_report(
    success: np.ndarray,
    hit_rate: np.ndarray,
    arms: Sequence[str],
    level: float = 0.95,
    liked: str = "rated >= threshold",
) -> dict[str, Any]:
    """Per-arm success rates and CIs, lift, p-value and users per arm for 80 % power;
    ``liked``: what counted as a liked later item, in words (:func:`liked_words`)."""
    where = "replay_report"
    if isinstance(arms, str | bytes):  # "AB" would be one label, not two users
        raise InputError(
            f"{where}: arms must be a list of 'A' or 'B', one a user, got {arms!r:.40}"
        )
    success, hit_rate, arms_arr = np.asarray(success), np.asarray(hit_rate), np.asarray(arms)
    shapes = {"success": success.shape, "hit_rate": hit_rate.shape, "arms": arms_arr.shape}
    if any(len(shape) != 1 for shape in shapes.values()) or len(set(shapes.values())) > 1:
        raise InputError(
            f"{where}: success, hit_rate and arms must be 1-d, one value a user; got lengths "
            + ", ".join(f"{name} {shape[0] if len(shape) == 1 else shape}"
                        for name, shape in shapes.items())
        )  # fmt: skip
    # a label other than A and B was counted in neither arm: every arm had 0 users
    unknown = sorted({str(a) for a in arms_arr.tolist()} - set(ARMS))
    if unknown:
        raise InputError(f"{where}: arms must be 'A' or 'B'; got {unknown[:5]}")
    if success.dtype.kind not in "biu":
        raise InputError(f"{where}: success must be booleans, got {success.dtype} values")
    if hit_rate.dtype.kind not in "biuf":
        raise InputError(f"{where}: hit_rate must be numbers in [0, 1], got {hit_rate.dtype}")
    for name, values, bad in (
        ("success", success, ~np.isin(success, (0, 1))),
        # NaN fails the comparison too: it made the arm's hits/k NaN
        ("hit_rate", hit_rate, ~((hit_rate >= 0) & (hit_rate <= 1))),
    ):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            wanted = "True or False" if name == "success" else "a number in [0, 1]"
            raise InputError(f"{where}: {name}[{i}] is {values[i].item()!r}; expected {wanted}")
    success, hit_rate = success.astype(bool), hit_rate.astype(np.float64)
    per_arm: dict[str, dict[str, Any]] = {}
    for arm in ARMS:
        mask = arms_arr == arm
        n, x = int(mask.sum()), int(success[mask].sum())
        per_arm[arm] = {
            "users": n,
            "successes": x,
            "rate": x / n if n else float("nan"),
            "ci": list(wilson_ci(x, n, level)),
            "hits_per_k": float(hit_rate[mask].mean()) if n else float("nan"),
        }
    a, b = per_arm["A"], per_arm["B"]
    z, p = two_proportion_test(a["successes"], a["users"], b["successes"], b["users"])
    counts = (a["successes"], a["users"], b["successes"], b["users"])
    lift, low, high = lift_ci(*counts, level)
    method = "delta method on log(p_B / p_A)"
    if lift_ci_corrected(*counts):
        method += HALF_PER_CELL
    need = users_per_arm(a["rate"], b["rate"])
    # strict JSON writes an infinity and a NaN alike as null: the note tells them apart
    if not a["users"] or not b["users"]:
        need_note: str | None = "an arm has no users: no rates to compare"
    elif math.isinf(need):
        need_note = "the arms' rates are equal: no number of users detects a difference"
    else:
        need_note = None
    return {
        "success": f"at least one of the top k {liked} later than the support",
        "arms": per_arm,
        "lift": lift,
        "lift_ci": [low, high],
        "lift_ci_method": method,
        "z": z,
        "p": p,
        "test": "two-proportion z-test (pooled), two-sided",
        "p_exact": fisher_exact_p(a["successes"], a["users"], b["successes"], b["users"]),
        "exact_test": "Fisher's exact test, two-sided",
        "users_per_arm_80": need,
        "users_per_arm_80_note": need_note,
        "power_formula": "pooled (Fleiss), alpha 0.05 two-sided, power 0.8",
    }


# -- running two policies -----------------------------------------------------
def _top(
    policy: ScoringModel,
    tasks: Sequence[Task],
    rows: np.ndarray,
    k: int,
    users: pd.DataFrame | None,
    ids: Sequence[str],
) -> np.ndarray:
    chosen = [tasks[i] for i in rows]
    feats = user_rows(users, [ids[i] for i in rows])
    return policy.recommend(chosen, k, feats, exclude_seen=True)


def run_abtest(
    policy_a: ScoringModel,
    policy_b: ScoringModel,
    interactions: pd.DataFrame,
    split: P4Split,
    item_index: Mapping[str, int],
    *,
    k: int = 10,
    method: Method = "both",
    users: pd.DataFrame | None = None,
    threshold: float = 4.0,
) -> dict[str, Any]:
    """Replay and/or interleave ``policy_a`` against ``policy_b`` on ``split``'s users."""
    for name, policy in (("policy_a", policy_a), ("policy_b", policy_b)):
        if not isinstance(policy, ScoringModel):  # a served run has another recommend()
            raise ConfigError(
                f"{name}: expected a fitted model (make_peer, make_ranker, or "
                f"MetaModel.from_recommender for a trained run), got {type(policy).__name__}"
            )
    check_k(k)
    if not is_number(threshold) or not np.isfinite(threshold):
        raise ConfigError(f"threshold: expected a finite rating, got {threshold!r:.40}")
    if users is not None and not isinstance(users, pd.DataFrame):
        raise DataError(f"users: expected a DataFrame of user features, got {type(users).__name__}")
    if method not in ("replay", "interleave", "both"):
        raise ConfigError(f"method: expected replay, interleave or both, got {method!r}")
    if not split.users:
        raise DataError("no users left for the A/B test (all skipped or none given)")
    per_arm = {arm: split.arms.count(arm) for arm in ("A", "B")}
    if method != "interleave" and not all(per_arm.values()):
        # the replay compared an arm with nobody in it: every figure "n/a", exit 0,
        # and a report written as if the test had run
        raise DataError(
            f"the replay needs users in both arms: A has {per_arm['A']:,}, B "
            f"{per_arm['B']:,} of {len(split.users):,}; test more users, or compare the "
            "two on the same users with method interleave"
        )
    tasks = p4_tasks(interactions, split, item_index)
    ratings = pd.to_numeric(interactions["rating"], errors="coerce")
    top = float(ratings.max())
    if threshold > top:  # past the data's top rating: 0 successes in both arms, always
        raise DataError(
            f"threshold: {threshold:g} is above every rating in the data (the highest is "
            f"{top:g}): nothing could be liked, so neither arm could succeed"
        )
    liked = liked_query_items(tasks, threshold)
    scale = (float(ratings.min()), top)  # one value: a click log, whose every later item counts
    n = len(tasks)
    report: dict[str, Any] = {
        "protocol": "p4",
        "dataset": split.dataset,
        "support": split.support,
        "k": k,
        "seed": split.seed,
        "threshold": threshold,
        # what success counted, in words: on click logs every later item is "liked"
        "liked": liked_words(threshold, scale),
        "users": n,
        "skipped": split.skipped,
        # P4's support is a user's first K ratings by time; without times, K drawn at
        # random (seeded), and "later" is then only "the rest", which the report says
        "support_order": "time" if has_timestamps(interactions) else "random",
    }
    everyone = np.arange(n)
    need_all = method in ("interleave", "both")
    mask_a = split.arm_mask("A")
    top_a = _top(policy_a, tasks, everyone if need_all else np.flatnonzero(mask_a), k, users,
                 split.users)  # fmt: skip
    top_b = _top(policy_b, tasks, everyone if need_all else np.flatnonzero(~mask_a), k, users,
                 split.users)  # fmt: skip
    if method in ("replay", "both"):
        shown = np.zeros((n, top_a.shape[1]), dtype=np.int64)
        if need_all:
            shown[mask_a], shown[~mask_a] = top_a[mask_a], top_b[~mask_a]
        else:
            shown[mask_a], shown[~mask_a] = top_a, top_b
        success, rate = replay_hits(shown, liked, k)
        report["replay"] = replay_report(success, rate, split.arms, liked=report["liked"])
    if need_all:
        ca, cb = interleave_credits(top_a, top_b, liked, k, seed=split.seed)
        report["interleave"] = interleave_report(ca, cb)
    return report


def format_report(report: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """A readable table of a :func:`run_abtest` report; ``names``: arm → run label."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None or not math.isfinite(x) else f"{x:+.1%}"

    def num(x: float | None, fmt: str = ".3f") -> str:
        return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)

    def p_num(x: float | None) -> str:
        # a p below a double's reach is 0.0: "p = 0" read as a certainty no test gives
        return "< 1e-300" if x == 0 else f"= {num(x, '.4g')}"

    lines = [
        f"P4 offline A/B test on {report['dataset'] or 'the data'}: {report['users']:,} users, "
        f"support K = {report['support']}, top-{report['k']}, seed {report['seed']}"
    ]
    if report.get("support_order") == "random":
        lines.append(
            "Support: K ratings drawn at random per user (the data has no timestamps); "
            "'later' is the rest of their ratings"
        )
    rep = report.get("replay")
    if rep:
        lines += [
            "",
            f"Replay: success = at least one of the top {report['k']} "
            f"{report.get('liked') or liked_words(report['threshold'], None)} later",
            f"{'arm':<4} {'run':<28} {'users':>6} {'successes':>9} {'rate':>7} "
            f"{'95% CI':>17} {'hits/k':>7}",
        ]
        for arm in ARMS:
            r = rep["arms"][arm]
            ci = f"[{num(r['ci'][0])}, {num(r['ci'][1])}]"
            lines.append(
                f"{arm:<4} {names.get(arm, arm)[-28:]:<28} {r['users']:>6} {r['successes']:>9} "
                f"{num(r['rate']):>7} {ci:>17} {num(r['hits_per_k']):>7}"
            )
        need = rep["users_per_arm_80"]
        empty = [arm for arm in ("A", "B") if not rep["arms"][arm]["users"]]
        if empty:
            power = f"n/a (arm {' and '.join(empty)} has no users)"
        elif need is None or math.isinf(need):  # equal rates (JSON writes inf as null)
            power = "no difference to detect"
        else:
            power = f"{need:,.0f}"
        lines += [
            f"lift (B/A - 1): {pct(rep['lift'])}  95% CI [{pct(rep['lift_ci'][0])}, "
            f"{pct(rep['lift_ci'][1])}] (delta method, log ratio"
            + (", 1/2 added per cell)" if HALF_PER_CELL in rep.get("lift_ci_method", "") else ")"),
            f"p {p_num(rep['p'])} (two-proportion z-test, two-sided)"
            + (f"; Fisher's exact p {p_num(rep['p_exact'])}" if "p_exact" in rep else ""),
            "users per arm for 80% power at alpha 0.05 at these rates: " + power,
        ]
    inter = report.get("interleave")
    if inter:
        lines += [
            "",
            f"Team-draft interleaving over all {inter['users']:,} users:",
            f"  A wins {inter['wins_a']} ({num(inter['share_a'], '.1%')}), "
            f"B wins {inter['wins_b']} ({num(inter['share_b'], '.1%')}), "
            f"ties {inter['ties']} ({num(inter['share_ties'], '.1%')})",
            f"  delta = (wins B - wins A) / n = {num(inter['delta'], '+.3f')}, "
            f"p {p_num(inter['p'])} (sign test, two-sided)",
        ]
    return "\n".join(lines)
