"""A saved ensemble used where a single run is: ``metarec recommend`` and ``metarec serve``.

:class:`EnsembleRecommender` gives a loaded :class:`~metarec.models.ensemble.Ensemble`
:class:`~metarec.recommender.Recommender`'s interface (see the class for the few
methods it refuses). The catalogue, the encoder, the user features, the rating
range and the LM vectors that explanations read come from the *primary* member:
the first metarec model of the ensemble.

What an adapted user holds: the blended catalogue scores (one float per item)
besides the history. Members are adapted when the user is, all users of a
batch together; a cached user then costs one sort. If the catalogue grows
after a user was adapted, their scores are recomputed on the next request.

:func:`load_run` opens either kind of folder; :func:`fit_from_runs` builds an
ensemble from trained runs (what ``metarec ensemble`` does).
"""

from __future__ import annotations

import hashlib
import os
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pandas as pd
import torch

from metarec.data.features import FeatureReaders, feature_readers
from metarec.data.tasks import Task
from metarec.errors import ConfigError, DataError, ModelError, UnsupportedError, why_missing
from metarec.inputs import (
    History,
    ItemKeys,
    adapt_many_args,
    check_new_vectors,
    check_readable_features,
    renamed_users,
    warn_unused_features,
)
from metarec.models.base import check_tasks, check_whole
from metarec.models.ensemble import Ensemble
from metarec.models.members import same_encoder
from metarec.models.meta_model import MetaModel
from metarec.models.persist import is_ensemble_dir, load_recommender
from metarec.ranking import TopK, item_keys
from metarec.recommender import Recommender, UserState
from metarec.trained_users import SPLIT, TRAINED_USERS, recorded_training_users

if TYPE_CHECKING:
    from metarec.data.schema import Dataset

# the service's fold-in says the same
ENSEMBLE_FOLD_IN = (
    "fold-in corrects one run's item biases; an ensemble learns from the stored feedback "
    "by `metarec retrain ENSEMBLE`, which fits every member and the weights again"
)


@dataclass(repr=False)  # UserState's short repr, not every tensor and score
class EnsembleUserState(UserState):
    """A user adapted by every member: the blended catalogue scores, and what produced them."""

    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    features: Mapping[str, Any] | None = None
    # which EnsembleRecommender adapted it: another's blended scores, or its seen
    # indices read in another catalogue of the same size, would pass for this one's
    adapted_by: str = ""


