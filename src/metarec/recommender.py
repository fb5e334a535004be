"""The fitted artifact: adapt to a user, score, recommend, grow the catalogue, save.

A :class:`Recommender` owns the catalogue (ids, titles, text and frozen LM
vectors), the meta-learned network, the user-feature vocabulary and the
encoder's spec, so it can encode items it has never seen. ``adapt`` turns a
user's history into a small :class:`UserState` (the adapted parameters only);
scoring the catalogue is one batched head call over the cached item
representations.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import torch

from metarec.config import TrainConfig
from metarec.data.columns import check_frame, plain, str_ids
from metarec.data.features import UserFeatureEncoder
from metarec.data.schema import check_like_threshold
from metarec.data.spec import check_recorded
from metarec.data.tasks import Task, TaskBatch, collate
from metarec.device import device_available, resolve_device
from metarec.errors import (
    ConfigError,
    DataError,
    MetarecError,
    ModelError,
    UnknownItemError,
    UnsupportedError,
)
from metarec.io import (
    json_bytes,
    load_json,
    load_tensors,
    nearest_existing,
    require_finite,
    save_tensors,
    write_bytes_atomic,
)
from metarec.meta.inner import Params
from metarec.meta.learner import MetaLearner
from metarec.models.base import check_steps, check_tasks
from metarec.models.cutpoints import RatingCutpoints
from metarec.models.preference import PreferenceNet
from metarec.ranking import TopK, item_keys

FORMAT_VERSION = 1
History: TypeAlias = Iterable[tuple[str, float]] | Mapping[str, float] | pd.DataFrame


@dataclass
class UserState:
    """One user's adapted parameters plus what they have already seen."""

    params: Params  # each tensor with a leading dimension of 1
    seen: np.ndarray  # catalogue indices
    user_features: torch.Tensor  # [F] codes
    n_ratings: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)


