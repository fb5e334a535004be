"""Re-using a benchmark's split files: load one, and refuse one that does not fit.

A benchmark writes each fold's split as user (and item) ids, named
``{protocol}-{dataset}[-fold{f}]-split.json``. ``metarec benchmark --splits DIR``
reads them back instead of drawing new ones, so a run can be repeated exactly
on another machine, or after the split rule changed. A split file is input
like any other: one for another dataset, another fold, with users the data
does not have, with a user in two groups (a leak), or with a user its own rule
would not have drawn (too few ratings to be tested, or too many for P1's
cold-start users) is refused, naming the file and what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import warnings
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd

from metarec.data.schema import Dataset
from metarec.errors import ConfigError, DataError, MetarecError
from metarec.io import load_json, reading, save_json, warn_unknown_keys
from metarec.values import is_whole

S = TypeVar("S", bound="SplitFile")


class SplitFile:
    """What the P1 and P2 splits share: their ids written to JSON, read back with
    each field checked, and the rating frames rebuilt from the data set (a split
    file holds ids only, never MovieLens' ratings). Subclasses are dataclasses with
    a ``frames`` field."""

    protocol: ClassVar[str]
    held_out: ClassVar[str]  # the group whose users are tested: new_users, test_users
    # The rule (ratings a user needs to be drawn) every file written before the rule was
    # recorded was drawn with: such a file loads with it, and a split with it hashes as
    # those files did (see digest). Never edit, even when the defaults change.
    rule_before_recorded: ClassVar[dict[str, int]]
    frames: dict[str, pd.DataFrame]
    # fields added after files were written without them: left out of :meth:`digest`
    # while unset (None), so that such files still match the runs that recorded them
    later_fields: ClassVar[tuple[str, ...]] = ("data_digest",)

    def rebuild_frames(self, interactions: pd.DataFrame) -> dict[str, pd.DataFrame]:
        raise NotImplementedError

    def digest(self) -> str:
        """sha256 of the split's ids and settings, as a run records the split it was
        trained with: an edited split.json then no longer matches (swapping the user
        groups keeps every check above happy and tests the model on its training users).
        Rule fields at their defaults are left out, so runs recorded before the rule was
        written to the file still match their split."""
        fields = {
            name: value
            for name, value in self._fields().items()
            if self.rule_before_recorded.get(name, object()) != value
            and not (name in self.later_fields and value is None)
        }
        blob = json.dumps(fields, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    @classmethod
    def _field_names(cls) -> list[str]:
        """The fields a split file holds (the frames are rebuilt from the data)."""
        return [f.name for f in dataclasses.fields(cls) if f.name != "frames"]  # type: ignore[arg-type]

    def _fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._field_names()}

    def to_json(self) -> dict[str, Any]:
        """What :meth:`save` writes: kept by a benchmark until its report is written."""
        return {"protocol": self.protocol, **self._fields()}

    def save(self, path: str | Path) -> None:
        save_json(path, self.to_json())

    @classmethod
    def load(cls: type[S], path: str | Path, dataset: Dataset, *, check_rule: bool = True) -> S:
        """The split in ``path``, checked against ``dataset``. ``check_rule=False``: its
        users need not have the ratings its rule drew them with, for a reader that takes
        only its held-out users on data that may have grown since (retrain, abtest)."""
        kind = f"{cls.protocol.upper()} split file"
        raw = load_json(path)
        if not isinstance(raw, dict):
            raise DataError(f"not a {kind} (a JSON {type(raw).__name__})", path=path)
        raw = {**cls.rule_before_recorded, **raw}
        if raw.get("protocol") != cls.protocol:
            raise DataError(
                f"not a {kind}: protocol {raw.get('protocol')!r}, expected {cls.protocol!r}",
                path=path,
            )
        names = cls._field_names()
        warn_unknown_keys(raw, ["protocol", *names], path, kind)
        with reading(path, kind):
            values = {
                f.name: _field_value(f, raw)
                for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                if f.name in names
            }
            split = cls(**values)
        try:
            check_folds(getattr(split, "n_folds", None), getattr(split, "fold", None))
            split.check_rule()
        except DataError as exc:
            raise DataError(str(exc), path=path) from None
        split.check_fits(dataset, path)
        split.check_groups(dataset, path, check_rule=check_rule)
        if check_rule:  # readers of its held-out users only take grown data by design
            split.check_data(dataset, path)
        split.frames = split.rebuild_frames(dataset.interactions)
        return split

    def check_data(self, dataset: Dataset, path: str | Path) -> None:
        """Warn where the ratings differ from those the split was drawn from (its
        ``data_digest``; files written before 2026-12-06 hold none). Its users may all
        still fit (a rating deleted, an item renamed), and the run then gives other
        figures than the one that wrote the split, without a word."""
        recorded = getattr(self, "data_digest", None)
        if recorded is None:
            return
        now = data_digest(dataset.interactions)
        if now != recorded:
            then_n, now_n = recorded.split(":")[0], now.split(":")[0]
            counts = (
                f"{int(then_n):,} ratings then, {int(now_n):,} now"
                if then_n != now_n and then_n.isdigit()
                else f"as many ratings ({int(now_n):,}), not the same ones or times"
            )
            warnings.warn(
                f"{path}: drawn from other ratings than {dataset.name}'s here ({counts}); "
                "its users fit them, but the figures will not repeat those of the run "
                "that wrote it",
                UserWarning,
                stacklevel=3,
            )

    def rating_bounds(self) -> tuple[int, int | None]:
        """The fewest and most ratings (None: no limit) a user of the split has."""
        raise NotImplementedError

    def check_rule(self) -> None:
        """The recorded rule can draw users at all (checked before the data is)."""
        low, high = self.rating_bounds()
        if low < 1:  # as make_p2_split refuses it: a user with no ratings has no task
            raise DataError(f"min_ratings must be at least 1, got {low}")
        if high is not None and high < low:
            raise DataError(f"min_ratings {low} is above max_ratings {high}")

    def check_groups(self, dataset: Dataset, path: str | Path, *, check_rule: bool = True) -> None:
        """Every user a user of the data, in one group only, and someone to train on and
        to test: wherever a split is read (``--splits``, a run's split.json for evaluate,
        abtest's --users), since an edited one otherwise tests the model on the users
        it trained on and reports the leak as a better score.

        Every user also has as many ratings as the split's rule asks: the protocols
        drop a held-out user with too few without a word (P1's states need 13, P2 at
        K = 20 needs 21), so an edited file would quietly test fewer users, and P1's
        cap keeps its cold-start users cold."""
        groups = {
            g: set(getattr(self, g)) for g in ("train_users", "validation_users", self.held_out)
        }
        counts = dataset.interactions["user_id"].astype(str).value_counts()
        low, high = self.rating_bounds()
        for name, ids in groups.items():
            unknown = sorted(ids - set(counts.index))
            if unknown:
                raise DataError(
                    f"{len(unknown)} of its {name} are not users of {dataset.name} "
                    f"(first: {unknown[0]!r})",
                    path=path,
                )
            if not check_rule:
                continue
            n = counts.reindex(sorted(ids))
            outside = n[(n < low) | (n > high)] if high is not None else n[n < low]
            if len(outside):
                wanted = _rule_words(self)
                raise DataError(
                    f"{len(outside)} of its {name} have a number of ratings in {dataset.name} "
                    f"its rule does not draw (first: {outside.index[0]!r} with "
                    f"{int(outside.iloc[0])}); it draws users with {wanted}. Is this the "
                    "data the split was drawn from?",
                    path=path,
                )
        if check_rule:
            # the other direction: a split holds every user its rule draws, so one with
            # users taken out (the hard ones) is not reported as the protocol's run
            drawn = (
                counts[(counts >= low) & (counts <= high)]
                if high is not None
                else (counts[counts >= low])
            )
            left = sorted(set(drawn.index) - set().union(*groups.values()))
            if left:
                raise DataError(
                    f"{len(left):,} users of {dataset.name} that its rule draws are in none "
                    f"of its groups (first: {left[0]!r} with {int(counts[left[0]])} "
                    f"ratings; it draws users with {_rule_words(self)}), and a split holds "
                    "every user its rule draws: edited, or drawn from other data?",
                    path=path,
                )
        for (a, ia), (b, ib) in combinations(groups.items(), 2):
            both = sorted(ia & ib)
            if both:
                raise DataError(
                    f"{a} and {b} share {len(both)} users (first: {both[0]!r}): a user must "
                    "be in one group only",
                    path=path,
                )
        if not groups["train_users"] or not groups[self.held_out]:
            raise DataError(f"train_users and {self.held_out} must not be empty", path=path)

    def check_fits(self, dataset: Dataset, path: str | Path) -> None:
        """Refuse a split of another data set (wherever a split file is read: a
        benchmark's --splits, a run's split.json for evaluate and ensemble)."""
        name = getattr(self, "dataset", None)
        if name is not None and name != dataset.name:
            raise DataError(f"a split of {name!r}, not of {dataset.name!r}", path=path)


def data_digest(interactions: pd.DataFrame) -> str:
    """The ratings a split is drawn from, as ``"rows:hash"``: each row's user, item,
    rating and time, hashed in any order (the same rows shuffled give the same split
    and the same figures). Read as the loaders leave them, so that the same ratings
    hash alike from any file or frame: ids as text (``1`` and ``"1"``), ratings at
    the loaders' float32 (a frame's float64 4.2 is their 4.2), no time column as the
    loaders' all-NaN one."""

    def numbers(column: str, dtype: type[np.floating[Any]]) -> np.ndarray:
        if column not in interactions.columns:
            return np.full(len(interactions), np.nan)
        values = pd.to_numeric(interactions[column], errors="coerce").to_numpy(np.float64)
        return values.astype(dtype).astype(np.float64)

    columns = {
        "user_id": interactions["user_id"].astype(str).to_numpy(),
        "item_id": interactions["item_id"].astype(str).to_numpy(),
        "rating": numbers("rating", np.float32),
        "timestamp": numbers("timestamp", np.float64),
    }
    rows = pd.util.hash_pandas_object(pd.DataFrame(columns), index=False).to_numpy()
    blob = np.ascontiguousarray(np.sort(rows)).tobytes()
    return f"{len(interactions)}:{hashlib.blake2b(blob, digest_size=8).hexdigest()}"


def _rule_words(split: SplitFile) -> str:
    low, high = split.rating_bounds()
    return (
        f"{low} to {high} ratings (min_ratings, max_ratings)"
        if high is not None
        else f"at least {low} ratings (min_ratings)"
    )


def user_rule(split: SplitFile) -> dict[str, int]:
    """The split's rule for drawing users, by the names its file gives them."""
    return {name: getattr(split, name) for name in split.rule_before_recorded}


def has_protocol_rule(split: SplitFile) -> bool:
    """Whether the split draws its users by its protocol's own rule (the one a file
    written before the rule was recorded had), not by one a split file set."""
    return user_rule(split) == split.rule_before_recorded


def _field_value(f: dataclasses.Field[Any], raw: dict[str, Any]) -> Any:
    """One field of a split file as its annotation says (``from __future__``
    annotations are strings); optional fields may be absent (older files)."""
    required = f.default is dataclasses.MISSING
    value = raw[f.name] if required else raw.get(f.name, f.default)
    if f.type == "list[str]":
        if not isinstance(value, list):
            raise TypeError(f"{f.name} must be a list of ids, got {type(value).__name__}")
        ids = [str(v) for v in value]
        if len(set(ids)) != len(ids):  # a user tested twice counts twice in every mean
            twice = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
            raise ValueError(f"{f.name} holds {twice!r} more than once")
        return ids
    if f.type == "int":  # the seed (numpy's generators take a whole number >= 0), a count
        if not is_whole(value) or value < 0:
            raise ValueError(f"{f.name} must be a whole number >= 0, got {value!r:.40}")
        return value
    if f.type == "str":
        return str(value)
    if f.type == "str | None":
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{f.name} must be text or null, got {type(value).__name__}")
        return value
    if f.type == "int | None":
        if value is not None and not is_whole(value):
            raise TypeError(f"{f.name} must be a whole number or null, got {value!r}")
        return value
    raise TypeError(f"no reader for {f.name}: {f.type}")


def split_stem(dataset: str, seed: int) -> str:
    """The data set's part of a benchmark's file names: its name, and the seed where it
    is not 0 (``ml-100k-seed1``). Two seeds' runs into one folder wrote one split file,
    the second's over the first's, while the first's report stayed beside it; seed 0
    keeps the names committed results and README commands read."""
    return dataset if seed == 0 else f"{dataset}-seed{seed}"


def read_stem(protocol: str, dataset: str, seed: int, folder: str | Path, folds: int) -> str:
    """The stem of the split files ``--splits`` reads from ``folder``: the run's seed's
    where the folder holds them, else the data set's own (seed 0's), so that one split
    can be read back under other model seeds."""
    _check_folder(folder)
    seeded = split_stem(dataset, seed)
    fold_ids: list[int | None] = [None] if folds == 1 else list(range(folds))

    def holds(stem: str) -> bool:  # any fold's: a missing one is then named as missing
        return any((Path(folder) / split_file_name(protocol, stem, f)).is_file() for f in fold_ids)

    if seeded != dataset and not holds(seeded) and not holds(dataset):
        raise ConfigError(
            f"--splits: no {split_file_name(protocol, seeded, fold_ids[0])} (this seed's) nor "
            f"{split_file_name(protocol, dataset, fold_ids[0])} (seed 0's) in {folder}; use "
            "the folder a benchmark wrote them to, with the same --protocol, --dataset and --folds"
        )
    return seeded if holds(seeded) else dataset


def _check_folder(folder: str | Path) -> None:
    """``--splits`` names a folder: a split file given there was told "no
    p2-ml-100k-split.json in p2-ml-100k-split.json"."""
    if Path(folder).is_file():
        raise ConfigError(
            f"--splits: {folder} is a file; give the folder a benchmark wrote its split "
            f"files to ({Path(folder).parent or '.'}, if it is one of them)"
        )


def split_file_name(protocol: str, dataset: str, fold: int | None) -> str:
    """``dataset``: the data set's :func:`split_stem`."""
    return f"{protocol}-{dataset}" + (f"-fold{fold}" if fold is not None else "") + "-split.json"


def split_path(protocol: str, dataset: str, folder: str | Path, fold: int | None) -> Path:
    """Where a benchmark wrote that fold's split in ``folder``; a missing file is refused."""
    _check_folder(folder)
    path = Path(folder) / split_file_name(protocol, dataset, fold)
    if not path.is_file():
        raise ConfigError(
            f"--splits: no {path.name} in {folder} (a benchmark writes one split file per "
            "fold; use the folder it wrote them to, with the same --protocol, --dataset "
            "and --folds)"
        )
    return path


def check_folds(n_folds: int | None, fold: int | None) -> None:
    """Refuse a fold plan that cannot give every user a turn as a held-out user."""
    if n_folds is None:
        if fold is not None:
            raise DataError(f"fold {fold} given without n_folds")
        return
    if not is_whole(n_folds) or n_folds < 2:
        # one fold would hold every user out, leaving none to train on
        raise DataError(f"n_folds must be an integer >= 2; got {n_folds!r}")
    if not is_whole(fold) or not 0 <= fold < n_folds:
        raise DataError(f"fold must be an integer in [0, {n_folds}); got {fold!r}")


def load_split(
    protocol: str,
    dataset: Dataset,
    folder: str | Path,
    *,
    fold: int | None,
    n_folds: int | None,
    stem: str | None = None,
) -> Any:
    """The P1 or P2 split of ``fold`` (``None``: the single split) from ``folder``;
    ``stem``: the files' :func:`split_stem` (default: the data set's name)."""
    from metarec.evaluation.p1 import P1Split
    from metarec.evaluation.p2 import P2Split

    path = split_path(protocol, stem or dataset.name, folder, fold)
    try:
        split = (P1Split if protocol == "p1" else P2Split).load(path, dataset)
    except (KeyError, TypeError, ValueError) as exc:
        kind = protocol.upper()
        raise DataError(f"not a readable {kind} split file ({exc!r})", path=path) from None
    # files written before the fold was recorded (P1 before 2026-11-30) carry neither
    if split.n_folds is not None and (split.fold, split.n_folds) != (fold, n_folds):
        raise DataError(
            f"fold {split.fold} of {split.n_folds}, but this run wants fold {fold} of {n_folds}",
            path=path,
        )
    split.fold, split.n_folds = fold, n_folds
    return split


def check_fold_partition(
    protocol: str, dataset: Dataset, folder: str | Path, n_folds: int, stem: str | None = None
) -> None:
    """The folds read from ``folder`` are one cross-validation: each splits the same
    users, and each user is held out in exactly one fold. Each file can be sound alone
    while together they test some users twice and others never (fold 1 a copy of fold
    0), which a mean over folds would report as a 5-fold result."""
    splits = [
        load_split(protocol, dataset, folder, fold=f, n_folds=n_folds, stem=stem)
        for f in range(n_folds)
    ]
    check_partition(protocol, dataset, folder, splits, stem)


def check_partition(
    protocol: str,
    dataset: Dataset,
    folder: str | Path,
    splits: Sequence[Any],
    stem: str | None = None,
) -> None:
    """:func:`check_fold_partition` of folds already read (fold ``f`` at ``splits[f]``)."""
    n_folds = len(splits)
    held = splits[0].held_out
    universe: set[str] = set()
    where: dict[str, int] = {}
    for f, split in enumerate(splits):
        path = split_path(protocol, stem or dataset.name, folder, f)
        users = {*split.train_users, *split.validation_users, *getattr(split, held)}
        if f == 0:
            universe = users
        elif split.rating_bounds() != splits[0].rating_bounds():
            # the report states one rule for the run (_header), so the folds keep one
            raise DataError(
                f"fold {f} draws users with {_rule_words(split)}, fold 0 with "
                f"{_rule_words(splits[0])}: the folds of one cross-validation keep one rule",
                path=path,
            )
        elif users != universe:
            raise DataError(
                f"fold {f} splits {len(users):,} users, fold 0 {len(universe):,}: the folds of "
                "one cross-validation split the same users",
                path=path,
            )
        for user in getattr(split, held):
            if user in where:
                raise DataError(
                    f"{held} of fold {f} and of fold {where[user]} share user {user!r}: each "
                    "user is held out in one fold only",
                    path=path,
                )
            where[user] = f
    never = sorted(universe - set(where))
    if never:
        raise DataError(
            f"{len(never):,} users are held out in no fold (first: {never[0]!r}); each user "
            f"is held out in one of the {n_folds} folds",
            path=folder,
        )


def check_fold_plan(protocol: str, dataset: str, folder: str | Path, n_folds: int) -> None:
    """Refuse to write an ``n_folds``-fold run's split files into ``folder`` when it
    holds fold split files of another number of folds. The files are named by fold
    only (``p2-ml-100k-fold0-split.json`` for 2 folds as for 5; committed results and
    README commands read these names), so a 2-fold run would replace folds 0 and 1 of
    a 5-fold run's files and leave 2 to 4: a 5-fold report beside a mix of two plans,
    which ``--splits`` then reads. A file that records no fold count (P1 before
    2026-11-30) belongs to a plan of as many folds as its set of files."""
    prefix = f"{protocol}-{dataset}-fold"
    pattern = re.compile(rf"{re.escape(prefix)}(\d+)-split\.json")
    unrecorded: list[tuple[int, Path]] = []
    for path in sorted(Path(folder).glob(f"{prefix}*-split.json")):
        matched = pattern.fullmatch(path.name)
        if matched is None:
            continue
        fold = int(matched.group(1))
        try:
            raw = load_json(path)
        except MetarecError:  # unreadable: the plan it belongs to is unknown
            raw = {}
        recorded = raw.get("n_folds") if isinstance(raw, dict) else None
        if is_whole(recorded):
            holds = f"fold {fold} of a {recorded}-fold split"
            if recorded != n_folds:
                _refuse_plan(path, holds, prefix, folder, n_folds)
        elif fold >= n_folds:
            holds = f"fold {fold} of a split of at least {fold + 1} folds"
            _refuse_plan(path, holds, prefix, folder, n_folds)
        else:
            unrecorded.append((fold, path))
    if unrecorded:
        planned = max(f for f, _ in unrecorded) + 1
        if planned != n_folds:
            path = max(unrecorded)[1]
            holds = f"fold {planned - 1} of a {planned}-fold split (no fold count recorded)"
            _refuse_plan(path, holds, prefix, folder, n_folds)


def _refuse_plan(path: Path, holds: str, prefix: str, folder: str | Path, n_folds: int) -> None:
    raise ConfigError(
        f"out: {path} holds {holds}, and this {n_folds}-fold run would write its "
        f"{prefix}*-split.json beside it, leaving two plans' split files mixed; "
        f"give another out folder, or move that run's {prefix}*-split.json out of {folder}"
    )