class EnsembleRecommender(TopK):
    """A saved ensemble with :class:`~metarec.recommender.Recommender`'s interface.

    Blended, as a single run does it: :meth:`adapt`, :meth:`adapt_many`, :meth:`score`,
    :meth:`top`, :meth:`recommend`, :meth:`median_ratings` (rating ensembles),
    :meth:`predict_tasks` and :meth:`score_catalogue` (users as a frame of ``user_id``
    and feature columns; the members read features by name, not a run's codes),
    :meth:`add_items` (every member or none), :meth:`save` and :meth:`load` (an
    ensemble folder, as ``metarec ensemble`` writes it).

    From the primary member: ``items``, ``item_index``, :meth:`resolve`,
    :meth:`prepare_items`, :meth:`encoder`, ``features``, ``rating_range``,
    ``popularity``, ``model``, ``cfg``.

    Refused (:class:`UnsupportedError`): :meth:`fold_in_items` (one run's item
    biases; an ensemble learns from feedback by ``metarec retrain``) and adapting with
    ``steps`` (each member adapts with its own). Per-member state (``learner``,
    ``item_offsets``, ``encoder_config``) is each run's: :meth:`metarec_members`.
    A user state works only with the ensemble object that adapted it.
    """

    def __init__(self, ensemble: Ensemble, path: Path | None = None) -> None:
        if not isinstance(ensemble, Ensemble):  # a path given here: 'str' has no 'members'
            raise ConfigError(
                f"ensemble: expected an Ensemble, got {type(ensemble).__name__}; a saved "
                "folder loads with metarec.ensemble_run.load_run(path)"
            )
        names = [n for n, m in ensemble.members.items() if isinstance(m, MetaModel)]
        if not names:
            raise ModelError(
                f"{ensemble.name}: needs a metarec member (for the catalogue and the encoder)"
            )
        self.ensemble = ensemble
        self.path = path
        self.primary_name = names[0]
        self.metadata: dict[str, Any] = dict(ensemble.metadata)
        self.cutpoints = ensemble.cutpoints  # the blend's own (rating ensembles only)
        self.rating_range = self.primary.rating_range
        # stamped on every state this object adapts (see EnsembleUserState.adapted_by)
        self._key = uuid.uuid4().hex
        # changes to its members in place (items added, peers' vectors updated): what
        # is kept from its scores (explain.ensemble_prior) is remade after one
        self.changes = 0

    @classmethod
    def load(cls, directory: str | Path, *, device: str | None = None) -> EnsembleRecommender:
        """The ensemble saved in ``directory`` (:func:`load_run` opens a run folder too)."""
        if not isinstance(directory, str | os.PathLike):
            raise ConfigError(
                f"directory: expected an ensemble folder's path, got {type(directory).__name__}"
            )
        p = Path(directory)
        if run_kind(p) != "ensemble":
            raise ModelError(f"{p}: a run folder, not an ensemble; open it with load_run")
        return cls(Ensemble.load(p, device=device), p)

    def save(self, directory: str | Path) -> Path:
        """Write the ensemble folder (manifest + members) atomically, as ``metarec
        ensemble`` does: one that :meth:`load`, ``recommend`` and ``serve`` open. Items
        added since loading are saved with every member."""
        if not isinstance(directory, str | os.PathLike):
            raise ConfigError(
                f"directory: expected a folder's path, got {type(directory).__name__}"
            )
        # save_ensemble refuses to replace anything but an ensemble folder
        return self.ensemble.save(directory, metadata=self.metadata)

    # -- what comes from the primary member ------------------------------------
    @property
    def primary(self) -> Recommender:
        # looked up each time: Ensemble.add_items may replace members when it rolls back
        model = self.ensemble.members[self.primary_name]
        assert isinstance(model, MetaModel)
        return model._rec()

    def metarec_members(self) -> list[Recommender]:
        return [m._rec() for m in self.ensemble.members.values() if isinstance(m, MetaModel)]

    @property
    def items(self) -> pd.DataFrame:  # type: ignore[override]  # read-only: the primary's
        return self.primary.items

    @property
    def item_index(self) -> dict[str, int]:
        return self.primary.item_index

    @property
    def popularity(self) -> np.ndarray:
        return self.primary.popularity

    @property
    def model(self) -> Any:
        """The primary member's network: explanations read the items' LM vectors from it."""
        return self.primary.model

    @property
    def cfg(self) -> Any:
        return self.primary.cfg

    @property
    def features(self) -> Any:
        """The primary's user-feature encoder (its codes are the primary's own)."""
        return self.primary.features

    @property
    def feature_readers(self) -> FeatureReaders:
        """Every metarec member's user-feature encoder: what :meth:`adapt` checks
        features against, as each member reads its own."""
        return feature_readers(self)

    @property
    def n_items(self) -> int:
        return self.ensemble.n_items

    @property
    def scores_are_ratings(self) -> bool:
        return self.ensemble.mode == "rating"

    def resolve(self, key: str | int) -> int:
        return self.primary.resolve(key)

    def _display(self, idx: int) -> str:
        return self.primary._display(idx)

    def _displays(self) -> list[str]:
        return self.primary._displays()

    def encoder(self) -> Any:
        return self.primary.encoder()

    def prepare_items(self, items: pd.DataFrame, text: Any = None) -> pd.DataFrame:
        """New items checked against the catalogue, their text built as
        :meth:`add_items` encodes it (see :meth:`Recommender.prepare_items`)."""
        return self.primary.prepare_items(items, text)

    # -- adaptation and scoring --------------------------------------------------
    def adapt(
        self,
        history: History | None = None,
        *,
        user_features: Mapping[str, Any] | None = None,
        steps: int | None = None,
    ) -> EnsembleUserState:
        check_readable_features(self.feature_readers, user_features)
        warn_unused_features(self.feature_readers, user_features, "user_features")
        # one user: a bad entry is named "history", not "histories[0]"
        return self._adapt_many([history], [user_features], steps, lambda n: "history")[0]

    def adapt_many(
        self,
        histories: Sequence[History | None],
        user_features: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        steps: int | None = None,
    ) -> list[EnsembleUserState]:
        return self._adapt_many(histories, user_features, steps, lambda n: f"histories[{n}]")

    def _adapt_many(
        self,
        histories: Sequence[History | None],
        user_features: Sequence[Mapping[str, Any] | None] | None,
        steps: int | None,
        where: Callable[[int], str],
    ) -> list[EnsembleUserState]:
        # where(n): how a message names the n-th history
        histories, rows = adapt_many_args(histories, user_features, self.feature_readers)
        if steps is not None:
            raise UnsupportedError(
                "ensemble: each member adapts with its own number of steps; steps cannot be set"
            )
        # the primary validates ratings and resolves titles exactly as a single run does
        pairs = [self.primary._history_pairs(h, where(n)) for n, h in enumerate(histories)]
        states = [
            EnsembleUserState(
                params={},
                seen=np.array([i for i, _ in p], dtype=np.int64),
                user_features=torch.as_tensor(self.primary.features.encode_one(dict(f or {}))),
                n_ratings=len(p),
                history=p,
                features=f,
                adapted_by=self._key,
            )
            for p, f in zip(pairs, rows, strict=True)
        ]
        self._score_states(states)
        return states

    def _score_states(self, states: Sequence[EnsembleUserState]) -> None:
        if not states:
            return
        tasks = [
            Task.support_only(
                [i for i, _ in s.history], np.array([r for _, r in s.history], dtype=np.float32)
            )
            for s in states
        ]
        users = None
        if any(s.features for s in states):
            # synthetic ids: the members look features up by user_id
            users = pd.DataFrame(
                [{**dict(s.features or {}), "user_id": f"_u{n}"} for n, s in enumerate(states)]
            )
        scores = self.ensemble.score_catalogue(tasks, users)
        for s, row in zip(states, scores, strict=True):
            s.scores = row.astype(np.float64)

    def score(self, user: UserState, items: ItemKeys | None = None) -> np.ndarray:
        state = self._check_user(user)
        if len(state.scores) != self.n_items:  # the catalogue grew since: adapt anew
            self._score_states([state])
        items = item_keys(items, "items")
        if items is None:
            return state.scores.copy()  # the caller's to change; the state's stay as adapted
        return state.scores[[self.resolve(i) for i in items]]

    def _check_user(self, user: object) -> EnsembleUserState:
        if not isinstance(user, EnsembleUserState):
            raise DataError(
                f"user: expected the state this ensemble's adapt() returns, got "
                f"{type(user).__name__}"
            )
        if user.adapted_by != self._key:
            # as Recommender._check_user refuses another model's state
            raise DataError(
                "user: this state was adapted by another model (another ensemble, or this "
                "one loaded again); adapt the user with this ensemble"
            )
        return user

    def _user_rows(self, users: object, where: str) -> pd.DataFrame | None:
        if users is None or (isinstance(users, pd.DataFrame) and "user_id" in users.columns):
            return users
        if isinstance(users, np.ndarray | torch.Tensor):
            raise UnsupportedError(
                f"{where}: users: an ensemble's members read user features by name; give a "
                "frame of user_id and feature columns (one row a task), not encoded codes"
            )
        got = (
            f"a DataFrame without one (columns {list(users.columns)[:8]})"
            if isinstance(users, pd.DataFrame)
            else type(users).__name__
        )
        raise DataError(
            f"{where}: users: expected a DataFrame with a user_id column (one row a task) or "
            f"None, got {got}"
        )

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        """Blended scores [len(tasks), n_items] after every member adapts to each
        task's support set (:meth:`Ensemble.score_catalogue`)."""
        rows = self._user_rows(users, "score_catalogue")
        check_tasks(tasks, self.n_items, rows, "score_catalogue")
        if not len(tasks):  # the shape a single run returns for no tasks
            return np.zeros((0, self.n_items), dtype=np.float32)
        return self.ensemble.score_catalogue(list(tasks), rows)

    def predict_tasks(
        self,
        tasks: Sequence[Task],
        users: pd.DataFrame | None = None,
        batch_size: int = 256,
        *,
        user_features: pd.DataFrame | None = None,
    ) -> list[np.ndarray]:
        """Blended query-set predictions after adapting on each task's support set
        (:meth:`Ensemble.predict_tasks`): ratings for a rating ensemble, blended
        standardised scores for a ranking one. ``user_features``: the former name of
        ``users`` (deprecated)."""
        users = renamed_users(users, user_features, "predict_tasks")
        rows = self._user_rows(users, "predict_tasks")
        size = check_whole(batch_size, "predict_tasks: batch_size", 1)
        check_tasks(tasks, self.n_items, rows, "predict_tasks")
        out: list[np.ndarray] = []
        for lo in range(0, len(tasks), size):  # every member scores a chunk at a time
            chunk = list(tasks[lo : lo + size])
            part = None if rows is None else rows.iloc[lo : lo + len(chunk)]
            out.extend(self.ensemble.predict_tasks(chunk, part))
        return out

    def fold_in_items(self, ratings: pd.DataFrame, *, keep_unrated: bool = False) -> dict[str, Any]:
        """Refused: see the class notes (the service's fold-in refuses an ensemble too).
        The run's signature, so that code written for a run gets this answer, not a
        TypeError."""
        raise UnsupportedError(f"fold_in_items: {ENSEMBLE_FOLD_IN}")

    # -- growing the catalogue ---------------------------------------------------
    def check_items(self) -> None:
        """Raise :class:`UnsupportedError` unless every member can take new or updated items."""
        from metarec.models.episodic import EpisodicLinear
        from metarec.models.stacked import StackedRanker
        from metarec.peers.bias import Bias
        from metarec.peers.knn import ContentKNN
        from metarec.peers.popularity import Popularity

        # the ranking models take new items (ranked last until retraining). MeLU is left
        # out though it takes new items with a year or genres: an updated item changes
        # its text and LM vectors only, and MeLU would go on scoring its old features
        ok = (MetaModel, ContentKNN, Popularity, Bias, EpisodicLinear, StackedRanker)
        refusing = [n for n, m in self.ensemble.members.items() if not isinstance(m, ok)]
        if refusing:
            raise UnsupportedError(
                f"{self.ensemble.name}: members {refusing} cannot take new or changed items"
            )

    def add_items(
        self,
        items: pd.DataFrame,
        *,
        text: Any = None,
        vectors: np.ndarray | None = None,
        progress: bool = False,
    ) -> int:
        """Add items to every member (all or none); they are recommendable at once."""
        from metarec.encoders import cached_encode, default_cache

        self.check_items()
        # checked and given text as the primary's catalogue would (members check again)
        frame = self.primary.prepare_items(items, text)
        if vectors is None:
            # the peers need the vectors too: encode once here, with the primary's encoder
            vectors = cached_encode(
                self.encoder(), frame["text"].tolist(), default_cache(), progress=progress
            )
        else:
            vectors = check_new_vectors(vectors, frame["item_id"], self.model.tower.item_vectors)
        self.changes += 1  # before: a failure part way may have changed some members
        self.ensemble.add_items(frame, np.asarray(vectors, dtype=np.float32))
        return len(frame)

    def update_peer_vectors(self, idx: Sequence[int], vectors: np.ndarray) -> None:
        """New LM vectors for existing items, for the members that read them (content
        kNN, the stacked ranker's text similarity); metarec members are updated by the
        caller like single runs."""
        from metarec.models.stacked import StackedRanker
        from metarec.peers.knn import ContentKNN, _unit_rows

        self.check_items()
        try:
            rows = np.asarray(idx, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise DataError(
                f"update_peer_vectors: idx: expected item indices, got {idx!r:.60}"
            ) from None
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_items):
            # -1 would quietly change the last item
            raise DataError(
                f"update_peer_vectors: idx must be item indices in [0, {self.n_items}), got "
                f"{int(rows.min()) if rows.min() < 0 else int(rows.max())}"
            )
        ids = self.items["item_id"].iloc[rows].reset_index(drop=True)
        # NaN rows were made zero vectors, shifting every blended score
        checked = check_new_vectors(
            vectors, ids, self.model.tower.item_vectors, "update_peer_vectors"
        )
        unit = _unit_rows(checked.astype(np.float64))
        self.changes += 1
        for m in self.ensemble.members.values():
            if isinstance(m, ContentKNN) and m.vectors is not None:
                m.vectors[rows] = unit
            elif isinstance(m, StackedRanker) and m.signals is not None:
                # the signals' rows are the universe's items (max_items: the most rated
                # ones), not the catalogue's: row 96 was catalogue item 182's there
                pos = m.universe.position
                inside = rows < len(pos)  # items added since have no signals row
                inside[inside] = pos[rows[inside]] >= 0  # nor items outside the universe
                m.signals.vectors[pos[rows[inside]]] = unit[inside].astype(np.float32)


