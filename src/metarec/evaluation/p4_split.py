"""Protocol P4's split: held-out users, their arms, and each user's support and later ratings.

Held-out users; per user, ratings sorted by time (ties by item id; a
data set without timestamps falls back to a seeded shuffle); the *support*
is the first K ratings (what the policy may adapt on), *later* is the rest.
Users are randomised (seeded) 50/50 into arms A and B; the split is saved as
JSON (user ids, K, seed, arm of each user) so another machine replays the
same test.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metarec.data.columns import check_frame
from metarec.data.tasks import Task, UserRatings, ordered, user_stream
from metarec.errors import ConfigError, DataError
from metarec.io import load_json, reading, save_json, warn_unknown_keys
from metarec.models.base import check_seed, check_whole
from metarec.values import is_whole

ARMS = ("A", "B")
# the keys save writes, each read by load
P4_KEYS = ("protocol", "dataset", "seed", "support", "users", "arms", "skipped", "users_from")


@dataclass
class P4Split:
    """Held-out users, their arms, and the support size K."""

    dataset: str
    seed: int
    support: int
    users: list[str]
    arms: list[str]  # "A" or "B", one per user
    skipped: dict[str, int] = field(default_factory=dict)
    # how the users were chosen, where it matters to a replay: "heldout:0.2" draws from
    # every user, trained ones included, which a replay must accept as the first run did
    users_from: str = ""

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
                **({"users_from": self.users_from} if self.users_from else {}),
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> P4Split:
        raw = load_json(path)
        if not isinstance(raw, dict) or raw.get("protocol") != "p4":
            raise DataError('not a P4 split file (no "protocol": "p4")', path=path)
        warn_unknown_keys(raw, P4_KEYS, path, "P4 split file")
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
                str(raw.get("users_from", "")),
            )
        if split.users_from.startswith("heldout:"):
            # read back as --users by abtest, whose message named a flag never given
            try:
                fraction = float(split.users_from.split(":", 1)[1])
            except ValueError:
                fraction = float("nan")
            if not 0 < fraction <= 1:
                raise DataError(
                    f"users_from must be heldout:FRACTION with FRACTION in (0, 1], got "
                    f"{split.users_from!r:.60} (damaged or edited?)",
                    path=path,
                )
        if split.seed < 0 or split.support < 0:
            raise DataError(
                f"seed and support must be >= 0, got {split.seed} and {split.support}", path=path
            )
        if split.seed >= 2**64:  # refused by the interleaving's coins, after the whole replay
            raise DataError(f"seed must be below 2**64, got {split.seed}", path=path)
        return split

    def arm_mask(self, arm: str) -> np.ndarray:
        return np.array([a == arm for a in self.arms], dtype=bool)


def _skipped(value: Any) -> dict[str, int]:
    """A P4 file's counts of users left out, by reason (reported, not used)."""
    if not isinstance(value, dict) or not all(is_whole(n) and n >= 0 for n in value.values()):
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
    if not is_whole(value):
        raise TypeError(f"{field} must be a whole number, got {value!r}")
    return int(value)


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
    tasks = []
    for user in split.users:
        if user not in row_of:
            raise DataError(f"user {user!r} of the split has no ratings in the data")
        row = row_of[user]
        # the stream shuffles only a user with no timestamps. As in P2, "later" is after
        # the first k in time order, ties of one second ordered by item id: README says
        # what share of the later ratings share the support's last second
        items, ratings = ordered(*ur.history(row), "time", user_stream(split.seed, user))
        k = split.support
        if len(items) <= k:
            raise DataError(f"user {user!r} has {len(items)} ratings; the split needs > {k}")
        tasks.append(Task(row, items[:k], ratings[:k], items[k:], ratings[k:]))
    return tasks
