"""``--users``: the users an A/B test reads, named by a file, a split or a fraction.

A text file of user ids, a P1 split JSON (its new users), a P4 split JSON
(returned whole, arms and K included) or ``heldout:FRACTION`` of the data's
users. :func:`check_users_spec` checks the spec without the data, so that a bad
one is refused before the slow part (loading the runs and the data).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from metarec.data.schema import Dataset
from metarec.errors import ConfigError, DataError
from metarec.evaluation.p4_split import P4Split
from metarec.io import load_json


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
    text = None
    if path.suffix.lower() != ".json":
        try:
            # utf-8-sig: a byte-order mark (Notepad writes one) was read into the first id,
            # and that user was skipped as "not in the data"
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise DataError("not UTF-8 text (one user id per line expected)", path=path) from None
    # --save-split writes JSON whatever the name: a split saved as split.txt was read as
    # a list of ids, its JSON lines as users
    if text is None or text.lstrip().startswith("{"):
        raw_json = load_json(path)
        protocol = raw_json.get("protocol") if isinstance(raw_json, dict) else None
        if protocol == "p4":
            return P4Split.load(path)
        if protocol == "p1":
            from metarec.evaluation.p1 import P1Split

            # its new users only: they are tested here under abtest's own support rule
            return list(P1Split.load(path, dataset, check_rule=False).new_users)
        raise DataError("expected a P1 split (new_users) or a P4 split (users, arms)", path=path)
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