ServedModel: TypeAlias = Recommender | EnsembleRecommender


# -- opening a folder --------------------------------------------------------------
def run_kind(path: str | Path) -> str:
    """``"ensemble"`` or ``"run"``; :class:`ModelError` with one clear line otherwise."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: {why_missing(p)}")
    if not p.is_dir():
        raise ModelError(f"{p}: not a directory; expected a run folder or an ensemble folder")
    if is_ensemble_dir(p):
        return "ensemble"
    if (p / "recommender.json").is_file():
        return "run"
    if (p / "recommender.json").exists():  # a folder, say: not the unfinished run below
        raise ModelError(
            f"{p / 'recommender.json'}: is not a file; a run's manifest is a JSON file "
            "(damaged? train the run again)"
        )
    if (p / "checkpoint").is_dir():
        raise ModelError(
            f"{p}: an unfinished training run (its checkpoint/ is here, no model yet): run "
            "the same metarec train (or quickstart) again to resume it"
        )
    raise ModelError(
        f"{p}: neither a metarec run (no recommender.json) nor an ensemble (no ensemble.json)"
    )


def load_run(path: str | Path, *, device: str | None = None) -> ServedModel:
    """A run folder as a :class:`Recommender`; an ensemble folder as an
    :class:`EnsembleRecommender`."""
    if not isinstance(path, str | os.PathLike):
        raise ConfigError(f"run: expected a run folder's path, got {type(path).__name__}")
    p = Path(path)
    if run_kind(p) == "ensemble":
        return EnsembleRecommender(Ensemble.load(p, device=device), p)
    return load_recommender(p, device)


# -- building one from trained runs -------------------------------------------------
def run_split(run: Path, rec: Recommender, ds: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The (training, validation) rows ``run`` was trained with, rebuilt from the data.

    ``metarec train`` (default ``--holdout p1``) saves ``split.json``; ``--holdout
    none`` and :func:`metarec.train` hold out a seeded share of users (recorded with
    the run) with its split seed.
    """
    from metarec.pipeline import recorded_validation_split

    holdout = rec.metadata.get("holdout")
    if holdout == "retrain":
        raise ConfigError(
            f"{run}: a retrained run learned from logged feedback that is not in the data; "
            "build ensembles from runs of `metarec train` (an ensemble learns from the "
            "feedback by `metarec retrain ENSEMBLE`)"
        )
    if holdout == "p1" or (run / "split.json").exists():
        from metarec.evaluation.p1 import P1Split

        if not (run / "split.json").exists():
            raise ConfigError(f"{run}: trained with the P1 holdout but split.json is missing")
        split = P1Split.load(run / "split.json", ds)
        return split.frames["train"], split.frames["validation"]
    return recorded_validation_split(ds.interactions, rec.metadata, rec.cfg.seed)


