"""The fitted artifact: adapt to a user, score, recommend, grow the catalogue, save.

A :class:`Recommender` owns the catalogue (ids, titles, text and frozen LM
vectors), the meta-learned network, the user-feature vocabulary and the
encoder's spec, so it can encode items it has never seen. ``adapt`` turns a
user's history into a small :class:`UserState` (the adapted parameters only);
scoring the catalogue is one batched head call over the cached item
representations.

Checks on what callers pass in live in :mod:`metarec.inputs` (an ensemble applies the
same ones); the run folder's format, written by ``save`` and read by ``load``, lives
in :mod:`metarec.run_folder`.
"""

from __future__ import annotations

import bisect
import difflib
import re
import time
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from metarec.config import TrainConfig
from metarec.data.columns import plain, repeated_rating, str_ids
from metarec.data.features import UserFeatureEncoder
from metarec.data.spec import ADDED_ITEMS, recorded_item_text
from metarec.data.tasks import Task, TaskBatch, collate
from metarec.data.text import ItemTextConfig, blank
from metarec.errors import (
    ConfigError,
    DataError,
    EncoderUnavailableError,
    MetarecError,
    ModelError,
    UnknownItemError,
    UnsupportedError,
    outside_metarec,
)
from metarec.inputs import (
    History,
    ItemKeys,
    adapt_many_args,
    check_feature_codes,
    check_features,
    check_new_vectors,
    check_rating_frame,
    check_readable_features,
    check_users_frame,
    history_pairs,
    renamed_users,
    warn_unused_features,
)
from metarec.io import tensors_digest
from metarec.meta.inner import Params
from metarec.meta.learner import MetaLearner
from metarec.models.base import check_steps, check_tasks, check_whole
from metarec.models.cutpoints import RatingCutpoints
from metarec.models.preference import PreferenceNet
from metarec.ranking import TopK, item_keys, seen_indices
from metarec.run_folder import FORMAT_VERSION, build_learner, read_run, save_run
from metarec.values import counted

# the checks and the run-folder names lived here before they had modules of their
# own, and code outside metarec (the tests among it) still imports them from here
__all__ = [
    "FORMAT_VERSION",
    "History",
    "Recommender",
    "UserState",
    "adapt_many_args",
    "build_learner",
    "check_features",
    "check_new_vectors",
    "check_rating_frame",
    "check_readable_features",
]


@dataclass(repr=False)
class UserState:
    """One user's adapted parameters plus what they have already seen."""

    params: Params  # each tensor with a leading dimension of 1
    seen: np.ndarray  # catalogue indices
    user_features: torch.Tensor  # [F] codes
    n_ratings: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)
    # the inner steps it was adapted with, where not the run's own (adapt(steps=...)):
    # what an explanation adapts it again with, leaving out one rating at a time
    steps: int | None = None
    # the model that adapted it (a digest of the meta-learned start it adapted from):
    # another run's state of the same shapes was scored as this one's without a word.
    # Empty for a state made by hand, which the shapes alone check
    adapted_by: str = ""

    def __repr__(self) -> str:
        # the dataclass's printed every parameter tensor: a thousand characters for one
        # user in a notebook
        size = sum(int(t.numel()) for t in self.params.values())
        return (
            f"{type(self).__name__}(n_ratings={self.n_ratings}, "
            f"seen={counted(len(self.seen), 'item')}, "
            f"params={counted(len(self.params), 'tensor')} of {counted(size, 'value')})"
        )


