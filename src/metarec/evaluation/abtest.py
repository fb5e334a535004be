"""Protocol P4: an offline A/B test of two recommendation policies on logged ratings.

Split. Held-out users; per user, ratings sorted by time (ties by position; a
data set without timestamps falls back to a seeded shuffle); the *support*
is the first K ratings (what the policy may adapt on), *later* is the rest.
Users are randomised (seeded) 50/50 into arms A and B; the split is saved as
JSON (user ids, K, seed, arm of each user) so another machine replays the
same test.

Replay (one arm, one policy per user). The arm's policy recommends k items,
the support excluded. A user is a *success* when at least one of the k was
rated >= ``threshold`` (4) in the later period — the logged analogue of "the
user clicked something we showed"; users without any later-liked item count
as failures, as they would online. The secondary rate is hits / k (how many
of the k were liked later), per user, averaged over the arm.

* Per-arm rate with a 95 % Wilson score interval (good at small n and rates
  near 0 or 1, where the Wald interval fails).
* Lift = p_B / p_A − 1 with a 95 % CI by the delta method on the log ratio:
  se(log(p_B/p_A)) = sqrt((1 − p_A)/(n_A p_A) + (1 − p_B)/(n_B p_B)), CI =
  exp(log ratio ± z · se) − 1. Where an arm's rate is 0 or 1 that variance is
  infinite or 0 (a 20/20 against 20/20 test had the CI [0 %, 0 %]), so the
  interval is then taken with ½ added to each arm's successes and failures
  (x + ½ of n + 1, Haldane–Anscombe); the lift itself is the observed one.
  Undefined (NaN) when A has no success: there is no ratio.
* Two-sided p-value: two-proportion z-test with the pooled rate,
  z = (p_B − p_A) / sqrt(p̄ (1 − p̄) (1/n_A + 1/n_B)).
* Users per arm for 80 % power at α = 0.05 at the observed rates, the pooled
  form (Fleiss):
  n = (z_{1−α/2} sqrt(2 p̄ (1 − p̄)) + z_{1−β} sqrt(p1 (1 − p1) + p2 (1 − p2)))² / (p1 − p2)²,
  p̄ = (p1 + p2)/2, rounded up; infinite when the rates are equal.

Team-draft interleaving (Radlinski, Kurup & Joachims, CIKM 2008), on every
held-out user (no arm split): A's and B's lists are merged into one top-k; in
each round a seeded coin decides which team picks first, and each team
appends its highest-ranked item not yet shown. Each later-liked item in the
merged list credits the team that contributed it; the team with more credits
wins that user (equal credits, including none, is a tie). Reported: win
proportions, Δ = (wins_B − wins_A) / n over all users, and a two-sided sign
test (binomial, p = 1/2) on the users with a winner.

The statistics take top-k lists or counts (pure functions, tested without
models); :func:`run_abtest` feeds them from two
:class:`~metarec.models.base.ScoringModel` policies.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm

from metarec.data.columns import check_frame
from metarec.data.features import user_rows
from metarec.data.schema import Dataset
from metarec.data.tasks import Task, UserRatings, liked_query_items, ordered
from metarec.errors import ConfigError, DataError, InputError
from metarec.evaluation.metrics import hit_matrix
from metarec.io import load_json, reading, save_json
from metarec.models.base import ScoringModel, check_k, check_seed, check_whole

ARMS = ("A", "B")
Method = Literal["replay", "interleave", "both"]


# -- the split --------------------------------------------------------------
@dataclass
class P4Split:
    """Held-out users, their arms, and the support size K."""

    dataset: str
    seed: int
    support: int
    users: list[str]
    arms: list[str]  # "A" or "B", one per user
    skipped: dict[str, int] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        save_json(
            path,
            {
                "protocol": "p4",
                "dataset": self.dataset,
                "seed": self.seed,
                "support": self.support,
                "users": self.users,
                "arms": self.arms,
                "skipped": self.skipped,
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> P4Split:
        raw = load_json(path)
        if not isinstance(raw, dict) or raw.get("protocol") != "p4":
            raise DataError('not a P4 split file (no "protocol": "p4")', path=path)
        with reading(path, "P4 split file"):
            users, arms = id_list(raw, "users"), id_list(raw, "arms")
            if len(users) != len(arms) or set(arms) - set(ARMS):
                raise DataError("users and arms must be equally long, arms 'A' or 'B'", path=path)
            if not users:
                raise DataError("no users in it", path=path)
            repeated = pd.Index(users)[pd.Index(users).duplicated()]
            if len(repeated):
                # counted twice (perhaps once in each arm), a user would narrow the CIs
                raise DataError(
                    f"user {repeated[0]!r} is listed {users.count(repeated[0])} times; "
                    "each user belongs to one arm once",
                    path=path,
                )
            split = cls(
                str(raw.get("dataset", "")),
                whole_number(raw, "seed"),
                whole_number(raw, "support"),
                users,
                arms,
                _skipped(raw.get("skipped", {})),
            )
        if split.seed < 0 or split.support < 0:
            raise DataError(
                f"seed and support must be >= 0, got {split.seed} and {split.support}", path=path
            )
        return split

    def arm_mask(self, arm: str) -> np.ndarray:
        return np.array([a == arm for a in self.arms], dtype=bool)


def _skipped(value: Any) -> dict[str, int]:
    """A P4 file's counts of users left out, by reason (reported, not used)."""
    if not isinstance(value, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value.values()
    ):
        raise ValueError(f"skipped must be an object of reason: count, got {value!r:.60}")
    return {str(k): int(v) for k, v in value.items()}