def check_peer_names(peers: Sequence[str]) -> None:
    """Refuse a name that is no peer an ensemble takes, before any other check of the
    peers (a typo was told it "cannot be saved", or that it predicts no rating)."""
    from metarec.models.persist import RANKERS, SAVEABLE
    from metarec.peers import PEERS

    unknown = [p for p in peers if not isinstance(p, str) or (p not in PEERS and p not in RANKERS)]
    if unknown:
        usable = ", ".join(s for s in SAVEABLE if s != "metarec")
        raise ConfigError(f"peers: unknown {unknown}; known peers for an ensemble: {usable}")


def rating_peers() -> list[str]:
    """The peers an ensemble can keep that predict ratings (``predicts_ratings``), which
    alone a rating-mode blend takes."""
    from metarec.models.persist import RANKERS, SAVEABLE
    from metarec.peers import PEERS

    kinds: dict[str, Any] = {**PEERS, **RANKERS}
    return [p for p in SAVEABLE if p in kinds and getattr(kinds[p], "predicts_ratings", False)]


def check_members(runs: Sequence[str | Path], peers: Sequence[str]) -> None:
    """Refuse a run or peer named twice: the same member twice only doubles its share of
    the blend's starting point and its cost, so it is a slip (a shell glob, a pasted list).
    And one member alone: its "ensemble" is that member at weight 1, saved and served as a
    blend of nothing."""
    if len(runs) + len(peers) < 2:
        raise ConfigError(
            f"ensemble: {len(runs)} run and {len(peers)} peers: a blend needs at least two "
            "members (give more runs, or peers with --peers)"
        )
    for what, names in (("run", [str(Path(r).resolve()) for r in runs]), ("peer", list(peers))):
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"ensemble: {what} {repeated[0]} given twice; give each once")
    # a copy of a run (cp -r) is the same member under another name: the two split one
    # model's weight between them. Known by the bytes of the files that make a run (a
    # copy edited since is left for the checks of scale and split to judge); a folder
    # without weights is left for the loading to name
    seen: dict[str, Path] = {}
    for run in map(Path, runs):
        if not (run / "model.safetensors").is_file():
            continue
        sha = hashlib.sha256()
        for name in ("model.safetensors", "recommender.json", SPLIT, TRAINED_USERS):
            sha.update(name.encode() + b"\0")
            if (run / name).is_file():
                with (run / name).open("rb") as f:
                    while chunk := f.read(1 << 20):
                        sha.update(chunk)
        digest = sha.hexdigest()
        if digest in seen:
            raise ConfigError(
                f"ensemble: run {run} holds the same model as {seen[digest]} (a copy?); "
                "give each once"
            )
        seen[digest] = run


