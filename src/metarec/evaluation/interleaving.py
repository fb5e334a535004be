"""Team-draft interleaving of two rankings, and the sign test on who won each user.

Team-draft interleaving (Radlinski, Kurup & Joachims, CIKM 2008), on every
held-out user (no arm split): A's and B's lists are merged into one top-k; in
each round a seeded coin decides which team picks first, and each team
appends its highest-ranked item not yet shown. Each later-liked item in the
merged list credits the team that contributed it; the team with more credits
wins that user (equal credits, including none, is a tie). Reported: win
proportions, Δ = (wins_B − wins_A) / n over all users, and a two-sided sign
test (binomial, p = 1/2) on the users with a winner.

The functions take top-k lists or counts (pure functions, tested without
models).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest

from metarec.errors import InputError
from metarec.models.base import check_k, check_seed
from metarec.values import is_whole


def team_draft(
    a: np.ndarray, b: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Team-draft merge of rankings ``a`` and ``b`` → (items, team: 0 = A, 1 = B), ≤ k long.

    Each round a coin decides which team picks first; a team picks its
    highest-ranked item not yet in the list. Stops at k items or when either
    list has no item left to show, as in the published algorithm. Negative
    entries (a short list's padding) are skipped.
    """
    check_k(k, "team_draft: ")  # -1 gave an empty list, 1.5 a list of 2
    if not isinstance(rng, np.random.Generator):
        raise InputError(
            f"team_draft: rng must be a numpy Generator (np.random.default_rng(seed)), "
            f"got {type(rng).__name__} {rng!r:.40}"
        )
    return _draft(_ranking("team_draft", "a", a), _ranking("team_draft", "b", b), k, rng)


def _ranking(where: str, name: str, value: Any) -> np.ndarray:
    """Item indices, best first, as int64: a string or a 2-d list was a raw numpy error,
    and 1.5 would have been read as item 1."""
    if isinstance(value, str | bytes):
        raise InputError(f"{where}: {name} must be a list of item indices, got {value!r:.40}")
    try:
        arr = np.asarray(value)
    except ValueError:  # a ragged list of lists
        arr = np.asarray(None)
    if arr.ndim != 1 and arr.size:
        raise InputError(
            f"{where}: {name} must be a 1-d list of item indices, got "
            f"{type(value).__name__} {value!r:.40}"
        )
    if not arr.size:  # [] is float64 to numpy: an empty list, not a float one
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind == "f":
        bad = ~(np.isfinite(arr) & (arr == np.round(arr)))
    elif arr.dtype.kind not in "iu":  # text, None, True: find the first such entry
        bad = np.array([not is_whole(v) for v in arr.tolist()])
    else:
        bad = np.zeros(0, dtype=bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{where}: {name} must hold whole item indices; {name}[{i}] is {arr.tolist()[i]!r:.40}"
        )
    return arr.astype(np.int64)


def _draft(
    a: np.ndarray, b: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    # Radlinski et al.'s Algorithm 1: the team with fewer picks goes next, a coin on a tie
    # (one coin a round, as both teams pick once a round), while *both* lists have an item
    # not yet shown; drafting on from the longer list gave its team credit the exhausted
    # one had no chance at
    lists = (a, b)
    pos = [0, 0]
    shown: set[int] = set()
    items: list[int] = []
    teams: list[int] = []
    picks = [0, 0]

    def has_next(team: int) -> bool:
        lst = lists[team]
        while pos[team] < len(lst) and (int(lst[pos[team]]) in shown or lst[pos[team]] < 0):
            pos[team] += 1
        return pos[team] < len(lst)

    while len(items) < k and has_next(0) and has_next(1):
        team = int(picks[1] < picks[0]) if picks[0] != picks[1] else int(rng.integers(2))
        item = int(lists[team][pos[team]])
        shown.add(item)
        items.append(item)
        teams.append(team)
        picks[team] += 1
    return np.array(items, dtype=np.int64), np.array(teams, dtype=np.int64)


def interleave_credits(
    top_a: np.ndarray, top_b: np.ndarray, liked: Sequence[np.ndarray], k: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per user, later-liked items in the team-draft top-k credited to A and to B.

    One seeded generator serves all users in order, so the coins are
    reproducible for a given user order and seed.
    """
    check_k(k)  # -1 credited nobody, silently
    check_seed(seed, "interleave_credits: seed")  # "x" was a raw numpy SeedSequence error
    for name, value in (("top_a", top_a), ("top_b", top_b), ("liked", liked)):
        if (
            isinstance(value, str | bytes)
            or not isinstance(value, Sequence | np.ndarray)
            or (isinstance(value, np.ndarray) and value.ndim == 0)
        ):
            raise InputError(
                f"interleave_credits: {name} must hold a row per user, got "
                f"{type(value).__name__} {value!r:.40}"
            )
    if not len(top_a) == len(top_b) == len(liked):
        raise InputError(
            f"interleave_credits: top_a, top_b and liked must have a row per user; got "
            f"{len(top_a)}, {len(top_b)} and {len(liked)}"
        )
    rng = np.random.default_rng(seed)
    credits = np.zeros((len(liked), 2), dtype=np.int64)
    where = "interleave_credits"
    for u, good in enumerate(liked):
        a, b = _ranking(where, f"top_a[{u}]", top_a[u]), _ranking(where, f"top_b[{u}]", top_b[u])
        items, teams = _draft(a, b, k, rng)
        hit = np.isin(items, _ranking(where, f"liked[{u}]", good))
        credits[u] = np.bincount(teams[hit], minlength=2)
    return credits[:, 0], credits[:, 1]


def interleave_report(credits_a: np.ndarray, credits_b: np.ndarray) -> dict[str, Any]:
    """Wins per team, Δ = (wins_B − wins_A)/n, and a two-sided sign test on non-tied users."""
    credits_a, credits_b = np.asarray(credits_a), np.asarray(credits_b)
    if credits_a.ndim != 1 or credits_a.shape != credits_b.shape:
        # numpy would broadcast one user's credits over every other user's
        raise InputError(
            f"interleave_report: credits_a and credits_b must be 1-d, one a user; got shapes "
            f"{credits_a.shape} and {credits_b.shape}"
        )
    for name, credits in (("credits_a", credits_a), ("credits_b", credits_b)):
        # text compared as text, and a NaN lost every comparison: a tie
        if credits.dtype.kind not in "iuf":
            raise InputError(
                f"interleave_report: {name} must be counts of items, got {credits.dtype} values"
            )
        whole = np.isfinite(credits) & (credits >= 0) & (credits == np.floor(credits))
        bad = np.flatnonzero(~whole)  # 0.5 of a click is no count
        if len(bad):
            raise InputError(
                f"interleave_report: {name} must be whole counts >= 0; "
                f"{name}[{bad[0]}] is {credits[bad[0]].item()!r}"
            )
    n = len(credits_a)
    wins_a = int((credits_a > credits_b).sum())
    wins_b = int((credits_b > credits_a).sum())
    ties = n - wins_a - wins_b
    decided = wins_a + wins_b
    p = float(binomtest(wins_b, decided, 0.5).pvalue) if decided else 1.0
    share = (lambda x: x / n) if n else (lambda x: float("nan"))
    return {
        "users": n,
        "wins_a": wins_a,
        "wins_b": wins_b,
        "ties": ties,
        "share_a": share(wins_a),
        "share_b": share(wins_b),
        "share_ties": share(ties),
        "delta": share(wins_b - wins_a),
        "p": p,
        "test": "two-sided sign test (binomial, p = 1/2) on users with a winner",
    }