class Recommender(TopK):
    """A meta-trained model with its catalogue: adapt a user from a few ratings, then
    score or recommend every item (new items scored from their text). Made by
    :func:`metarec.train`, read back with :meth:`load`; :class:`metarec.models.meta_model.MetaModel`
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
        # filled by _reindex
        self.item_index: dict[str, int] = {}
        self.title_index: dict[str, int] = {}
        self.shared_titles: dict[str, list[int]] = {}
        self._loose_title_items: dict[str, list[int]] = {}
        self._loose_id_items: dict[str, list[int]] = {}
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
        self._encoder_changed: str | None = None  # why its model is not the run's
        self._encoder_judged = 0.0  # when (time.monotonic) it was judged
        # what an adapted user's parameters look like (no tower parameter that grows
        # with the catalogue is adapted): checked on every score, computed once
        self._fast_shapes = {k: v.shape for k, v in learner.fast_init().items()}
        self._digest: str | None = None  # _start_digest's, taken at its first call
        # the largest code of each user feature (codes 1..c, 0 for unknown), likewise
        self._feature_limits = torch.as_tensor(features.cardinalities, dtype=torch.int64)
        self._reindex()

    # -- catalogue ----------------------------------------------------------
    @property
    def model(self) -> PreferenceNet:
        """The meta-trained network (item tower, user head) that scores the catalogue."""
        return self.learner.model

    @property
    def device(self) -> torch.device:
        """Where the model and the catalogue's item vectors are (see :meth:`load`)."""
        return self.model.tower.item_vectors.device

    @property
    def n_items(self) -> int:
        """How many items the catalogue holds, added ones included."""
        return len(self.items)

    @property
    def scores_are_ratings(self) -> bool:
        return self.cfg.objective == "rating"

    def _reindex(self, appended: int = 0) -> None:
        """Index the catalogue's ids and titles for :meth:`resolve`. ``appended``: only
        the last ``appended`` rows are new (``add_items``), and only they are indexed:
        indexing a whole catalogue's titles again made adding one item take 1.7 s at
        100,000 items (``benchmarks/results/scale-review-e57f980/``), paid for every item
        added through the service, which holds its write lock meanwhile."""
        n = len(self.items)
        start = n - appended if 0 < appended <= n else 0
        # the rows indexed alone: both whole columns as lists cost an append 30 ms at
        # 150,000 items
        ids = [None] * start + self.items["item_id"].iloc[start:].tolist()
        if start == 0:
            # built aside and published at the end: the service reads item_index without
            # its lock (an event's item check), and a rebuild in place (an item updated)
            # showed it half filled, refusing items that exist as unknown
            item_index: dict[str, int] = {}
            title_index: dict[str, int] = {}
            # a title two items share (two editions, a remake of the same year) names
            # neither: resolving it says which ids it could be
            shared_titles: dict[str, list[int]] = {}
            # looked up only when nothing above matches, and only where one item has the
            # key: the displayed title without its year ("The Shawshank Redemption"), and
            # an id as typed without its stray spaces or in another Unicode form (an id
            # " spaced " could not be given on a command line, which strips the spaces)
            loose_title_items: dict[str, list[int]] = {}
            loose_id_items: dict[str, list[int]] = {}
            self._display_cache = None  # titles may have changed in place (an update)
        else:  # an append only adds keys, which a reader sees whole or not at all
            item_index, title_index = self.item_index, self.title_index
            shared_titles = self.shared_titles
            loose_title_items, loose_id_items = self._loose_title_items, self._loose_id_items
        heads = self._display_titles_from(start)

        def add(key: str, i: int) -> None:
            first = title_index.setdefault(key, i)
            if first != i:
                held = shared_titles.setdefault(key, [first])
                # an item's keys are added together, so a repeat is the last entry: a
                # membership test of the list made 32,000 items of one title quadratic
                if held[-1] != i:
                    held.append(i)

        titles = [None] * start + self.items["title"].iloc[start:].tolist()
        touched_titles: set[str] = set()
        touched_ids: set[str] = set()
        for i in range(start, len(ids)):
            keys, loose = _title_keys(str(titles[i]), heads[i])
            for key in keys:
                add(key, i)
            if loose is not None:
                loose_title_items.setdefault(loose, []).append(i)
                touched_titles.add(loose)
            key = _loose_id(str(ids[i]))
            if key != ids[i]:
                loose_id_items.setdefault(key, []).append(i)
                touched_ids.add(key)
            # the id last: a reader that finds it finds the item's titles too
            item_index[ids[i]] = i
        self.title_index, self.shared_titles = title_index, shared_titles
        self._loose_title_items, self._loose_id_items = loose_title_items, loose_id_items
        # a key names an item where one item has it; an append changes the keys it added
        # alone (rebuilt whole, 50 ms an added item at 150,000 items). An exact id wins
        # in resolve before loose_ids is read
        self.loose_titles: dict[str, int] = _single_owners(
            loose_title_items, touched_titles, self.loose_titles if start else None
        )
        self.loose_ids: dict[str, int] = _single_owners(
            loose_id_items, touched_ids, self.loose_ids if start else None
        )
        self.item_index = item_index
        self._refresh_cache()

    def _retitle(self, idx: Sequence[int], titles: Sequence[str], texts: Sequence[str]) -> None:
        """New titles and texts for catalogue items ``idx``, whose LM vectors the caller
        has already replaced: only their title keys and cached (h, b) are made anew.
        Re-indexing the whole catalogue made updating one item of 150,000 take 2.9 s,
        under the service's write lock. Ids stay, so ``item_index`` does not change."""
        from metarec.explain import display_title

        heads = list(self._displays())  # a copy: lists handed out stay as they were
        shared, first = self.shared_titles, self.title_index
        loose_items, touched = self._loose_title_items, set()
        now: dict[int, tuple[str, str]] = {}  # written to the frame at once, at the end
        for i, title, text in zip(map(int, idx), map(str, titles), map(str, texts), strict=True):
            was = now[i][0] if i in now else str(self.items.at[i, "title"])
            old_keys, old_loose = _title_keys(was, heads[i])
            for key in old_keys:
                _drop_owner(first, shared, key, i)
            if old_loose is not None:
                loose_items[old_loose].remove(i)
                if not loose_items[old_loose]:
                    del loose_items[old_loose]
                touched.add(old_loose)
            now[i] = (title, text)
            heads[i] = display_title(title, text)
            keys, loose = _title_keys(title, heads[i])
            for key in keys:
                _add_owner(first, shared, key, i)
            if loose is not None:
                bisect.insort(loose_items.setdefault(loose, []), i)
                touched.add(loose)
        rows = list(now)
        self.items.loc[rows, "title"] = [now[i][0] for i in rows]
        self.items.loc[rows, "text"] = [now[i][1] for i in rows]
        self.loose_titles = _single_owners(loose_items, touched, self.loose_titles)
        self._display_cache = (self.items, heads)
        with torch.no_grad():
            at = torch.as_tensor(rows, dtype=torch.int64, device=self.device)
            h, b = tower_rows(self.learner.scorer, at)
            self._h[at], self._b[at] = h, b
        # the direct path's catalogue side is derived from (h, b): built again when used
        self.learner.scorer.catalogue = (self._h, self._b)

    def _display_titles_from(self, start: int) -> list[str]:
        """Every item's display title, those from ``start`` on made anew (the ones before
        kept from the cache, which an append leaves valid)."""
        from metarec.explain import display_titles

        kept = self._display_cache[1][:start] if self._display_cache is not None else []
        if len(kept) != start:  # no cache to extend: all of them
            kept, start = [], 0
        heads = kept + display_titles(self, range(start, self.n_items))
        self._display_cache = (self.items, heads)
        return heads

    @torch.no_grad()
    def _refresh_cache(self) -> None:
        """Everything adaptation and scoring need from the catalogue, computed once per
        catalogue change instead of once per user."""
        offsets = None
        if self.item_offsets.any():
            dtype = next(self.model.parameters()).dtype
            offsets = torch.as_tensor(self.item_offsets, dtype=dtype, device=self.device)
        # every item bias the scorer computes gets them: the cached catalogue's, and the
        # query items' and an adapted tower's (adapt="all"), which it computes anew
        self.learner.scorer.item_offsets = offsets
        self._h, self._b = catalogue_tower(self.learner.scorer, self.n_items, self.device)
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
        number = isinstance(key, int | float | np.integer | np.floating)
        flag = isinstance(key, bool | np.bool_)
        odd = isinstance(key, float | np.floating) and not np.isfinite(key)
        if flag or odd or not (isinstance(key, str) or number):
            # str(None) and str(True) were looked up as titles: "unknown item 'None';
            # close matches: 'Nixon (1995)'" sent people hunting for a film
            kind = "NaN or infinite" if odd else "None" if key is None else type(key).__name__
            raise DataError(
                f"item {key!r:.60}: an item is named by its id or title (text or a "
                f"number), not {kind}"
            )
        if isinstance(key, float | np.floating) and float(key).is_integer():
            # as the loaders and add_items write ids: 6000.0 (pandas' reading of an id
            # column with a gap) is item "6000"
            key = int(key)
        skey = str(key)
        if skey in self.item_index:
            return self.item_index[skey]
        # an id as typed, with stray spaces or decomposed letters, is still an id and
        # comes before titles: " 187" is item 187, not the film titled "187"
        typed = _loose_id(skey)
        loose = self.item_index.get(typed, self.loose_ids.get(typed))
        if loose is not None:
            return loose
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
        loose = self.loose_titles.get(_norm(skey))
        if loose is not None:
            return loose
        close = _close_matches(_norm(skey), self.title_index)
        # the GroupLens and the display form of one title are two keys of one item
        display = list(dict.fromkeys(self._display(self.title_index[c]) for c in close))
        # a title with no close match said only "unknown item 'X'", as if ids were not tried
        raise UnknownItemError(
            skey,
            [*self._same_number(skey), *self._other_case(typed), *display],
            why="no item has this id or title",
        )

    def _other_case(self, typed: str) -> list[str]:
        """Ids that are ``typed`` in another letter case (an ISBN's "x" for "X"). Ids are
        matched as written, unlike titles: two ids may differ only in case. Looked for
        on a miss only, so a catalogue's lookups keep no case-folded copy of every id."""
        folded = typed.casefold()
        ids = self.items["item_id"].astype(str)
        return ids[ids.str.casefold() == folded].tolist()[:3]

    def _same_number(self, key: str) -> list[str]:
        """Ids that write ``key``'s number another way ("007" for 7): ids are text, so
        --rate 7=1 met only "unknown item '7'" where the catalogue has "007"."""
        if not _WHOLE_NUMBER.fullmatch(key):
            return []
        number = _whole(key)
        ids = self.items["item_id"].astype(str)
        numeric = ids[ids.str.fullmatch(_WHOLE_NUMBER.pattern)]
        return [i for i in numeric if _whole(i) == number][:3]

    def _display(self, idx: int) -> str:
        return self._displays()[idx]

    def _displays(self) -> list[str]:
        """Every item's display title, made once per catalogue (and for the rows an
        append adds): read one at a time from the frame's Arrow-backed columns, ten
        titles took half of recommend()'s time. The list is the model's: do not change."""
        if self._display_cache is None or self._display_cache[0] is not self.items:
            return self._display_titles_from(0)
        return self._display_cache[1]

    # -- adaptation ---------------------------------------------------------
    def _history_pairs(
        self, history: History | None, where: str = "history"
    ) -> list[tuple[int, float]]:
        return history_pairs(history, self.rating_range, self.resolve, where)

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
        text, a boolean or infinity where it bins numbers, read as "unknown" or a wrong
        bin without a word); keys it does not use are skipped, with a UserWarning that
        names them (a misspelt ``"agee"``), but for a users-table row's ``user_id``.
        :meth:`adapt_many` and :meth:`predict_tasks`' users table check values alike.
        """
        check_readable_features(self.features, user_features)
        warn_unused_features(self.features, user_features, "user_features")
        # one user: a bad entry is named "history", not "histories[0]"
        return self._adapt_many([history], [user_features], steps, lambda n: "history")[0]

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
        return self._adapt_many(histories, user_features, steps, lambda n: f"histories[{n}]")

    def _adapt_many(
        self,
        histories: Sequence[History | None],
        user_features: Sequence[Mapping[str, Any] | None] | None,
        steps: int | None,
        where: Callable[[int], str],
    ) -> list[UserState]:
        # where(n): how a message names the n-th history
        histories, user_features = adapt_many_args(histories, user_features, self.features)
        check_steps(steps)
        all_pairs = [self._history_pairs(h, where(n)) for n, h in enumerate(histories)]
        codes = torch.as_tensor(
            np.stack([self.features.encode_one(dict(f or {})) for f in user_features])
            if histories
            else np.zeros((0, len(self.features.columns)), dtype=np.int64),
            device=self.device,
        )
        return self._states(all_pairs, codes, steps)

    def without_ratings(self, user: UserState) -> UserState:
        """The state ``user`` would have with no ratings: the prior, for their features
        (which are not ratings, so an explanation measures what the ratings did from
        here)."""
        self._check_user(user)
        return self._states([[]], user.user_features.to(self.device)[None], None)[0]

    def _states(
        self, all_pairs: Sequence[list[tuple[int, float]]], codes: torch.Tensor, steps: int | None
    ) -> list[UserState]:
        """One adapted state per user: their (catalogue index, rating) pairs and feature
        codes [users, F]."""
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
                    # the user's own copy: with zero steps these are the live model's
                    # parameters, which an in-place change to either would have changed
                    # in both (and copy.deepcopy refused, as they required grad)
                    {k: v[j : j + 1].detach().clone() for k, v in params.items()},
                    tasks[i].support_items,
                    codes[i],
                    len(all_pairs[i]),
                    all_pairs[i],
                    steps,
                    self._start_digest(),
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
            # in item order where negatives are sampled: they, seeded by the support
            # items, and the pairs BPR forms depend on the set a user rated, not on the
            # order given (softmax samples none, and sums over the support as it is)
            sampled = self.cfg.objective in ("bce", "bpr")
            support_only = []
            for t in tasks:
                items, ratings = t.support_items, t.support_ratings
                if sampled:
                    order = np.argsort(items, kind="stable")
                    items, ratings = items[order], ratings[order]
                support_only.append(Task.support_only(items, ratings, t.user))
            batch = collate(
                support_only,
                objective=self.cfg.objective,
                negatives=self.cfg.negatives,
                like_threshold=self.cfg.like_threshold,
                negative_pool=self._negative_pool,
                rng=lambda t: np.random.default_rng([self.cfg.seed, *t.support_items.tolist()]),
                support_positives=self.cfg.support_rule(),
            )
        batch = batch.to(self.device)
        batch.user_features = codes.to(self.device)
        # the support items' tower outputs come from the catalogue cache, as scoring's do
        reps = (self._h[batch.support_items], self._b[batch.support_items])
        return batch, self.learner.adapt(batch, steps=steps, reps=reps)

    # -- scoring ------------------------------------------------------------
    @torch.no_grad()
    def score(self, user: UserState, items: ItemKeys | None = None) -> np.ndarray:
        """Scores for ``items`` (ids or titles), or for the whole catalogue."""
        self._check_user(user)
        items = item_keys(items, "items")
        # the items' rows alone: three items of 500,000 took the whole catalogue's 200 ms
        rows = None
        if items is not None:
            if not items:  # no rows: a reshape of 0 elements in the head
                return np.zeros(0, dtype=np.float32)
            rows = torch.tensor([self.resolve(i) for i in items], dtype=torch.int64)
            rows = rows.to(self.device)
        # a state from another device (pickled on a GPU machine, read on a CPU one) is
        # moved to the model's; free where it is there already
        params = {k: v.to(self.device) for k, v in user.params.items()}
        codes = user.user_features.to(self.device)[None]
        scores = self.learner.scorer.scores_over_catalogue(params, codes, rows)
        return scores[0].cpu().numpy()

    def _check_user(self, user: object) -> None:
        if not isinstance(user, UserState) or not user.params:
            raise DataError(
                f"user: expected the UserState this recommender's adapt() returns, got "
                f"{type(user).__name__}; e.g. rec.recommend(rec.adapt([(item_id, rating), ...]))"
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
        seen = seen_indices(user.seen)
        if foreign or (len(seen) and int(seen.max()) >= self.n_items):
            raise DataError(
                "user: this UserState was adapted by another model (its parameters or "
                "items do not fit this one); adapt the user with this recommender"
            )
        if user.adapted_by and user.adapted_by != self._start_digest():
            raise DataError(
                "user: this UserState was adapted by another model (another run, or this "
                "one trained again); adapt the user with this recommender"
            )

    def _start_digest(self) -> str:
        """A digest of the meta-learned start every user adapts from: the same for the
        same run loaded twice (or on another device), another for another run. Taken
        once, as the start is fixed once trained (adding items changes none of its
        tensors): every score checks a state against it. A start edited in place by
        hand keeps the old digest, which lets its states through rather than refusing."""
        if self._digest is None:
            self._digest = tensors_digest(self.learner.fast_init())[:16]
        return self._digest

    @torch.no_grad()
    def predict_tasks(
        self,
        tasks: Sequence[Task],
        users: np.ndarray | pd.DataFrame | None = None,
        batch_size: int = 256,
        *,
        user_features: np.ndarray | pd.DataFrame | None = None,
    ) -> list[np.ndarray]:
        """Query-set predictions after adapting on each task's support set.

        ``users``: one row per task, either raw (a frame with ``user_id`` and feature
        columns, each value one :meth:`adapt` could read) or already-encoded codes
        [n_tasks, F]. ``batch_size``: tasks adapted per call. ``user_features``: the
        former name of ``users`` (deprecated).
        """
        users = renamed_users(users, user_features, "predict_tasks")
        # support ratings off the scale (100 on 1-5 stars) moved the model as no
        # rating can; query items, lengths and whole indices are checked there too
        check_tasks(tasks, self.n_items, None, "predict_tasks", rating_range=self.rating_range)
        batch_size = check_whole(batch_size, "predict_tasks: batch_size", 1)
        codes_all = self._codes(users, len(tasks), "users")
        out: list[np.ndarray] = []
        for lo in range(0, len(tasks), batch_size):
            chunk = list(tasks[lo : lo + batch_size])
            if not any(len(t.query_items) for t in chunk):  # nothing to predict: no batch
                # (a chunk of empty queries met a reshape of 0 elements in the scorer)
                out.extend(np.zeros(0, dtype=np.float32) for _ in chunk)
                continue
            codes = codes_all[lo : lo + len(chunk)]
            batch, params = self._adapt_tasks(chunk, codes)
            if self.cfg.objective != "rating":
                # the adaptation batch holds the support side only (with sampled
                # negatives); the query items are padded here, as given
                batch = collate(chunk).to(self.device)
                batch.user_features = codes
            # the scorer adds fold-in offsets to the query items' biases it computes
            pred = self.learner.query_scores(batch, params).cpu().numpy()
            out.extend(pred[i, : len(t.query_items)] for i, t in enumerate(chunk))
        return out

    def _codes(self, users: np.ndarray | pd.DataFrame | None, n: int, where: str) -> torch.Tensor:
        """Feature codes [n, F] for ``n`` tasks from a users table or from codes, checked
        (``where`` names the argument) before any reaches an embedding."""
        if users is None:
            codes = np.zeros((n, len(self.features.columns)), dtype=np.int64)
        elif isinstance(users, pd.DataFrame):
            check_users_frame(self.features, users, n, where)
            # row i is task i: looked up by position, not by user_id, which may repeat
            rows = np.arange(n)
            codes = self.features.transform(users.assign(user_id=rows), rows)
        else:
            codes = check_feature_codes(self.features, users, n, where)
        return torch.as_tensor(codes, dtype=torch.int64).to(self.device)

    @torch.no_grad()
    def score_catalogue(
        self, tasks: Sequence[Task], users: np.ndarray | pd.DataFrame | None = None
    ) -> np.ndarray:
        """Scores [len(tasks), n_items] after adapting to each task's support set:
        one vmapped adaptation for the batch, one head call over the catalogue."""
        if not len(tasks):  # the shape every peer returns for no tasks
            return np.zeros((0, self.n_items))
        check_tasks(tasks, self.n_items, None, "score_catalogue", rating_range=self.rating_range)
        codes = self._codes(users, len(tasks), "users")
        _, params = self._adapt_tasks(tasks, codes)
        return self.learner.scorer.scores_over_catalogue(params, codes).cpu().numpy()

    # -- growing the catalogue ---------------------------------------------
    @property
    def encoder_changed(self) -> str | None:
        """Why the run's encoder, as last rebuilt by :meth:`encoder`, is not the model the
        run was saved with (None: it is, or it was not rebuilt yet)."""
        return self._encoder_changed

    def encoder(self, *, changed_ok: bool = False) -> Any:
        """The encoder the catalogue was encoded with, rebuilt from the run's config: what
        new items are encoded by. Its model gone, or changed since the run was saved
        (a model folder retrained in place), is an :class:`EncoderUnavailableError`: new
        items' vectors would come from other weights than every other item's, and were
        added with a warning alone. ``changed_ok``: a changed model is taken (retrain,
        which encodes the whole catalogue anew, says so instead)."""
        if self._encoder_changed is not None and time.monotonic() - self._encoder_judged > 5.0:
            # judged again, the model may have been restored since; not at every call,
            # as judging a folder reads all of it (a refused PUT held the item lock)
            self._encoder = None
        if self._encoder is None:
            from metarec.encoders import encoder_from_config
            from metarec.encoders.base import changed_model

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # judged just below
                    built = encoder_from_config(
                        self.encoder_config, self.encoder_tensors or None, device=str(self.device)
                    )
            except ModelError as exc:
                raise EncoderUnavailableError(
                    f"the run's encoder cannot be rebuilt to encode new items: {exc}"
                ) from None
            self._encoder_changed = changed_model(
                self.encoder_config.get("id"), built.id, getattr(built, "former_ids", None)
            )
            self._encoder_judged = time.monotonic()
            self._encoder = built
        if self._encoder_changed is not None and not changed_ok:
            raise EncoderUnavailableError(
                f"the run's encoder: {self._encoder_changed}; restore the model the run was "
                "trained with, or retrain the run (metarec retrain encodes its catalogue anew)"
            )
        return self._encoder

    def prepare_items(self, items: pd.DataFrame, text: Any = None) -> pd.DataFrame:
        """New items checked against this catalogue (ids present and unused, some text)
        with their text built as the catalogue's was: what :meth:`add_items` encodes.
        ``text``: the :class:`~metarec.data.text.ItemTextConfig` the catalogue was built
        with; by default the run's (:func:`~metarec.data.spec.recorded_item_text`)."""
        from metarec.data.generic import read_years
        from metarec.data.schema import check_table
        from metarec.data.text import (
            LIST_TYPES,
            dated_catalogue,
            fill_item_text,
            join_lists,
            normalise_genres,
            title_and_year,
        )

        # a MultiIndex's "item_id" is a tuple: the items were added with NaN ids and
        # titles, and the run then saved could not be loaded
        check_table(items, "add_items")
        twice = sorted({str(c) for c in items.columns[items.columns.duplicated()]})
        if twice:  # frame[col] would be a frame: an AttributeError deep in pandas
            raise DataError(f"add_items: column(s) {twice} appear more than once; keep one")
        renames = self._file_columns(items)
        frame = items.rename(columns=renames).reset_index(drop=True)
        for theirs in renames:
            # kept under the file's name too, as the loader keeps it: a column that is
            # the genres and one of --text-cols (a category) is in the text twice, and a
            # new item lacking it there was encoded unlike every item trained on
            frame[theirs] = items[theirs].to_numpy()
        if "item_id" not in frame.columns:
            raise DataError(
                f"add_items: needs an item_id column (or the id column of the file the run "
                f"was trained on); got {list(items.columns)}"
            )
        ids = frame["item_id"]
        no_id = ids.isna() | ids.astype(str).str.strip().eq("")
        # True was stored as the id "True", ["b"] as "['b']": ids no request could name
        not_one = ids.map(lambda v: isinstance(v, (bool, np.bool_, *LIST_TYPES, Mapping)))
        # a NUL or an escape: invisible in every listing, and the service refuses them
        hidden = ids.astype(str).str.contains(r"[\x00-\x1f\x7f-\x9f]", regex=True)
        for bad, what in ((no_id, "is not an id"), (not_one, "is not one number or text"),
                          (hidden, "holds a control character")):  # fmt: skip
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(f"add_items: row {row}: item_id {plain(ids.iloc[row])!r} {what}")
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
        if text is not None and not isinstance(text, ItemTextConfig):
            raise DataError(f"add_items: text: expected an ItemTextConfig, got {text!r:.60}")
        if text is None:  # as the run's data was laid out (--text-cols, --text-template)
            text = recorded_item_text(self.metadata.get("data_spec"))
        textual = ["title", "genres", "text", *text.extra]
        _refuse_non_text(frame, textual)
        for col in dict.fromkeys(textual):
            if col != "genres" and col in frame.columns:
                # as the loaders read a file's lists and objects (an authors list, a
                # details object): their items joined, not their repr
                frame[col] = join_lists(frame[col], ", ")
        self._warn_of_ids_that_are_titles(frame["item_id"])
        frame["title"] = frame["title"].fillna("").astype(str)
        # as the loaders read an items file: a year column of dates (or Unix times) as
        # their years, which the text left out, and genres as a list or separated by
        # | , or ; joined by |, so that "science; interview" reads as two genres
        # "Matrix Redux (1999)" beside 1999 is read as a file's row is: once in the text,
        # not "Matrix Redux (1999) (1999)"
        frame["title"], frame["year"] = title_and_year(
            frame["title"],
            read_years(frame, "add_items"),
            "add_items",
            dated=dated_catalogue(self.items["text"]),  # the run's titles, not the batch's
        )
        frame["genres"] = normalise_genres(frame["genres"])
        _warn_of_unread(items, frame, renames, text.extra)
        for col in text.extra:  # a new item may lack some of them: that part is empty
            if col not in frame.columns:
                frame[col] = ""
        # only items without a text get one built: the others keep their own
        frame["text"] = fill_item_text(frame, text)  # a text column of numbers is text too
        empty = frame["text"].str.strip() == ""
        if empty.any():
            bad = frame.loc[empty, "item_id"].iloc[0]
            raise DataError(f"add_items: item {bad!r} has no text to encode (title and text empty)")
        return frame

    def _warn_of_ids_that_are_titles(self, ids: pd.Series) -> None:
        """A new id that is another item's title takes that title over, as typed (ids are
        looked up first) but not in other letter cases: "Heat (1995)" became the new
        item while "heat (1995)" stayed the film, without a word."""
        for new_id in ids:
            old = self.title_index.get(_norm(new_id))
            if old is not None:
                warnings.warn(
                    f"add_items: item id {new_id!r} is the title of item "
                    f"{str(self.items['item_id'].iat[old])!r}: written as this id it names "
                    "the new item from now on (ids are looked up before titles); name "
                    "the other by its id",
                    stacklevel=outside_metarec(),
                )
                return

    def _file_columns(self, items: pd.DataFrame) -> dict[str, str]:
        """Renames from the item file's own column names (``--items-id-col``/``--item-col``,
        ``--title-col``, ``--genre-col``, ``--year-col`` of a run trained from files) to
        metarec's, for the columns ``items`` lacks under metarec's name: new rows in
        the shape of the file the run was trained on are taken as they are."""
        spec = self.metadata.get("data_spec") or {}
        renames: dict[str, str] = {}
        for key, ours in (("item_id_col", "item_id"), ("item_col", "item_id"),
                          ("title_col", "title"), ("genre_col", "genres"),
                          ("year_col", "year")):  # fmt: skip
            theirs = spec.get(key)
            taken = ours in items.columns or ours in renames.values()
            # a file column of one of metarec's names (an id column called "title") is
            # read as metarec reads that name, not moved to another
            ours_too = theirs in ("item_id", "title", "genres", "year", "text")
            if isinstance(theirs, str) and theirs in items.columns and not (taken or ours_too):
                renames[theirs] = ours
        return renames

    def _refuse_two_names(self, ratings: pd.DataFrame, user: str, rows: list) -> None:
        """A DataError: ``user``'s ``rows`` name one item twice (an id and its title, or
        an id with stray spaces), which the text comparison of ids did not see."""
        at = np.flatnonzero(ratings["user_id"].astype(str).to_numpy() == user)
        first: dict[int, int] = {}
        for n, (item, _) in zip(at, rows, strict=True):
            i = self.resolve(item)
            if i in first:
                was = rows[int(np.searchsorted(at, first[i]))][0]
                raise DataError(
                    f"fold_in_items: user {user!r} rated item {self.items['item_id'].iat[i]!r} "
                    f"more than once (rows {first[i]} and {n}, as {was!r} and {item!r}); give "
                    "each user's latest rating of an item once"
                )
            first[i] = int(n)

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
        from metarec.encoders import cached_encode, default_cache

        frame = self.prepare_items(items, text)
        if vectors is None:
            vectors = cached_encode(
                self.encoder(), frame["text"].tolist(), default_cache(), progress=progress
            )
        else:
            vectors = check_new_vectors(vectors, frame["item_id"], self.model.tower.item_vectors)
        self.model.tower.extend(torch.as_tensor(np.asarray(vectors, dtype=np.float32)))
        self.items = pd.concat(
            [self.items, frame[["item_id", "title", "text"]].astype(str)], ignore_index=True
        )
        # recorded, so that the run's data (which lacks them) is still known for its own,
        # and retrain keeps them: see metarec.data.spec.ADDED_ITEMS
        # (a run saved before they were recorded stays one: its earlier additions are
        # unknown, and recording these alone would make them look like other data)
        if ADDED_ITEMS in self.metadata:
            recorded = list(self.metadata.get(ADDED_ITEMS) or [])
            self.metadata[ADDED_ITEMS] = recorded + frame["item_id"].astype(str).tolist()
        self.popularity = np.concatenate([self.popularity, np.zeros(len(frame))])
        self.item_offsets = np.concatenate([self.item_offsets, np.zeros(len(frame))])
        self._reindex(appended=len(frame))
        return len(frame)

    def fold_in_items(self, ratings: pd.DataFrame, *, keep_unrated: bool = False) -> dict[str, Any]:
        """Learn new items' offsets from their first ratings, without retraining.

        ``ratings``: rows of ``user_id``, ``item_id`` (id or exact title) and
        ``rating``, e.g. the service's feedback. Only items the network never
        trained on (added later, or never rated in training) are updated: for
        them the tower knows the text and nothing of how the item was received.
        Each user is adapted to all of their rows, the residual of each rating
        of a new item is taken from that user's adapted prediction, and
        :class:`~metarec.models.item_evidence.ItemEvidence` turns residuals into
        shrunk per-item offsets. Offsets are recomputed from scratch on every
        call, so pass all the feedback, not just the latest: a new item no row
        rates gets offset 0, even one an earlier call (or the saved run) gave an
        offset, and a call with no rating of a new item (an empty frame) sets
        them all to 0. That is what keeps a served model a function of run and
        feedback store (the service folds in at every load, from all stored
        feedback); so that such a loss is never silent, a RuntimeWarning names
        the items whose earlier offsets were dropped. ``keep_unrated=True``
        leaves the offsets of new items no row rates as they are: the service folds
        in its store's feedback so, and a run's own offsets (from a fold-in in
        Python, saved with it) stay beside it. One rating per user and item: a pair
        given twice is refused, as no order of rows says which one is the user's latest.
        Rating objective only: implicit objectives' scores are not on the rating scale.
        """
        from metarec.models.item_evidence import ItemEvidence, fitted_residuals

        if self.cfg.objective != "rating":
            raise UnsupportedError(
                f"fold_in_items corrects predicted ratings; this run's objective is "
                f"{self.cfg.objective!r}, whose scores are not ratings"
            )
        if not isinstance(keep_unrated, bool):
            raise ConfigError(f"keep_unrated: expected True or False, got {keep_unrated!r:.40}")
        check_rating_frame(ratings, self.rating_range, "fold_in_items")
        # rows by position, as check_rating_frame names them
        repeated = repeated_rating(ratings, positions=True)
        if repeated is not None:
            # one of them was kept by row order: the same feedback in another order gave
            # an item's offset the other sign
            user, item, rows = repeated
            raise DataError(
                f"fold_in_items: user {user!r} rated item {item!r} more than once (rows "
                f"{rows[0]} and {rows[1]}); give each user's latest rating of an item once"
            )
        rows_by_user: dict[str, list[tuple[Any, Any]]] = {}
        for u, item, r in zip(
            ratings["user_id"].astype(str), ratings["item_id"], ratings["rating"], strict=True
        ):
            rows_by_user.setdefault(u, []).append((item, r))
        # every row is checked before anything changes
        histories = [self._history_pairs(rows) for rows in rows_by_user.values()]
        for (user, rows), pairs in zip(rows_by_user.items(), histories, strict=True):
            if len(pairs) < len(rows):  # one item named twice: by its id and its title
                self._refuse_two_names(ratings, user, rows)
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
        # the items recomputed: every new one, or those rated here when the others keep
        # theirs (no user adapted here rated those, so their offsets explain no residual)
        redone = new_items.copy()
        if keep_unrated:
            rated_here = np.zeros(self.n_items, dtype=bool)
            for task in tasks:
                rated_here[task.query_items] = True
            redone &= rated_here
        if previous[redone].any():
            # residuals against the text-only score: old offsets must not explain them away
            self.item_offsets = np.where(redone, 0.0, previous)
            self._refresh_cache()
        try:
            evidence = ItemEvidence.fit(*fitted_residuals(self, tasks), self.n_items)
        except Exception:
            self.item_offsets = previous
            self._refresh_cache()
            raise
        offsets = self.item_offsets.copy()
        offsets[redone] = evidence.offsets(np.flatnonzero(redone))
        self.item_offsets = offsets
        self._refresh_cache()
        _warn_dropped(self.items["item_id"], previous, redone & (evidence.counts == 0))
        rated = int((evidence.counts[new_items] > 0).sum())
        return {
            "items_updated": rated,
            "ratings_used": int(evidence.counts.sum()),
            # none where no rating chose it (the largest tried, 1e9, read as a finding)
            "shrinkage": evidence.shrinkage if evidence.counts.sum() else None,
        }

    # -- persistence --------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``items.json`` + ``recommender.json`` into a run
        folder (its other files stay). Each file is written atomically, and
        ``recommender.json``, without which the folder holds no run, goes first and comes
        back last: an interrupted save over an earlier run leaves no run, never the new
        model's tensors beside the old one's description."""
        return save_run(self, directory)

    @classmethod
    def load(cls, directory: str | Path, *, device: str | None = None) -> Recommender:
        """The run saved in ``directory``. A damaged or hand-edited run folder (a field
        missing or of the wrong type, tensors of another model) is one ModelError that
        names it, never a traceback from deep inside."""
        try:
            return read_run(cls, Path(directory), device)
        except MetarecError:
            raise
        except OSError as exc:  # a name too long, a folder unreadable: a bare OSError
            detail = exc.strerror or exc
            raise ModelError(f"{directory!s:.300}: cannot be read ({detail})") from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
            # RuntimeError: torch's state-dict mismatch, whose message spans many lines
            detail = " ".join(str(exc).split())[:300]
            raise ModelError(
                f"{directory}: not a loadable metarec run ({type(exc).__name__}: {detail})"
            ) from None


def _warn_dropped(ids: pd.Series, previous: np.ndarray, unrated: np.ndarray) -> None:
    """Warn when a fold-in set to 0 offsets learned before (items no row rated): by the
    from-scratch rule that is right for feedback given in full, and a lost fold-in
    when a caller passed only the latest feedback, or none by mistake."""
    dropped = np.flatnonzero(unrated & (previous != 0))
    if len(dropped):
        names = [str(ids.iat[i]) for i in dropped[:5]]
        warnings.warn(
            f"fold_in_items: {len(dropped)} item(s) with an offset from earlier feedback "
            f"have no rating here, so their offsets are now 0: {names}"
            + (" ..." if len(dropped) > 5 else "")
            + "; offsets are recomputed from the ratings given: pass all the feedback",
            RuntimeWarning,
            stacklevel=3,
        )


def _title_keys(title: str, head: str) -> tuple[list[str], str | None]:
    """The keys an item's title is looked up by, and its loose key (the display title
    without its year), which names it only where no other item has it."""
    # "Toy Story (1995)" — the form people type — is the text's first sentence;
    # GroupLens' "Lion King, The (1994)" is accepted as well
    key = _norm(title)
    year = _TRAILING_YEAR.search(head)
    if not year:
        return [key, _norm(head)], None
    # folding spaces and case, and composing, stop at a space: the year's key is the
    # title's with " (1995)" added, and the head is most often just that (halves the
    # normalising of a 150,000-item catalogue's titles)
    dated = f"{key} ({year.group(1)})" if key else f"({year.group(1)})"
    if head == f"{title} ({year.group(1)})":
        return [key, dated], key
    return [key, _norm(head), dated], _norm(head[: year.start()])


def _drop_owner(first: dict[str, int], shared: dict[str, list[int]], key: str, i: int) -> None:
    """Item ``i`` no longer has title key ``key`` (see :meth:`Recommender._retitle`)."""
    held = shared.get(key)
    if held is None:
        if first.get(key) == i:
            del first[key]
        return
    if i in held:
        held.remove(i)
    first[key] = held[0]
    if len(held) == 1:  # one owner left: the key names it
        del shared[key]


def _add_owner(first: dict[str, int], shared: dict[str, list[int]], key: str, i: int) -> None:
    """Item ``i`` has title key ``key``; owners stay in catalogue order, as a whole
    re-index lists them, so the first is the same either way."""
    owner = first.setdefault(key, i)
    if owner == i and key not in shared:
        return
    held = shared.setdefault(key, [owner])
    if i not in held:
        bisect.insort(held, i)
    first[key] = held[0]


def _single_owners(
    items: dict[str, list[int]], touched: set[str], kept: dict[str, int] | None
) -> dict[str, int]:
    """Key → item for the keys one item has: all of them anew (``kept`` None), or
    ``kept`` updated for the ``touched`` keys, copied so a reader sees it whole."""
    if kept is None:
        return {k: v[0] for k, v in items.items() if len(v) == 1}
    out = dict(kept)
    for key in touched:
        if len(items.get(key, ())) == 1:
            out[key] = items[key][0]
        else:
            out.pop(key, None)
    return out


# rows of the item tower per call when the catalogue is computed: one input shape
# whatever the catalogue's size (see catalogue_tower)
CATALOGUE_CHUNK = 4096


def catalogue_tower(
    scorer: Any, n_items: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tower's (h, b) for every item (:func:`tower_rows` of them all)."""
    return tower_rows(scorer, torch.arange(n_items, device=device))