def warn_of_unread_features(ds: Dataset, rec: Any, run: str) -> None:
    """Warn where ``rec`` reads user features the data ``ds`` lacks: every user is then
    scored as unknown on them, unlike in training. The data a command reads is its
    first run's: an ensemble or A/B test whose first run was trained without a users
    file learned its weights on, or judged, a run that reads them without them."""
    read = list(rec.features.columns)
    given = set() if ds.users is None else set(ds.users.columns)
    missing = [c for c in read if c not in given]
    if not missing:
        return
    trained = (rec.metadata.get("data_spec") or {}).get("users")
    warnings.warn(
        f"{run} reads the user features {', '.join(missing)}, which the data given "
        "lacks: every user is scored as unknown on them, unlike in training"
        + (f"; give --users {trained}" if trained else "; give the users file (--users)"),
        UserWarning,
        stacklevel=3,
    )


def data_mismatch(ds: Dataset, rec: Recommender | EnsembleRecommender) -> str | None:
    """How ``ds`` cannot be the data ``rec`` was trained on, as far as a run can tell
    (None: it may be): another catalogue, or ratings past the run's scale, which failed
    deep in scoring as "support rating 8 is off the model's scale", naming neither."""
    from metarec.data.spec import added_items

    ids = set(ds.items["item_id"].astype(str))
    held = set(rec.items["item_id"].astype(str))
    # the run may hold more: the items it records as added after training (add_items
    # then save, or the service's through retrain), which no data file lists; such a
    # run was refused as trained on other data
    run = rec.primary if isinstance(rec, EnsembleRecommender) else rec
    added = added_items(run.metadata)
    extra = held - ids - (held if added is None else added)  # older runs: as before
    lacking = ids - held
    if lacking or extra:
        differs = (
            f"the run lacks {len(lacking):,} of its items, such as {min(lacking)!r}"
            if lacking
            else f"the run holds {len(extra):,} items it lacks, such as {min(extra)!r}"
        )
        return (
            f"{ds.name}'s catalogue ({len(ids):,} items) is not the run's ({rec.n_items:,} "
            f"items): {differs}"
        )
    (lo, hi), (run_lo, run_hi) = (tuple(map(float, r)) for r in (ds.rating_range, rec.rating_range))
    if lo < run_lo or hi > run_hi:
        return f"{ds.name}'s ratings are on [{lo:g}, {hi:g}], the run's on [{run_lo:g}, {run_hi:g}]"
    return None