def id_list(raw: dict[str, Any], field: str) -> list[str]:
    """A split file's list of ids; a string is refused, not read as its letters."""
    value = raw[field]
    if not isinstance(value, list):
        raise TypeError(f"{field} must be a list of ids, got {type(value).__name__}")
    return [str(v) for v in value]


def whole_number(raw: dict[str, Any], field: str) -> int:
    value = raw[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be a whole number, got {value!r}")
    return value


def make_p4_split(
    interactions: pd.DataFrame,
    users: Sequence[str],
    *,
    support: int = 5,
    seed: int = 0,
    dataset: str = "",
) -> P4Split:
    """Keep ``users`` with at least ``support + 1`` ratings; randomise them 50/50 into A and B.

    Users are sorted first, so the arms depend only on the user set and the
    seed. ``skipped`` counts users not in ``interactions`` and users with too
    few ratings (nothing left to judge after the support).
    """
    check_whole(support, "support K", 0)  # 2.5 was taken, then failed in the slicing
    check_seed(seed)
    check_frame(interactions, "interactions", ("user_id", "item_id"))
    if isinstance(users, str | bytes) or not isinstance(users, Iterable):
        # "196" was read as users "1", "9" and "6": an empty split without a word
        raise ConfigError(f"users: expected a list of user ids, got {users!r:.60}")
    counts = interactions.groupby(interactions["user_id"].astype(str)).size()
    wanted = sorted(set(map(str, users)))
    known = [u for u in wanted if u in counts.index]
    kept = [u for u in known if counts[u] >= support + 1]
    rng = np.random.default_rng(seed)
    arms = np.array(["B"] * len(kept), dtype=object)
    arms[rng.permutation(len(kept))[: (len(kept) + 1) // 2]] = "A"
    skipped = {"not_in_data": len(wanted) - len(known), "too_few_ratings": len(known) - len(kept)}
    return P4Split(dataset, seed, support, kept, [str(a) for a in arms], skipped)


def p4_tasks(
    interactions: pd.DataFrame, split: P4Split, item_index: Mapping[str, int]
) -> list[Task]:
    """One task per split user, in split order: support = first K ratings by time, query = later."""
    check_frame(interactions, "interactions", ("user_id", "item_id", "rating"))
    if not isinstance(split, P4Split):
        raise ConfigError(f"split: expected a P4Split (make_p4_split), got {type(split).__name__}")
    if not isinstance(item_index, Mapping):
        raise ConfigError(
            f"item_index: expected a mapping of item id to catalogue index, got "
            f"{type(item_index).__name__}"
        )
    frame = interactions[interactions["user_id"].astype(str).isin(set(split.users))].copy()
    frame["user_id"] = frame["user_id"].astype(str)
    unknown = ~frame["item_id"].astype(str).isin(item_index.keys())
    if unknown.any():
        raise DataError(
            f"item {frame.loc[unknown, 'item_id'].iloc[0]!r} (and {int(unknown.sum()) - 1} more "
            "ratings) is not in the run's catalogue; use the data the runs were trained on"
        )
    frame["item_id"] = frame["item_id"].astype(str)
    ur = UserRatings.from_frame(frame, item_index)
    row_of = {str(u): r for r, u in enumerate(ur.user_ids)}
    rng = np.random.default_rng(split.seed)
    tasks = []
    for user in split.users:
        if user not in row_of:
            raise DataError(f"user {user!r} of the split has no ratings in the data")
        row = row_of[user]
        items, ratings = ordered(*ur.history(row), "time", rng)
        k = split.support
        if len(items) <= k:
            raise DataError(f"user {user!r} has {len(items)} ratings; the split needs > {k}")
        tasks.append(Task(row, items[:k], ratings[:k], items[k:], ratings[k:]))
    return tasks


# -- users from a spec --------------------------------------------------------
def check_users_spec(spec: str | os.PathLike[str]) -> float | None:
    """Validate ``--users`` without the data: the fraction of ``heldout:FRACTION``,
    or None for a file, which must exist."""
    # a Path is a file name as surely as its text is, and users_from_spec opens either
    spec = os.fspath(spec) if isinstance(spec, os.PathLike) else spec
    if not isinstance(spec, str):
        raise ConfigError(
            f"--users: expected a file of user ids, a P1 or P4 split JSON, or "
            f"heldout:FRACTION, got {type(spec).__name__} {spec!r:.40}"
        )
    if spec.startswith("heldout:"):
        raw = spec.split(":", 1)[1]
        try:
            fraction = float(raw)
        except ValueError:
            fraction = float("nan")
        if not 0 < fraction <= 1:
            raise ConfigError(f"--users {spec!r}: FRACTION must be a number in (0, 1], got {raw!r}")
        return fraction
    if Path(spec).is_dir():
        raise ConfigError(
            f"--users {spec!r}: is a folder; expected a file of user ids, a P1 or P4 split "
            "JSON, or heldout:FRACTION"
        )
    if not Path(spec).is_file():
        raise ConfigError(
            f"--users {spec!r}: no such file; expected a file of user ids, a P1 or P4 "
            "split JSON, or heldout:FRACTION"
        )
    return None


def users_from_spec(
    spec: str | os.PathLike[str], dataset: Dataset, seed: int = 0
) -> list[str] | P4Split:
    """``--users``: ``heldout:FRACTION`` (a seeded fraction of ``dataset``'s users), a
    P1 split JSON of ``dataset`` (its new users; checked as every reader of a P1 split
    checks it), a P4 split JSON (returned whole: arms and K included), or a text file
    of user ids, one per line, each once (blank lines and ``#`` comments ignored)."""
    fraction = check_users_spec(spec)
    if fraction is not None:
        users = dataset.interactions["user_id"].astype(str).unique()
        pool = np.array(sorted(users), dtype=object)
        n = min(len(pool), max(1, round(len(pool) * fraction)))
        picked = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
        return sorted(pool[picked].tolist())
    path = Path(spec)
    if path.suffix.lower() == ".json":
        raw_json = load_json(path)
        protocol = raw_json.get("protocol") if isinstance(raw_json, dict) else None
        if protocol == "p4":
            return P4Split.load(path)
        if protocol == "p1":
            from metarec.evaluation.p1 import P1Split

            # its new users only: they are tested here under abtest's own support rule
            return list(P1Split.load(path, dataset, check_rule=False).new_users)
        raise DataError("expected a P1 split (new_users) or a P4 split (users, arms)", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError("not UTF-8 text (one user id per line expected)", path=path) from None
    first: dict[str, int] = {}  # id -> the line it is first on
    for number, line in enumerate(text.splitlines(), start=1):
        user = line.split("#", 1)[0].strip()
        if not user:
            continue
        if user in first:
            # refused as the P1 and P4 split files refuse it: a list with repeats is a
            # slip (two lists pasted together), and dropping them without a word made the
            # report's user count differ from the file's
            raise DataError(
                f"user {user!r} is listed again (first on line {first[user]}); list each user once",
                path=path,
                row=number,
            )
        first[user] = number
    if not first:
        raise DataError("no user ids in the file (one per line expected)", path=path)
    return list(first)


# -- replay statistics --------------------------------------------------------
def replay_hits(
    top: np.ndarray, liked: Sequence[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per user: success (any of the top ``k`` liked later) and hits / k."""
    hits = hit_matrix(top, liked, k)  # checks k: 0 gave NaN hit rates
    return np.asarray(hits.any(axis=1)), hits.sum(axis=1) / k


def _counts(where: str, *pairs: tuple[str, Any, str, Any]) -> None:
    """Each (successes, users) pair whole numbers with 0 <= successes <= users: 11
    successes of 10 users gave a p-value, and a negative count a lift, before; and
    0 of -3 users an interval of NaNs, as if the arm were empty."""
    for x_name, x, n_name, n in pairs:
        for name, value in ((x_name, x), (n_name, n)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise InputError(f"{where}: {name} must be a whole number, got {value!r:.40}")
        if n < 0:
            raise InputError(f"{where}: {n_name} must be >= 0 (a number of users), got {n}")
        if not 0 <= x <= n:
            raise InputError(
                f"{where}: need 0 <= {x_name} <= {n_name}, got {x_name}={x}, {n_name}={n}"
            )


def _probability(where: str, name: str, value: object) -> float:
    """A level, alpha or power: a number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise InputError(f"{where}: {name} must be a number in (0, 1), got {value!r:.40}")
    if not 0 < value < 1:  # NaN fails this too
        raise InputError(f"{where}: {name} must be in (0, 1), got {value}")
    return float(value)


def wilson_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (NaN for n = 0)."""
    _counts("wilson_ci", ("successes", successes, "n", n))
    level = _probability("wilson_ci", "level", level)
    if n <= 0:
        return float("nan"), float("nan")
    z = float(norm.ppf(0.5 + level / 2.0))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # the interval holds p; rounding put the bound 3e-17 past it at p = 0 and p = 1, and
    # a plot's error bar (p - lower) came out negative, which matplotlib refuses
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def two_proportion_test(x_a: int, n_a: int, x_b: int, n_b: int) -> tuple[float, float]:
    """Pooled two-proportion z-test of p_B vs p_A → (z, two-sided p): NaN for an empty
    arm; z = 0 and p = 1 when both arms are all successes or all failures."""
    _counts("two_proportion_test", ("x_a", x_a, "n_a", n_a), ("x_b", x_b, "n_b", n_b))
    if n_a <= 0 or n_b <= 0:
        return float("nan"), float("nan")
    pooled = (x_a + x_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 0.0, 1.0  # both arms all-success or all-failure: no evidence of a difference
    z = (x_b / n_b - x_a / n_a) / se
    return z, float(2 * norm.sf(abs(z)))


def lift_ci(
    x_a: int, n_a: int, x_b: int, n_b: int, level: float = 0.95
) -> tuple[float, float, float]:
    """Lift p_B/p_A − 1 and its delta-method CI on the log ratio → (lift, low, high);
    with ½ added to each cell for the CI when a rate is 0 or 1 (see the module notes)."""
    _counts("lift_ci", ("x_a", x_a, "n_a", n_a), ("x_b", x_b, "n_b", n_b))
    level = _probability("lift_ci", "level", level)
    if n_a <= 0 or n_b <= 0 or x_a == 0:
        return float("nan"), float("nan"), float("nan")
    lift = (x_b / n_b) / (x_a / n_a) - 1
    xa, na, xb, nb = float(x_a), float(n_a), float(x_b), float(n_b)
    if x_a == n_a or x_b in (0, n_b):
        xa, na, xb, nb = xa + 0.5, na + 1, xb + 0.5, nb + 1
    p_a, p_b = xa / na, xb / nb
    z = float(norm.ppf(0.5 + level / 2.0))
    se = math.sqrt((1 - p_a) / (na * p_a) + (1 - p_b) / (nb * p_b))
    log_ratio = math.log(p_b / p_a)
    low, high = math.exp(log_ratio - z * se) - 1, math.exp(log_ratio + z * se) - 1
    # the interval is the corrected estimate's; it must still hold the observed lift
    # (B without a success: -100 %, just below a corrected lower bound of -99.7 %)
    return lift, min(low, lift), max(high, lift)


def users_per_arm(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Users per arm to detect p1 vs p2 (two-sided α, given power), pooled form, rounded
    up; NaN when a rate is NaN (an arm without users), infinite when they are equal."""
    alpha = _probability("users_per_arm", "alpha", alpha)
    power = _probability("users_per_arm", "power", power)
    for name, rate in (("p1", p1), ("p2", p2)):
        if isinstance(rate, bool) or not isinstance(rate, int | float | np.number):
            raise InputError(f"users_per_arm: {name} must be a rate in [0, 1], got {rate!r:.40}")
        if not math.isnan(rate) and not 0 <= rate <= 1:
            raise InputError(f"users_per_arm: {name} must be a rate in [0, 1], got {rate}")
    if math.isnan(p1) or math.isnan(p2):
        return float("nan")
    if p1 == p2:
        return math.inf
    z_a = float(norm.ppf(1 - alpha / 2))
    z_b = float(norm.ppf(power))
    p_bar = (p1 + p2) / 2
    root = z_a * math.sqrt(2 * p_bar * (1 - p_bar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return float(math.ceil(root**2 / (p1 - p2) ** 2))


def replay_report(
    success: np.ndarray, hit_rate: np.ndarray, arms: Sequence[str], level: float = 0.95
) -> dict[str, Any]:
    """Per-arm success rates and CIs, lift, p-value and users per arm for 80 % power."""
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
    lift, low, high = lift_ci(a["successes"], a["users"], b["successes"], b["users"], level)
    return {
        "success": "at least one of the top k rated >= threshold later than the support",
        "arms": per_arm,
        "lift": lift,
        "lift_ci": [low, high],
        "lift_ci_method": "delta method on log(p_B / p_A)",
        "z": z,
        "p": p,
        "test": "two-proportion z-test (pooled), two-sided",
        "users_per_arm_80": users_per_arm(a["rate"], b["rate"]),
        "power_formula": "pooled (Fleiss), alpha 0.05 two-sided, power 0.8",
    }


# -- team-draft interleaving --------------------------------------------------
def team_draft(
    a: np.ndarray, b: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Team-draft merge of rankings ``a`` and ``b`` → (items, team: 0 = A, 1 = B), ≤ k long.

    Each round a coin decides which team picks first; a team picks its
    highest-ranked item not yet in the list. Stops at k items or when both
    lists are used up. Negative entries (a short list's padding) are skipped.
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
        bad = np.array([isinstance(v, bool) or not isinstance(v, int) for v in arr.tolist()])
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
    lists = (a, b)
    pos = [0, 0]
    shown: set[int] = set()
    items: list[int] = []
    teams: list[int] = []

    def pick(team: int) -> bool:
        lst = lists[team]
        while pos[team] < len(lst) and (int(lst[pos[team]]) in shown or lst[pos[team]] < 0):
            pos[team] += 1
        if pos[team] == len(lst):
            return False
        item = int(lst[pos[team]])
        shown.add(item)
        items.append(item)
        teams.append(team)
        return True

    while len(items) < k:
        first = int(rng.integers(2))
        progressed = False
        for team in (first, 1 - first):
            if len(items) < k and pick(team):
                progressed = True
        if not progressed:
            break
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
        bad = np.flatnonzero(~(np.isfinite(credits) & (credits >= 0)))
        if len(bad):
            raise InputError(
                f"interleave_report: {name} must be finite counts >= 0; "
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
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float | np.number)
        or not np.isfinite(threshold)
    ):
        raise ConfigError(f"threshold: expected a finite rating, got {threshold!r:.40}")
    if users is not None and not isinstance(users, pd.DataFrame):
        raise DataError(f"users: expected a DataFrame of user features, got {type(users).__name__}")
    if method not in ("replay", "interleave", "both"):
        raise ConfigError(f"method: expected replay, interleave or both, got {method!r}")
    if not split.users:
        raise DataError("no users left for the A/B test (all skipped or none given)")
    tasks = p4_tasks(interactions, split, item_index)
    top = float(pd.to_numeric(interactions["rating"], errors="coerce").max())
    if threshold > top:  # past the data's top rating: 0 successes in both arms, always
        raise DataError(
            f"threshold: {threshold:g} is above every rating in the data (the highest is "
            f"{top:g}): nothing could be liked, so neither arm could succeed"
        )
    liked = liked_query_items(tasks, threshold)
    n = len(tasks)
    report: dict[str, Any] = {
        "protocol": "p4",
        "dataset": split.dataset,
        "support": split.support,
        "k": k,
        "seed": split.seed,
        "threshold": threshold,
        "users": n,
        "skipped": split.skipped,
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
        report["replay"] = replay_report(success, rate, split.arms)
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

    lines = [
        f"P4 offline A/B test on {report['dataset'] or 'the data'}: {report['users']:,} users, "
        f"support K = {report['support']}, top-{report['k']}, seed {report['seed']}"
    ]
    rep = report.get("replay")
    if rep:
        lines += [
            "",
            f"Replay: success = at least one of the top {report['k']} rated "
            f">= {report['threshold']:g} later",
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
            f"{pct(rep['lift_ci'][1])}] (delta method, log ratio)",
            f"p = {num(rep['p'], '.4g')} (two-proportion z-test, two-sided)",
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
            f"p = {num(inter['p'], '.4g')} (sign test, two-sided)",
        ]
    return "\n".join(lines)