def tower_rows(scorer: Any, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The tower's (h, b) for the items at ``rows``, in chunks of
    :data:`CATALOGUE_CHUNK` rows (or of the power of two fewer rows fit in), the last
    padded with its final row. On the CPU torch's oneDNN keeps compiled code for each
    input shape it meets (up to 1,024 of them): a catalogue computed whole at each size,
    as a service adding one item per request does, grew the process by about 3 MB per
    item added, to some 3 GB; updated items, 1 to 500 a request, grew it too. Here
    there are 13 shapes at most."""
    n = len(rows)
    if n == 0:
        return scorer.tower_out(rows)
    chunk = min(CATALOGUE_CHUNK, 1 << (n - 1).bit_length())
    hs, bs = [], []
    for start in range(0, n, chunk):
        part = rows[start : start + chunk]
        kept = len(part)
        if kept < chunk:
            part = torch.cat([part, part[-1:].expand(chunk - kept)])
        h, b = scorer.tower_out(part)
        hs.append(h[:kept])
        bs.append(b[:kept])
    if len(hs) == 1:
        return hs[0].contiguous(), bs[0].contiguous()
    return torch.cat(hs), torch.cat(bs)


def _norm(text: str) -> str:
    """A title as looked up: spaces collapsed, case folded, Unicode composed (NFC): an
    "Amélie" typed decomposed was unknown, with itself offered as the close match."""
    # split() and strip() take the whitespace re's \s does; ASCII is composed already.
    # Four of these an item made loading a 150,000-item run take 2.5 s
    folded = " ".join(str(text).split()).casefold()
    return folded if folded.isascii() else unicodedata.normalize("NFC", folded)


# past this many title keys, close matches are looked for among the titles sharing a
# word with what was typed: difflib over every title took 0.7 s at 100,000 items
_ALL_TITLES_SCANNED = 20_000


def _close_matches(key: str, titles: dict[str, int]) -> list[str]:
    """Up to five titles like ``key`` (difflib's ratio ≥ 0.6): over every title of a
    small catalogue; in a large one, over those that share one of its three longest
    words (of three letters or more), since a title that shares none is rarely close."""
    names: Iterable[str] = titles
    if len(titles) > _ALL_TITLES_SCANNED:
        words = sorted(set(re.findall(r"\w{3,}", key)), key=len, reverse=True)[:3]
        # a short title ("Up", "21") has no such word: its two-letter ones, else all
        words = words or sorted(set(re.findall(r"\w{2,}", key)))[:3]
        if words:
            names = [t for t in titles if any(w in t for w in words)]
    return difflib.get_close_matches(key, list(names), n=5, cutoff=0.6)


# a display title's year at its end: "Toy Story (1995)"
_TRAILING_YEAR = re.compile(r"\((\d{4})\)$")

# an id written as a whole number: "7", "007", "7.0"
_WHOLE_NUMBER = re.compile(r"[+-]?\d{1,18}(\.0*)?")


def _whole(text: str) -> int:
    """The whole number a :data:`_WHOLE_NUMBER` id writes, exactly (float() rounds past
    2**53, and named another id)."""
    return int(text.split(".")[0])


def _loose_id(item: str) -> str:
    return unicodedata.normalize("NFC", item).strip()


def _warn_of_unread(
    items: pd.DataFrame, frame: pd.DataFrame, renames: Mapping[str, str], extra: Sequence[str]
) -> None:
    """Warn of what ``add_items`` leaves out of new items' text: a column it does not
    read (a "blurb" beside a run's "description"), and a text column of the run that
    items without a ``text`` of their own lack. Both were silent, and the items were
    encoded from their titles alone, unlike every item the run trained on."""
    read = {"item_id", "title", "year", "genres", "text", *extra, *renames}
    unread = [str(c) for c in items.columns if str(c) not in read and not str(c).startswith("_")]
    if unread:
        fields = ", ".join(["item_id", "title", "year", "genres", *extra])
        warnings.warn(
            f"add_items: column(s) {unread} not read: a new item is read from its {fields} "
            "and text columns (or the run's file's names for the first four, where these "
            "are absent); its text is built from them unless 'text' gives the whole text",
            stacklevel=outside_metarec(),
        )
    lacking = [c for c in extra if c not in frame.columns]
    given = frame["text"] if "text" in frame.columns else pd.Series("", index=frame.index)
    if lacking and blank(given).any():  # the items whose text fill_item_text builds
        warnings.warn(
            f"add_items: the run's item text has column(s) {lacking} too, which the new "
            "items lack: their text leaves that part out",
            stacklevel=outside_metarec(),
        )


def _refuse_non_text(frame: pd.DataFrame, columns: Iterable[str]) -> None:
    """DataError naming the first row whose text field is bytes or a truth value: bytes
    failed deep in pandas (a UnicodeDecodeError) and True was encoded as the word
    "True". A number is text ("1984" read from a file); lists and objects are joined
    as the loaders join them (:func:`~metarec.data.text.join_lists`)."""
    for col in dict.fromkeys(columns):
        if col not in frame.columns:
            continue
        values = frame[col]
        if pd.api.types.is_bool_dtype(values.dtype):
            bad = np.ones(len(values), dtype=bool)
        elif values.dtype == object:  # numbers or pandas' strings hold none of these
            kinds = values.map(lambda v: isinstance(v, bytes | bytearray | bool | np.bool_))
            bad = kinds.to_numpy(dtype=bool)
        else:
            continue
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = values.iat[row]
            why = (
                "is bytes: decode them to text (str) first"
                if isinstance(value, bytes | bytearray)
                else f"is a truth value ({type(value).__name__}), not text"
            )
            raise DataError(f"add_items: row {row}: {col} {plain(value)!r:.60} {why}")