def fit_from_runs(
    runs: Sequence[str | Path],
    ds: Any,
    *,
    peers: Sequence[str] = ("popularity",),
    mode: str = "ranking",
    buckets: Sequence[int] | None = None,
    seed: int = 0,
    device: str | None = None,
    log: Callable[[str], None] | None = print,
    progress: bool = False,
    max_items: int | None = None,
    max_episodes: int | None = None,
    min_bucket_users: int = 20,
) -> Ensemble:
    """Blend trained runs and freshly fitted peers, weights learned on the runs' validation
    users (as the benchmark's ensemble: :meth:`Ensemble.fit` with ``fit_members=False``).
    ``progress``: bars over the episodic ridge's and the stacked ranker's fits;
    ``max_items``: fit those two on that many of the most rated items only
    (:mod:`metarec.models.universe`), for catalogues too large for their dense fits;
    ``max_episodes``: the stacked ranker's trees on that many training episodes a bag;
    ``min_bucket_users``: a bucket judged on fewer validation users takes the weights of
    the bucket below (:class:`Ensemble`);
    ``log``: where the progress lines go (None: nowhere)."""
    from metarec.catalogue import Catalogue
    from metarec.data.cleaning import require_dataset
    from metarec.models.base import ScoringModel, TrainingData, check_seed
    from metarec.models.ensemble import DEFAULT_BUCKETS
    from metarec.models.persist import RANKERS, SAVEABLE, make_ranker
    from metarec.peers import make_peer

    for what, names in (("runs", runs), ("peers", peers)):
        if isinstance(names, str | bytes | Path):  # "run" read letter by letter: "r" twice
            raise ConfigError(f"{what}: expected a list, got {names!r:.60}; write [{names!r:.60}]")
        if not isinstance(names, Sequence):  # None was a raw TypeError
            raise ConfigError(f"{what}: expected a list, got {names!r:.60}")
    if log is None:
        log = _quiet
    elif not callable(log):  # found only after the runs loaded, as a raw TypeError
        raise ConfigError(f"log: expected a function of one line of text or None, got {log!r:.60}")
    if not runs:
        raise ConfigError("ensemble: give at least one run folder")
    usable = ", ".join(s for s in SAVEABLE if s != "metarec")
    check_peer_names(peers)
    folders = [Path(r) for r in runs]  # given as text too, as load_run takes them
    check_members(folders, peers)
    unsaveable = [p for p in peers if p not in SAVEABLE]
    if unsaveable:  # before the slow part
        raise ConfigError(f"peers: {unsaveable} cannot be saved in an ensemble; use {usable}")
    require_dataset(ds)
    from metarec.evaluation.blind_peers import blind_peers

    blind = blind_peers(ds, peers)
    if blind:
        # a constant member standardises to zeros: the blend ranked as the others alone
        # while its weight table gave the bias model 0.9 of a click log's users
        peer, why = next(iter(blind.items()))
        raise ConfigError(
            f"peers: {peer} cannot tell one item from another here: {why}; leave it out"
        )
    check_seed(seed)  # before the runs load and the peers fit, not after
    members: dict[str, ScoringModel] = {}
    splits = []
    primary: Recommender | None = None
    for run in folders:
        if run_kind(run) != "run":
            raise ConfigError(f"{run}: is an ensemble; give the run folders it was built from")
        rec = load_run(run, device=device)
        assert isinstance(rec, Recommender)
        if primary is None:
            primary = rec
            problem = data_mismatch(ds, rec)
            if problem:
                raise ConfigError(f"{run}: {problem}; give the data the run was trained on")
        elif rec.items["item_id"].tolist() != primary.items["item_id"].tolist():
            raise ConfigError(f"{run} and {folders[0]} have different catalogues")
        elif tuple(map(float, rec.rating_range)) != tuple(map(float, primary.rating_range)):
            # blended without a word, then refused at every served rating past the
            # first run's scale ("support rating 10 is off the model's scale [1, 5]")
            shown = [f"[{lo:g}, {hi:g}]" for lo, hi in (rec.rating_range, primary.rating_range)]
            raise ConfigError(
                f"{run} was trained on ratings {shown[0]} and {folders[0]} on {shown[1]}; an "
                "ensemble's runs share one rating scale"
            )
        elif not same_encoder(rec.encoder_config, primary.encoder_config):
            # an item added later is encoded once, by the first run's encoder, for every
            # member: vectors of another model (or width) would not be that member's
            raise ConfigError(
                f"{run} and {folders[0]} encode items with different encoders "
                f"({rec.encoder_config.get('id')!r}, {primary.encoder_config.get('id')!r}); "
                "an ensemble's runs share one encoder"
            )
        warn_of_unread_features(ds, rec, str(run))  # the weights are learned on them
        name = run.resolve().name
        while name in members or name in peers:
            name += "+"
        members[name] = MetaModel.from_recommender(rec, name=name)
        splits.append(run_split(run, rec, ds))
        if rec.metadata.get("best_epoch") == 0:
            # blended as a meta-learned member though it is the bias model in all but its
            # cutpoints: said, as training said it when it kept epoch 0
            untrained = "the bias model" if rec.cfg.objective == "rating" else "popularity"
            log(
                f"note: {run} kept its untrained model (epoch 0: no epoch beat it on its "
                f"validation users), so it adds {untrained} to the blend"
            )
    assert primary is not None
    # runs of other data: a P1 split names its data, but runs trained on every user
    # (--holdout none) were rebuilt from the first run's data and never compared
    trained = [recorded_training_users(run) for run in folders]
    for run, users in zip(folders[1:], trained[1:], strict=True):
        if users is not None and trained[0] is not None and users[0] != trained[0][0]:
            raise ConfigError(
                f"{run} was trained on other users than {folders[0]} ({users[1]}, "
                f"{trained[0][1]}): an ensemble's runs are trained on the same data and split"
            )
    val_users = set(splits[0][1]["user_id"].astype(str))
    for run, (_, val) in zip(folders[1:], splits[1:], strict=True):
        if set(val["user_id"].astype(str)) != val_users:
            raise ConfigError(
                f"{run} was trained with other validation users than {folders[0]}: their weights "
                "would be learned on users some member trained on; train the runs with the "
                "same split (same --holdout, and the same seed or --split-seed)"
            )
    train, validation = splits[0]
    log(
        f"training users: {train['user_id'].nunique():,}; "
        f"validation users (for the weights): {validation['user_id'].nunique():,}"
    )
    catalogue = Catalogue(
        primary.items,
        primary.model.tower.item_vectors.cpu().numpy(),
        # adding items later refuses a changed model; blending the runs needs none
        primary.encoder(changed_ok=True),
    )
    data = TrainingData(train, catalogue, ds.users, validation, primary.rating_range, seed)
    for p in peers:
        # metarec's ranking models (episodic, stacked) are fitted here like peers: they
        # learn from the training users' histories, not from a run
        if p in RANKERS:
            members[p] = make_ranker(
                p,
                seed=seed,
                name=p,
                progress=progress,
                max_items=max_items,
                max_episodes=max_episodes,
            )
        else:
            members[p] = make_peer(p, seed=seed)
    # built before the peers are fitted: a wrong mode or bucket list fails at once
    ens = Ensemble(
        members,
        mode=mode,  # type: ignore[arg-type]
        buckets=tuple(buckets) if buckets is not None else DEFAULT_BUCKETS,
        fit_members=False,
        seed=seed,
        min_bucket_users=min_bucket_users,
    )
    for p in peers:
        log(f"fitting peer {p} ...")
        members[p].fit(data)
    log(f"learning {mode} weights on validation users ...")
    ens.fit(data)
    ens.metadata = {
        "runs": [str(r.resolve()) for r in folders],
        "peers": list(peers),
        "dataset": ds.name,
        "data_spec": primary.metadata.get("data_spec"),
    }
    return ens


def _quiet(line: str) -> None:
    """``log=None``: the progress lines go nowhere."""


def bucket_users_shown(ens: Ensemble) -> list[str] | None:
    """How many validation users chose each bucket's weights, as the tables print it:
    "-" where a bucket took the row above's (the first row has none above: 0, an even
    split no user chose); None for weights that were not learned."""
    counts = ens.bucket_users
    if counts is None:
        return None
    return [("-" if c == 0 and b > 0 else str(c)) for b, c in enumerate(counts)]


def format_weights(ens: Ensemble) -> str:
    """The weight table as text: one row per support-size bucket."""
    table = ens.weight_table()
    names = list(ens.members)
    width = max(8, *(len(n) for n in names))
    users = bucket_users_shown(ens)
    lines = [
        f"{'support':<8}"
        + "".join(f"{n:>{width + 2}}" for n in names)
        + ("  users" if users is not None else "")
    ]
    for b, (bucket, row) in enumerate(table.items()):
        lines.append(
            f"{bucket:<8}"
            + "".join(f"{row[n]:>{width + 2}.2f}" for n in names)
            + (f"  {users[b]:>5}" if users is not None else "")
        )
    return "\n".join(lines)