class Recommender(TopK):
    """A meta-trained model with its catalogue: adapt a user from a few ratings, then
    score or recommend every item (new items scored from their text). Made by
    :func:`metarec.train`, read back with :meth:`load`; :class:`metarec.models.MetaModel`
    wraps one as a :class:`~metarec.models.base.ScoringModel` for benchmarks and ensembles."""

    def __init__(
        self,
        learner: MetaLearner,
        items: pd.DataFrame,
        *,
        features: UserFeatureEncoder,
        encoder_config: dict[str, Any],
        encoder_tensors: dict[str, torch.Tensor] | None = None,
        popularity: np.ndarray | None = None,
        rating_range: tuple[float, float] = (1.0, 5.0),
        metadata: dict[str, Any] | None = None,
        cutpoints: RatingCutpoints | None = None,
        item_offsets: np.ndarray | None = None,
    ) -> None:
        self.learner = learner.eval()
        # median-rating thresholds (fitted on validation users): what `median_ratings`
        # and P1's MAE use; scores themselves stay the mean prediction
        self.cutpoints = cutpoints
        self.cfg: TrainConfig = learner.cfg
        self.items = items[["item_id", "title", "text"]].reset_index(drop=True).astype(str)
        self._display_cache: tuple[pd.DataFrame, list[str]] | None = None
        self.features = features
        self.encoder_config = encoder_config
        self.encoder_tensors = encoder_tensors or {}
        self.popularity = (
            np.zeros(len(items), dtype=np.float64)
            if popularity is None
            else popularity.astype(np.float64)
        )
        self.rating_range = rating_range
        self.metadata = metadata or {}
        # what new items' first ratings taught us (fold_in_items): added to their scores
        self.item_offsets = (
            np.zeros(len(items), dtype=np.float64)
            if item_offsets is None
            else np.asarray(item_offsets, dtype=np.float64)
        )
        # one value per item each: explanations index popularity by catalogue position
        for name, values in (("popularity", self.popularity), ("item_offsets", self.item_offsets)):
            if values.shape != (len(items),):
                raise ModelError(
                    f"{name} has shape {values.shape}, not one entry for each of {len(items)} items"
                )
        self._encoder: Any = None
        # what an adapted user's parameters look like (no tower parameter that grows
        # with the catalogue is adapted): checked on every score, computed once
        self._fast_shapes = {k: v.shape for k, v in learner.fast_init().items()}
        # the largest code of each user feature (codes 1..c, 0 for unknown), likewise
        self._feature_limits = torch.as_tensor(features.cardinalities, dtype=torch.int64)
        self._reindex()

    # -- catalogue ----------------------------------------------------------
    @property
    def model(self) -> PreferenceNet:
        return self.learner.model

    @property
    def device(self) -> torch.device:
        return self.model.tower.item_vectors.device

    @property
    def n_items(self) -> int:
        return len(self.items)

    def _reindex(self) -> None:
        ids = self.items["item_id"].tolist()
        self.item_index = {item: i for i, item in enumerate(ids)}
        self.title_index: dict[str, int] = {}
        # a title two items share (two editions, a remake of the same year) names
        # neither: resolving it says which ids it could be
        self.shared_titles: dict[str, list[int]] = {}

        def add(key: str, i: int) -> None:
            first = self.title_index.setdefault(key, i)
            if first != i:
                held = self.shared_titles.setdefault(key, [first])
                if i not in held:
                    held.append(i)

        titles = self.items["title"].tolist()
        for i, title in enumerate(titles):
            add(_norm(title), i)
        for i in range(len(self.items)):
            # "Toy Story (1995)" — the form people type — is the text's first sentence;
            # GroupLens' "Lion King, The (1994)" is accepted as well
            head = self._display(i)
            add(_norm(head), i)
            year = re.search(r"\((\d{4})\)$", head)
            if year:
                add(_norm(f"{titles[i]} ({year.group(1)})"), i)
        self._refresh_cache()

    @torch.no_grad()
    def _refresh_cache(self) -> None:
        """Everything adaptation and scoring need from the catalogue, computed once per
        catalogue change instead of once per user."""
        self._h, self._b = self.model.tower(torch.arange(self.n_items, device=self.device))
        if self.item_offsets.any():
            self._b = self._b + torch.as_tensor(
                self.item_offsets, dtype=self._b.dtype, device=self.device
            )
        # scoring (every objective) and the softmax objective's adaptation read these
        # through the scorer, which keeps their item side until the catalogue changes
        self.learner.scorer.catalogue = (self._h, self._b)
        known = torch.nonzero(self.model.tower.id_known).flatten().cpu().numpy()
        # implicit objectives sample support negatives among items seen in training
        self._negative_pool = known if len(known) else np.arange(self.n_items)

    def resolve(self, key: str | int) -> int:
        """Catalogue index of an item id or an exact (case-insensitive) title. An id is
        looked up first: "187" is item 187 even where a film is titled "187" (give its
        title with the year, "187 (1997)", to mean the film)."""
        if isinstance(key, float | np.floating) and float(key).is_integer():
            # as the loaders and add_items write ids: 6000.0 (pandas' reading of an id
            # column with a gap) is item "6000"
            key = int(key)
        skey = str(key)
        if skey in self.item_index:
            return self.item_index[skey]
        hit = self.title_index.get(_norm(skey))
        shared = self.shared_titles.get(_norm(skey))
        if shared:
            ids = [str(self.items["item_id"].iat[i]) for i in shared]
            raise DataError(
                f"title {skey!r} is shared by items {ids[:5]}"
                + (" ..." if len(ids) > 5 else "")
                + "; give the item id"
            )
        if hit is not None:
            return hit
        names = list(self.title_index)
        close = difflib.get_close_matches(_norm(skey), names, n=5, cutoff=0.6)
        # the GroupLens and the display form of one title are two keys of one item
        display = list(dict.fromkeys(self._display(self.title_index[c]) for c in close))
        raise UnknownItemError(skey, display)

    def _display(self, idx: int) -> str:
        # every item's, made once per catalogue: read one at a time from the frame's
        # Arrow-backed columns, ten titles took half of recommend()'s time
        from metarec.explain import display_titles

        if self._display_cache is None or self._display_cache[0] is not self.items:
            self._display_cache = (self.items, display_titles(self))
        return self._display_cache[1][idx]

    # -- adaptation ---------------------------------------------------------
    def _history_pairs(self, history: History | None) -> list[tuple[int, float]]:
        if history is None:
            return []
        if isinstance(history, pd.DataFrame):
            repeated = history.columns[history.columns.duplicated()]
            twice = repeated.intersection(["item_id", "rating"])
            if len(twice):  # history["rating"] would be a frame: "rating 'rating' not a number"
                raise DataError(f"history has two columns named {twice[0]!r}; keep one")
            missing = {"item_id", "rating"} - set(history.columns)
            if missing:
                raise DataError(
                    f"history needs columns item_id and rating; missing {sorted(missing)}"
                )
            rows: Iterable[tuple[Any, Any]] = zip(
                history["item_id"], history["rating"], strict=True
            )
        elif isinstance(history, Mapping):
            rows = history.items()
        elif isinstance(history, (str, bytes)) or not isinstance(history, Iterable):
            # iterating a string would read its characters as entries
            raise DataError(
                f"history: expected (item, rating) pairs, a mapping or a frame, got {history!r:.60}"
            )
        else:
            rows = history
        lo, hi = self.rating_range
        pairs: dict[int, float] = {}
        for n, row in enumerate(rows):
            try:
                key, value = row
            except (TypeError, ValueError):
                raise DataError(
                    f"history entry {n}: expected (item, rating), got {row!r}"
                ) from None
            try:
                if isinstance(value, (bool, np.bool_)):  # True is 1.0 to float(); not a rating
                    raise TypeError
                rating = float(value)
            except (TypeError, ValueError):
                raise DataError(
                    f"history entry {n} ({key!r}): rating {value!r} is not a number"
                ) from None
            if not lo <= rating <= hi:  # NaN fails this too
                raise DataError(
                    f"history entry {n} ({key!r}): rating {rating:g} is "
                    + ("not a number" if rating != rating else f"outside [{lo:g}, {hi:g}]")
                )
            pairs[self.resolve(key)] = rating  # a repeated item keeps its latest rating
        return list(pairs.items())

    def adapt(
        self,
        history: History | None = None,
        *,
        user_features: Mapping[str, Any] | None = None,
        steps: int | None = None,
    ) -> UserState:
        """Adapt the model to a user's ratings (item ids or exact titles).

        An empty history gives the meta-learned prior: the zero-shot model.
        ``user_features``: values this model can read (DataError otherwise: a list, or
        text that is no number where it bins numbers, read as "unknown" without a word);
        keys it does not use (a users-table row's ``user_id``) are skipped.
        """
        check_readable_features(self.features, user_features)
        return self.adapt_many([history], [user_features], steps=steps)[0]

    def adapt_many(
        self,
        histories: Sequence[History | None],
        user_features: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        steps: int | None = None,
    ) -> list[UserState]:
        """:meth:`adapt` for many users in one vmapped call (what a server batches).
        Feature keys the model was not trained with are ignored: a stored profile may
        hold more than one model uses."""
        histories, user_features = adapt_many_args(histories, user_features)
        check_steps(steps)
        all_pairs = [self._history_pairs(h) for h in histories]
        codes = torch.as_tensor(
            np.stack([self.features.encode_one(dict(f or {})) for f in user_features])
            if histories
            else np.zeros((0, len(self.features.columns)), dtype=np.int64),
            device=self.device,
        )
        tasks = [
            Task.support_only([i for i, _ in p], np.array([r for _, r in p], dtype=np.float32))
            for p in all_pairs
        ]
        if not tasks:
            return []
        # users without ratings take zero steps (the prior); batch them apart from the rest
        out: list[UserState | None] = [None] * len(tasks)
        for group in (
            [i for i, t in enumerate(tasks) if len(t.support_items) == 0],
            [i for i, t in enumerate(tasks) if len(t.support_items) > 0],
        ):
            if not group:
                continue
            _, params = self._adapt_tasks([tasks[i] for i in group], codes[group], steps)
            for j, i in enumerate(group):
                out[i] = UserState(
                    {k: v[j : j + 1] for k, v in params.items()},
                    tasks[i].support_items,
                    codes[i],
                    len(all_pairs[i]),
                    all_pairs[i],
                )
        return [s for s in out if s is not None]

    @torch.no_grad()
    def _adapt_tasks(
        self, tasks: Sequence[Task], codes: torch.Tensor, steps: int | None = None
    ) -> tuple[TaskBatch, Params]:
        """Adapt to each task's support ratings → the padded batch and batched params.

        For the implicit objectives the support side is built exactly as in
        meta-training (positives plus seeded sampled negatives); query sets are
        dropped first so that they cannot influence the sampled negatives. Each task
        draws from a generator seeded by the run's seed and its own support items:
        one stream for the batch made a user's scores depend on who else was adapted
        in the same call (a served batch, an evaluation chunk).
        """
        steps = self.cfg.steps_at_eval if steps is None else steps
        if all(len(t.support_items) == 0 for t in tasks):
            steps = 0
        if self.cfg.objective == "rating":
            batch = collate(tasks)
        else:
            support_only = [
                Task.support_only(t.support_items, t.support_ratings, t.user) for t in tasks
            ]
            batch = collate(
                support_only,
                objective=self.cfg.objective,
                negatives=self.cfg.negatives,
                like_threshold=self.cfg.like_threshold,
                negative_pool=self._negative_pool,
                rng=lambda t: np.random.default_rng([self.cfg.seed, *t.support_items.tolist()]),
                support_positives=self.cfg.support_positives,
            )
        batch = batch.to(self.device)
        batch.user_features = codes.to(self.device)
        # the support items' tower outputs come from the catalogue cache, as scoring's do
        reps = (self._h[batch.support_items], self._b[batch.support_items])
        return batch, self.learner.adapt(batch, steps=steps, reps=reps)

    # -- scoring ------------------------------------------------------------
    @torch.no_grad()
    def score(self, user: UserState, items: Sequence[str | int] | None = None) -> np.ndarray:
        """Scores for ``items`` (ids or titles), or for the whole catalogue."""
        self._check_user(user)
        items = item_keys(items, "items")
        scores = self.learner.scorer.scores_over_catalogue(user.params, user.user_features[None])[0]
        out = scores.cpu().numpy()
        if items is None:
            return out
        return out[[self.resolve(i) for i in items]]

    def _check_user(self, user: object) -> None:
        if not isinstance(user, UserState) or not user.params:
            raise DataError(
                f"user: expected the UserState this recommender's adapt() returns, got "
                f"{type(user).__name__}; e.g. rec.recommend(rec.adapt([('Heat (1995)', 5)]))"
            )
        # a state adapted by this model saved and loaded again is fine; another model's
        # has parameters of other shapes, or seen items past this catalogue's end
        shapes = self._fast_shapes
        foreign = user.params.keys() != shapes.keys() or any(
            user.params[k].shape[1:] != shape for k, shape in shapes.items()
        )
        codes = user.user_features
        fits = (
            isinstance(codes, torch.Tensor)
            and codes.shape == self._feature_limits.shape
            and not codes.is_floating_point()
        )
        if fits:  # codes past an embedding's rows were a raw IndexError from torch
            codes = codes.cpu()
            fits = bool(((codes >= 0) & (codes <= self._feature_limits)).all())
        foreign = foreign or not fits
        if foreign or (len(user.seen) and int(np.max(user.seen)) >= self.n_items):
            raise DataError(
                "user: this UserState was adapted by another model (its parameters or "
                "items do not fit this one); adapt the user with this recommender"
            )

    @torch.no_grad()
    def predict_tasks(
        self,
        tasks: Sequence[Task],
        user_features: np.ndarray | pd.DataFrame | None = None,
        batch_size: int = 256,
    ) -> list[np.ndarray]:
        """Query-set predictions after adapting on each task's support set.

        ``user_features``: one row per task, either raw (a frame with
        ``user_id`` and feature columns) or already-encoded codes [n_tasks, F].
        """
        check_tasks(tasks, self.n_items, None, "predict_tasks")
        for n, t in enumerate(tasks):
            q = np.asarray(t.query_items, dtype=np.int64)
            if len(q) and (q.min() < 0 or q.max() >= self.n_items):
                raise DataError(
                    f"predict_tasks: task {n}: a query item is not in [0, {self.n_items})"
                )
        codes_all = self._codes(user_features, len(tasks))
        out: list[np.ndarray] = []
        for lo in range(0, len(tasks), batch_size):
            chunk = list(tasks[lo : lo + batch_size])
            codes = codes_all[lo : lo + len(chunk)]
            batch, params = self._adapt_tasks(chunk, codes)
            if self.cfg.objective != "rating":
                # the adaptation batch holds the support side only (with sampled
                # negatives); the query items are padded here, as given
                batch = collate(chunk).to(self.device)
                batch.user_features = codes
            pred = self.learner.query_scores(batch, params).cpu().numpy()
            # the query path recomputes the tower, which knows nothing of fold-in offsets
            out.extend(
                pred[i, : len(t.query_items)] + self.item_offsets[t.query_items]
                for i, t in enumerate(chunk)
            )
        return out

    def _codes(self, users: np.ndarray | pd.DataFrame | None, n: int) -> torch.Tensor:
        if isinstance(users, pd.DataFrame):
            users = self.features.transform(users, users["user_id"].to_numpy())
        if users is None:
            users = np.zeros((n, len(self.features.columns)), dtype=np.int64)
        codes = np.asarray(users)
        if codes.shape != (n, len(self.features.columns)):
            raise DataError(
                f"users: expected {n} rows of {len(self.features.columns)} feature codes "
                f"(one a task), got shape {codes.shape}"
            )
        return torch.as_tensor(codes, dtype=torch.int64).to(self.device)

    @torch.no_grad()
    def score_catalogue(
        self, tasks: Sequence[Task], users: np.ndarray | pd.DataFrame | None = None
    ) -> np.ndarray:
        """Scores [len(tasks), n_items] after adapting to each task's support set:
        one vmapped adaptation for the batch, one head call over the catalogue."""
        if not len(tasks):  # the shape every peer returns for no tasks
            return np.zeros((0, self.n_items))
        check_tasks(tasks, self.n_items, None, "score_catalogue")
        codes = self._codes(users, len(tasks))
        _, params = self._adapt_tasks(tasks, codes)
        return self.learner.scorer.scores_over_catalogue(params, codes).cpu().numpy()

    # -- growing the catalogue ---------------------------------------------
    def encoder(self) -> Any:
        if self._encoder is None:
            from metarec.encoders import encoder_from_config

            self._encoder = encoder_from_config(
                self.encoder_config, self.encoder_tensors or None, device=str(self.device)
            )
        return self._encoder

    def prepare_items(self, items: pd.DataFrame, text: Any = None) -> pd.DataFrame:
        """New items checked against this catalogue (ids present and unused, some text)
        with their text built as the catalogue's was: what :meth:`add_items` encodes.
        ``text``: the :class:`~metarec.data.text.ItemTextConfig` the catalogue was built
        with; by default the run's ``--text-cols`` (from the CLI), else the default."""
        from metarec.data.text import ItemTextConfig, build_item_text

        if not isinstance(items, pd.DataFrame):
            raise DataError(f"add_items: expected a DataFrame of items, got {type(items).__name__}")
        if "item_id" not in items.columns:
            raise DataError(f"add_items: needs an item_id column; got {list(items.columns)}")
        frame = items.copy().reset_index(drop=True)
        ids = frame["item_id"]
        no_id = ids.isna() | ids.astype(str).str.strip().eq("")
        if no_id.any():
            row = int(np.flatnonzero(no_id.to_numpy())[0])
            raise DataError(f"add_items: row {row}: item_id {plain(ids.iloc[row])!r} is not an id")
        # as the loaders write ids (6000.0 read as a float is "6000"), and without the
        # spaces no lookup would match (the service refuses them too)
        frame["item_id"] = str_ids(ids)
        padded = frame["item_id"].ne(frame["item_id"].str.strip())
        if padded.any():
            row = int(np.flatnonzero(padded.to_numpy())[0])
            raise DataError(
                f"add_items: row {row}: item_id {frame['item_id'].iat[row]!r} starts or ends "
                "with a space"
            )
        dupes = [i for i in frame["item_id"] if i in self.item_index]
        if dupes:
            raise DataError(f"add_items: item ids already in the catalogue: {dupes[:5]}")
        if frame["item_id"].duplicated().any():
            raise DataError("add_items: item ids repeat within the new items")
        for col, default in (("title", ""), ("year", np.nan), ("genres", "")):
            if col not in frame.columns:
                frame[col] = default
        frame["title"] = frame["title"].fillna("").astype(str)
        # genres as a list (as JSON gives them) are joined as the loaders store them
        frame["genres"] = [
            "|".join(map(str, g)) if isinstance(g, (list, tuple)) else g for g in frame["genres"]
        ]
        if text is not None and not isinstance(text, ItemTextConfig):
            raise DataError(f"add_items: text: expected an ItemTextConfig, got {text!r:.60}")
        if text is None:
            # a run trained from files with --text-cols built its text with those columns
            spec = self.metadata.get("data_spec") or {}
            cols = [c.strip() for c in str(spec.get("text_cols") or "").split(",") if c.strip()]
            # but not the file's `text` column: a new item's `text` is its whole text, and
            # filled in as an empty extra column it left an item without one no text
            text = ItemTextConfig(extra=tuple(c for c in cols if c != "text"))
        for col in text.extra:  # a new item may lack some of them: that part is empty
            if col not in frame.columns:
                frame[col] = ""
        if "text" not in frame.columns or frame["text"].isna().any():
            frame["text"] = build_item_text(frame, text)
        frame["text"] = frame["text"].astype(str)  # a text column of numbers is text too
        empty = frame["text"].str.strip() == ""
        if empty.any():
            bad = frame.loc[empty, "item_id"].iloc[0]
            raise DataError(f"add_items: item {bad!r} has no text to encode (title and text empty)")
        return frame

    def add_items(
        self,
        items: pd.DataFrame,
        *,
        text: Any = None,
        vectors: np.ndarray | None = None,
        progress: bool = False,
    ) -> int:
        """Encode new items from their text; they are recommendable at once.

        ``items`` needs ``item_id`` and ``title`` (and whatever text columns the
        text config uses). Returns how many items were added; an id already in
        the catalogue is an error (use a new id for a new item). ``vectors``
        skips encoding when the caller already has the items' LM vectors.
        """
        from metarec.encoders import cached_encode

        frame = self.prepare_items(items, text)
        if vectors is None:
            vectors = cached_encode(self.encoder(), frame["text"].tolist(), None, progress=progress)
        else:
            vectors = check_new_vectors(vectors, frame["item_id"], self.model.tower.item_vectors)
        self.model.tower.extend(torch.as_tensor(np.asarray(vectors, dtype=np.float32)))
        self.items = pd.concat(
            [self.items, frame[["item_id", "title", "text"]].astype(str)], ignore_index=True
        )
        self.popularity = np.concatenate([self.popularity, np.zeros(len(frame))])
        self.item_offsets = np.concatenate([self.item_offsets, np.zeros(len(frame))])
        self._reindex()
        return len(frame)

    def fold_in_items(self, ratings: pd.DataFrame) -> dict[str, Any]:
        """Learn new items' offsets from their first ratings, without retraining.

        ``ratings``: rows of ``user_id``, ``item_id`` (id or exact title) and
        ``rating``, e.g. the service's feedback. Only items the network never
        trained on (added later, or never rated in training) are updated: for
        them the tower knows the text and nothing of how the item was received.
        Each user is adapted to all of their rows, the residual of each rating
        of a new item is taken from that user's adapted prediction, and
        :class:`~metarec.models.item_evidence.ItemEvidence` turns residuals into
        shrunk per-item offsets. Offsets are recomputed from scratch on every
        call, so pass all the feedback, not just the latest. Rating objective
        only: implicit objectives' scores are not on the rating scale.
        """
        from metarec.models.item_evidence import ItemEvidence, fitted_residuals

        if self.cfg.objective != "rating":
            raise UnsupportedError(
                f"fold_in_items corrects predicted ratings; this run's objective is "
                f"{self.cfg.objective!r}, whose scores are not ratings"
            )
        check_rating_frame(ratings, self.rating_range, "fold_in_items")
        rows_by_user: dict[str, list[tuple[Any, Any]]] = {}
        for u, item, r in zip(
            ratings["user_id"].astype(str), ratings["item_id"], ratings["rating"], strict=True
        ):
            rows_by_user.setdefault(u, []).append((item, r))
        # every row is checked before anything changes
        histories = [self._history_pairs(rows) for rows in rows_by_user.values()]
        new_items = self.model.tower.id_known.cpu().numpy() == 0
        # each user adapts to all their ratings; only the new items' ones are evidence
        tasks = []
        for pairs in histories:
            on_new = [(i, r) for i, r in pairs if new_items[i]]
            if on_new:
                task = Task.support_only(
                    [i for i, _ in pairs], np.array([r for _, r in pairs], dtype=np.float32)
                )
                tasks.append(
                    replace(
                        task,
                        query_items=np.array([i for i, _ in on_new], dtype=np.int64),
                        query_ratings=np.array([r for _, r in on_new], dtype=np.float32),
                    )
                )
        previous = self.item_offsets
        if previous[new_items].any():
            # residuals against the text-only score: old offsets must not explain them away
            self.item_offsets = np.where(new_items, 0.0, previous)
            self._refresh_cache()
        try:
            evidence = ItemEvidence.fit(*fitted_residuals(self, tasks), self.n_items)
        except Exception:
            self.item_offsets = previous
            self._refresh_cache()
            raise
        offsets = self.item_offsets.copy()
        offsets[new_items] = evidence.offsets(np.flatnonzero(new_items))
        self.item_offsets = offsets
        self._refresh_cache()
        rated = int((evidence.counts[new_items] > 0).sum())
        return {
            "items_updated": rated,
            "ratings_used": int(evidence.counts.sum()),
            "shrinkage": evidence.shrinkage,
        }

    # -- persistence --------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``items.json`` + ``recommender.json`` into a run
        folder (its other files stay). Each file is written atomically, and
        ``recommender.json``, without which the folder holds no run, goes first and comes
        back last: an interrupted save over an earlier run leaves no run, never the new
        model's tensors beside the old one's description."""
        if not isinstance(directory, (str, os.PathLike)) or not str(directory).strip():
            # "" would be the working folder: a run spilled among whatever is there
            raise DataError(f"save: expected a folder path, got {directory!r:.60}")
        out = Path(directory)
        if out.exists() and not out.is_dir():
            raise ModelError(f"{out}: is a file; save needs a run folder")
        above = nearest_existing(out.parent)
        if not above.is_dir():
            raise ModelError(f"{out}: {above} is a file; save needs a run folder")
        manifest = {
            "format_version": FORMAT_VERSION,
            "config": self.cfg.to_dict(),
            "features": self.features.to_dict(),
            "encoder": self.encoder_config,
            "rating_range": list(self.rating_range),
            "n_items": self.n_items,
            "item_vector_dim": int(self.model.tower.item_vectors.shape[1]),
            "metadata": self.metadata,
            "rating_cutpoints": None if self.cutpoints is None else self.cutpoints.to_dict(),
        }
        try:  # everything that can refuse is checked before a byte is written
            manifest_bytes = json_bytes(manifest, strict=True)
        except (TypeError, ValueError) as exc:
            raise ModelError(
                f"{out}: not saved: metadata must be JSON (strings, numbers, lists, dicts): {exc}"
            ) from None
        items_bytes = json_bytes({c: self.items[c].tolist() for c in ("item_id", "title", "text")})
        tensors = {f"learner.{k}": v for k, v in self.learner.state_dict().items()}
        tensors["popularity"] = torch.as_tensor(self.popularity)
        tensors["item_offsets"] = torch.as_tensor(self.item_offsets)
        tensors.update({f"encoder.{k}": v for k, v in self.encoder_tensors.items()})
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "recommender.json").unlink(missing_ok=True)
            save_tensors(out / "model.safetensors", tensors)
            write_bytes_atomic(out / "items.json", items_bytes)
            write_bytes_atomic(out / "recommender.json", manifest_bytes)
        except OSError as exc:  # read-only, full disk: the run is not there, and says where
            raise ModelError(f"{out}: not saved: {exc.strerror or exc} ({exc.filename})") from None
        return out

    @classmethod
    def load(cls, directory: str | Path, *, device: str | None = None) -> Recommender:
        """The run saved in ``directory``. A damaged or hand-edited run folder (a field
        missing or of the wrong type, tensors of another model) is one ModelError that
        names it, never a traceback from deep inside."""
        try:
            return cls._load(Path(directory), device)
        except MetarecError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
            # RuntimeError: torch's state-dict mismatch, whose message spans many lines
            detail = " ".join(str(exc).split())[:300]
            raise ModelError(
                f"{directory}: not a loadable metarec run ({type(exc).__name__}: {detail})"
            ) from None

    @classmethod
    def _load(cls, path: Path, device: str | None) -> Recommender:
        if not (path / "recommender.json").exists():
            raise ModelError(f"{path}: not a metarec run (no recommender.json)")
        meta = load_json(path / "recommender.json")
        if not isinstance(meta, dict):
            raise ModelError(f"{path / 'recommender.json'}: not a JSON object")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelError(
                f"{path / 'recommender.json'}: format_version {meta.get('format_version')!r} "
                f"is not {FORMAT_VERSION}"
            )
        for part in ("config", "features", "encoder", "metadata"):
            if not isinstance(meta.get(part, {} if part == "metadata" else None), dict):
                raise ModelError(
                    f"{path / 'recommender.json'}: {part}: expected an object, got "
                    f"{meta.get(part)!r:.60} (damaged or edited?)"
                )
        check_recorded(meta.get("metadata", {}), str(path / "recommender.json"))
        try:
            cfg = TrainConfig.from_dict(meta["config"], source=str(path / "recommender.json"))
        except ConfigError as exc:  # the saved values, not the caller's: a damaged run
            raise ModelError(str(exc)) from None
        rating_range = _rating_range(meta.get("rating_range"), path)
        if cfg.like_threshold is not None:
            # training refuses a threshold off the scale; one edited in afterwards made
            # every item unliked: precision 0 and NaN recall in evaluate, without a word
            try:
                check_like_threshold(cfg.like_threshold, rating_range, "like_threshold")
            except ConfigError as exc:
                raise ModelError(
                    f"{path / 'recommender.json'}: config.{exc} (damaged or edited?)"
                ) from None
        if device is not None:
            cfg.device = device
        elif not device_available(cfg.device):
            # a run trained on a GPU server stays servable on a CPU machine; a device
            # passed here is taken strictly instead
            warnings.warn(
                f"{path}: trained for device {cfg.device!r}, which this machine lacks; "
                "loading it with device 'auto'",
                RuntimeWarning,
                stacklevel=2,
            )
            cfg.device = "auto"
        items = _read_items(path / "items.json")
        tensors = load_tensors(path / "model.safetensors")
        require_finite(tensors, path / "model.safetensors")
        state = {k[len("learner.") :]: v for k, v in tensors.items() if k.startswith("learner.")}
        vectors = state["model.tower.item_vectors"]
        if len(items) != vectors.shape[0]:
            raise ModelError(
                f"{path}: items.json has {len(items)} items, the model {vectors.shape[0]}"
            )
        _check_counts(meta, len(items), int(vectors.shape[1]), path / "recommender.json")
        features = UserFeatureEncoder.from_dict(
            meta["features"], source=str(path / "recommender.json")
        )
        learner = build_learner(vectors, cfg, features, offset=float(state["model.user.offset"]))
        learner.load_state_dict(state)
        learner.to(resolve_device(cfg.device))
        enc_tensors = {
            k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")
        }
        return cls(
            learner,
            items,
            features=features,
            encoder_config=meta["encoder"],
            encoder_tensors=enc_tensors,
            popularity=_item_array(tensors, "popularity", len(items), path),
            # runs saved before fold-in existed have no offsets: all zero
            item_offsets=(
                _item_array(tensors, "item_offsets", len(items), path)
                if "item_offsets" in tensors
                else None
            ),
            rating_range=rating_range,
            metadata=meta.get("metadata", {}),
            cutpoints=(
                None
                if meta.get("rating_cutpoints") is None
                else RatingCutpoints.from_dict(
                    meta["rating_cutpoints"], source=str(path / "recommender.json")
                )
            ),
        )


def check_new_vectors(
    vectors: object, ids: pd.Series, catalogue: torch.Tensor, where: str = "add_items"
) -> np.ndarray:
    """New items' LM vectors as float32 [len(ids), width], or a DataError naming the item
    whose vector cannot be one: of another width, not numbers, NaN, or of a length no
    vector of this encoder has (1e30 everywhere scored 1e28 on a 1-5 scale and topped
    every list)."""
    try:
        arr = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: vectors: expected numbers, got {vectors!r:.60}") from None
    want = (len(ids), catalogue.shape[1])
    if arr.shape != want:
        raise DataError(
            f"{where}: vectors of shape {arr.shape}; expected {want} "
            "(one row per new item, the encoder's width)"
        )
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        item = ids.iloc[int(np.flatnonzero(bad)[0])]
        raise DataError(f"{where}: the vector of item {item!r} holds NaN or infinite values")
    norms = np.linalg.norm(arr, axis=1)
    # a sentence encoder's vectors have length 1; an encoder's own outputs never stray
    # 100 times past the longest in the catalogue
    limit = 100.0 * max(float(catalogue.detach().norm(dim=1).max()), 1.0)
    if (norms > limit).any():
        row = int(np.flatnonzero(norms > limit)[0])
        raise DataError(
            f"{where}: the vector of item {ids.iloc[row]!r} has length {norms[row]:.3g}, "
            f"beyond {limit:.3g}: not a vector of this run's encoder"
        )
    return arr.astype(np.float32)


def check_features(user_features: object, where: str = "user_features") -> None:
    if user_features is not None and not isinstance(user_features, Mapping):
        raise DataError(
            f"{where}: expected a mapping such as {{'age': 25}}, got {user_features!r:.60}"
        )


def check_rating_frame(ratings: object, rating_range: tuple[float, float], where: str) -> None:
    """``ratings`` a DataFrame of user_id, item_id, rating (each column once) whose every
    row has a user, an item and a rating on the scale, or a DataError naming the first
    row that does not, by position, user and rating: training on a 9 of a 1-5 scale,
    or a NaN, went on without a word (a NaN only to end as "training diverged")."""
    ratings = check_frame(ratings, where, ("user_id", "item_id", "rating"))
    twice = sorted({str(c) for c in ratings.columns[ratings.columns.duplicated()]})
    if twice:  # which of the two is the rating? pandas would hand over both
        raise DataError(f"{where}: column(s) {twice} appear more than once")
    # compared as float32, the precision ratings are trained in: a rating clipped to the
    # top of a continuous scale (4.7) and then stored as float32 reads a hair above it
    lo, hi = np.float32(rating_range[0]), np.float32(rating_range[1])
    values = pd.to_numeric(ratings["rating"], errors="coerce").to_numpy(dtype=np.float32)
    # True is 1.0 to to_numeric: a flag, not a rating (only object columns mix them)
    column = ratings["rating"]
    flags = (
        column.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
        if column.dtype == object
        else np.full(len(column), pd.api.types.is_bool_dtype(column.dtype))
    )
    problems = (
        (ratings["user_id"].isna().to_numpy(), "no user_id"),
        (ratings["item_id"].isna().to_numpy(), "no item_id"),
        (flags, "a boolean, not a rating"),
        (~((values >= lo) & (values <= hi)), f"rating outside [{lo:g}, {hi:g}] or not a number"),
    )
    for bad, what in problems:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            user, rating = (plain(ratings[c].iloc[row]) for c in ("user_id", "rating"))
            raise DataError(f"{where}: row {row} (user_id {user!r}, rating {rating!r}): {what}")


def check_readable_features(encoder: UserFeatureEncoder, user_features: object) -> None:
    """:func:`check_features`, and every value of a key the model uses one it can read."""
    check_features(user_features)
    if user_features:
        unreadable = encoder.problem(user_features, json_types=False)  # type: ignore[arg-type]
        if unreadable is not None:
            raise DataError(f"user_features: {unreadable}")


def adapt_many_args(
    histories: object, user_features: object
) -> tuple[list[Any], list[Mapping[str, Any] | None]]:
    """``adapt_many``'s arguments as lists of one entry a user, or a DataError saying
    which is wrong: shared by a run and an ensemble, so both refuse alike."""
    if (
        histories is None
        or isinstance(histories, (str, bytes, Mapping, pd.DataFrame))
        or not isinstance(histories, Iterable)
    ):
        raise DataError(
            f"adapt_many: expected a list of histories (one a user), got {histories!r:.60}"
        )
    histories = list(histories)  # a generator too
    if user_features is None:
        return histories, [None] * len(histories)
    if isinstance(user_features, (str, bytes, Mapping)) or not isinstance(user_features, Iterable):
        raise DataError(
            f"user_features: expected one mapping (or None) a user, got {user_features!r:.60}"
        )
    rows = list(user_features)
    for n, f in enumerate(rows):
        check_features(f, f"user_features[{n}]")
    if len(rows) != len(histories):
        raise DataError(f"adapt_many: {len(histories)} histories but {len(rows)} feature rows")
    return histories, rows


def _read_items(path: Path) -> pd.DataFrame:
    """``items.json`` as :meth:`Recommender.save` writes it: columns of text, one entry
    per item in each. A hand-edited or damaged file is a ModelError naming the column
    and entry (pandas said "All arrays must be of the same length", or read a number
    as an id no request could name)."""
    raw = load_json(path)
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: expected an object of columns, got {type(raw).__name__}")
    n = None
    for col in ("item_id", "title", "text"):
        values = raw.get(col)
        if not isinstance(values, list):
            raise ModelError(f"{path}: {col} must be a list, one entry per item (damaged?)")
        if n is not None and len(values) != n:
            raise ModelError(
                f"{path}: {col} has {len(values)} entries, item_id {n} (damaged or edited?)"
            )
        n = len(values)
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise ModelError(
                f"{path}: {col}[{bad}] is {values[bad]!r:.40}, not text (damaged or edited?)"
            )
    # no request can name an empty id: it loaded, and the item surfaced later as an
    # "unknown item" nobody asked for
    blank = next((i for i, v in enumerate(raw["item_id"]) if not v.strip()), None)
    if blank is not None:
        raise ModelError(
            f"{path}: item_id[{blank}] is {raw['item_id'][blank]!r}, an empty id "
            "(damaged or edited?)"
        )
    items = pd.DataFrame(raw)
    repeated = items["item_id"][items["item_id"].duplicated()]
    if len(repeated):  # the second of two items with one id no request could reach
        raise ModelError(f"{path}: item_id {repeated.iloc[0]!r} is repeated (damaged or edited?)")
    return items


def build_learner(
    vectors: torch.Tensor, cfg: TrainConfig, features: UserFeatureEncoder, offset: float
) -> MetaLearner:
    model = PreferenceNet(vectors, cfg.model, features.cardinalities, offset=offset)
    return MetaLearner(model, cfg)


def _check_counts(meta: dict, n_items: int, dim: int, source: Path) -> None:
    """The manifest's counts agree with the files they describe. They are written for
    readers of the JSON, not read back; one that disagrees or is not a count means the
    manifest was edited or belongs to another run, so it is refused rather than ignored."""
    encoder = meta["encoder"]
    for where, raw, actual in (
        ("n_items", meta.get("n_items", n_items), n_items),
        ("item_vector_dim", meta.get("item_vector_dim", dim), dim),
        ("encoder.dim", encoder.get("dim", 1), None),
    ):
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise ModelError(
                f"{source}: {where}: expected a positive whole number, got {raw!r:.60}"
            )
        if actual is not None and raw != actual:
            raise ModelError(f"{source}: {where} says {raw}; the run's files hold {actual}")


def _item_array(
    tensors: dict[str, torch.Tensor], name: str, n_items: int, path: Path
) -> np.ndarray:
    """One value per catalogue item from ``model.safetensors``, or a ModelError naming the
    tensor: a popularity cut short was indexed past its end by the explanations
    (IndexError) or, with --no-reasons, served without a word."""
    source = path / "model.safetensors"
    if name not in tensors:
        raise ModelError(f"{source}: no tensor {name!r} (damaged or edited?)")
    values = tensors[name]
    if values.ndim != 1 or len(values) != n_items:
        raise ModelError(
            f"{source}: {name}: expected one value per item ({n_items}), got shape "
            f"{tuple(values.shape)} (damaged or edited?)"
        )
    array = values.numpy()  # cast to float64 once, by the constructor
    # popularity is a count of training ratings: a negative one (or a NaN in an integer
    # tensor require_finite does not read) is no run's
    if name == "popularity" and not (np.isfinite(array).all() and (array >= 0).all()):
        bad = int(np.flatnonzero(~(np.isfinite(array) & (array >= 0)))[0])
        raise ModelError(
            f"{source}: popularity[{bad}] is {array[bad]:g}; expected a count of ratings, "
            ">= 0 (damaged or edited?)"
        )
    return array


def _rating_range(raw: Any, path: Path) -> tuple[float, float]:
    ok = isinstance(raw, list) and len(raw) == 2
    lo, hi = (float(raw[0]), float(raw[1])) if ok else (math.nan, math.nan)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ModelError(
            f"{path / 'recommender.json'}: rating_range must be [low, high] with low <= high, "
            f"got {raw!r}"
        )
    return lo, hi


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip().casefold()
