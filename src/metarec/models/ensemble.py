"""Model aggregation: a weighted blend of models whose weights depend on support size.

The best model for a user with one rating is rarely the best for a user with
twenty (popularity wins at K = 0, a collaborative model at K = 20), so the
ensemble learns one weight vector per *support-size bucket* on validation
users: for each bucket edge K, every validation user's support is cut to its
first K interactions and the members' outputs on the rest are blended.

Two modes:

* ``"rating"`` — members predict ratings; the blend is a convex combination
  (weights >= 0, summing to 1) chosen to minimise validation MAE, so the
  result stays on the rating scale. Only members with ``predicts_ratings``
  may take part.
* ``"ranking"`` — members' catalogue scores are standardised per user
  (z-scores over the catalogue, so a popularity count and a logit are
  comparable) and blended with convex weights chosen to maximise
  validation nDCG@10 of the full-catalogue ranking (protocol P2).

Weights are found by a seeded search over the simplex (an exact grid for up
to four members, Dirichlet samples beyond), which needs no gradients of the
members and optimises the metric that is reported, not a surrogate. A tie goes
to the candidate searched first: on the grid (up to four members) all weight on
the last member (the anchor peer, where benchmarks list it last), beyond it all
weight on the first.

A bucket judged on fewer than ``min_bucket_users`` validation users (20 by
default) takes the weights of the bucket below it, which every one of its users
also reached, with a warning: two users who had rated 60 films set the weights of
every served user with 60 or more. ``bucket_users`` records how many users each
bucket's weights rest on (0 where it took the bucket below's).

With ``learn_weights=False`` the weights stay equal in every bucket: a *seed
bag*, the same model fitted with several seeds and averaged. Averaging cancels
the part of each fit's error that depends on its seed (initialisation, task
order); learning weights among near-copies would only fit the validation
users' noise. A rating-mode bag still fits median-rating cuts of its own.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from metarec.data.features import user_rows
from metarec.data.tasks import Task, UserRatings, liked_query_items, ordered
from metarec.errors import ConfigError, ModelError, UnsupportedError
from metarec.models.base import (
    ScoringModel,
    TrainingData,
    check_seed,
    check_tasks,
    check_whole,
)
from metarec.models.cutpoints import fit_validation_cutpoints, rating_levels, warn_if_unfitted
from metarec.models.members import unlike_member
from metarec.values import is_number, is_whole

Mode = Literal["rating", "ranking"]
DEFAULT_BUCKETS = (0, 1, 3, 5, 10, 20)


class Ensemble(ScoringModel):
    """Members' scores blended with weights learned on validation tasks, one weight set
    a support-size bucket (``buckets``: the floors, K >= 0, 1, 3, ...); ``mode``
    "ranking" blends catalogue scores standardised per user, "rating" predicted
    ratings (see the module notes)."""

    def __init__(
        self,
        members: Mapping[str, ScoringModel],
        *,
        mode: Mode = "ranking",
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        name: str = "ensemble",
        seed: int = 0,
        fit_members: bool = True,
        grid_step: float = 0.1,
        samples: int = 3000,
        query_size: int = 10,
        k: int = 10,
        learn_weights: bool = True,
        like_threshold: float | None = None,
        min_bucket_users: int = 20,
    ) -> None:
        if not isinstance(members, Mapping):  # a list has no names to weigh by
            raise ConfigError(
                f"ensemble: members must be a mapping of name to model, got "
                f"{type(members).__name__}"
            )
        if not members:
            raise ConfigError("ensemble: needs at least one member")
        if mode not in ("rating", "ranking"):
            raise ConfigError(f"ensemble mode: {mode!r} is not one of rating, ranking")
        not_models = [n for n, m in members.items() if not isinstance(m, ScoringModel)]
        if not_models:  # before asking them whether they predict ratings
            raise ConfigError(
                f"ensemble: members {not_models} are not models (make them with make_peer, "
                "make_ranker or MetaModel)"
            )
        if mode == "rating":
            bad = [n for n, m in members.items() if not m.predicts_ratings]
            if bad:
                raise ConfigError(f"ensemble: rating mode needs rating predictors; not {bad}")
        check_seed(seed)
        if isinstance(buckets, str | bytes) or not isinstance(buckets, Sequence):
            raise ConfigError(
                f"ensemble buckets: expected a list such as [0, 1, 3], got {buckets!r}"
            )
        whole = all(is_whole(b) for b in buckets)  # 1.5 was cut to 1 without a word
        buckets = list(buckets)
        if not whole or not buckets or sorted(set(buckets)) != buckets or buckets[0] != 0:
            raise ConfigError(
                f"ensemble buckets: whole numbers that start at 0 and increase; got {buckets}"
            )
        # the weight grid steps from 0 to 1: a step outside (0, 1] makes no grid
        if not (is_number(grid_step) and 0 < grid_step <= 1):  # True was a step of 1
            raise ConfigError(f"ensemble grid_step: must be in (0, 1], got {grid_step!r}")
        for option, flag in (("fit_members", fit_members), ("learn_weights", learn_weights)):
            if not isinstance(flag, bool | np.bool_):  # "no" is truthy: members were refit
                raise ConfigError(f"ensemble {option}: expected True or False, got {flag!r:.40}")
        for option, value in (
            ("samples", samples),
            ("query_size", query_size),
            ("k", k),
            ("min_bucket_users", min_bucket_users),
        ):
            check_whole(value, f"ensemble {option}", 1)
        # saved as the manifest's names: an int or "" saved a folder load refused, over
        # the good one that was there
        for label, text in (("name", name), *(("member name", m) for m in members)):
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"ensemble {label}: expected a non-empty string, got {text!r}")
        self.members = dict(members)
        self.mode: Mode = mode
        self.buckets = tuple(int(b) for b in buckets)
        self.name = name
        self.seed = seed
        self.fit_members = fit_members
        self.grid_step = grid_step
        self.samples = samples
        self.query_size = query_size
        self.k = k
        self.learn_weights = learn_weights
        self.min_bucket_users = int(min_bucket_users)
        self._like_option(like_threshold)  # None: the data's scale, at fit
        self.predicts_ratings = mode == "rating"
        n = len(self.members)
        self.weights = np.full((len(self.buckets), n), 1.0 / n)
        self.bucket_users: list[int] | None = None  # fitted: users each bucket rests on
        self._n_fit_items = 0
        # fit() or a load: until then the weights are the equal start, which
        # weight_table reported as if learned
        self.fitted = False
        self.metadata: dict[str, Any] = {}  # saved with the ensemble (e.g. the runs it blends)

    # -- fitting ------------------------------------------------------------
    def fit(self, data: TrainingData) -> Ensemble:
        if data.validation_ratings is None:  # before minutes of fitting members
            raise ModelError("ensemble: needs validation users to learn its weights")
        if self.k > data.n_items:
            raise ConfigError(f"ensemble k: {self.k} is more than the {data.n_items} items")
        if self.fit_members:
            for model in self.members.values():
                model.fit(data)
        sizes = {n: m.n_items for n, m in self.members.items()}
        if len(set(sizes.values())) > 1:
            raise ModelError(
                f"ensemble: members score catalogues of different sizes {sizes}; "
                "blend members fitted on the same items"
            )
        unlike = unlike_member(self.members, data.catalogue.items["item_id"].tolist())
        if unlike is not None:  # only save refused it: blended in memory, by position
            raise ModelError(f"ensemble: {unlike[1]}")
        scales = {n: m.rating_range for n, m in self.members.items()}
        other = {n: r for n, r in scales.items() if r is not None and r != data.rating_range}
        if other:
            # a member refuses this data's support ratings (10 on its 1-5) when alone; in
            # a ranking blend the others' scores carried it without a word
            raise ConfigError(
                f"ensemble: members {other} were fitted on another rating scale than this "
                f"data's {data.rating_range}; fit them on it (fit_members=True)"
            )
        self._n_fit_items = self.n_items
        self._fit_like(data)
        val = data.validation_ratings
        # each fit learns afresh: a bucket no validation task reached kept the weights
        # of an earlier fit on other data
        n = len(self.members)
        self.weights = np.full((len(self.buckets), n), 1.0 / n)
        counts = [0] * len(self.buckets)
        self.bucket_users = counts if self.learn_weights else None
        few: list[str] = []
        for b, shot in enumerate(self.buckets if self.learn_weights else ()):
            tasks = self._validation_tasks(val, shot)
            if b == 0 and not tasks:  # so none for the larger buckets either
                warnings.warn(
                    f"ensemble: no validation user has {shot} + "
                    f"{self.query_size if self.mode == 'rating' else 1} ratings to judge a "
                    "blend on; every member keeps an even weight",
                    stacklevel=2,
                )
            users = user_rows(data.users, [val.user_ids[t.user] for t in tasks])
            best, judged = self._best_weights(tasks, users) if tasks else (None, 0)
            if b == 0 and tasks and best is None:
                warnings.warn(
                    f"ensemble: no validation user liked an item after their first {shot} "
                    "ratings, so no blend can be judged; every member keeps an even weight",
                    stacklevel=2,
                )
            if best is not None and (b == 0 or judged >= self.min_bucket_users):
                self.weights[b] = best
                counts[b] = judged
                if judged < self.min_bucket_users:  # nothing below to take instead
                    few.append(f"K >= {shot} learned from {judged} (no bucket below)")
            elif b > 0:
                # too few validation users with this many ratings (or, ranking, with a
                # liked item after them): the nearest smaller support size's weights,
                # judged on more users (every one of these among them), not an even
                # split nothing chose or weights a handful of users chose
                self.weights[b] = self.weights[b - 1]
                if judged:
                    few.append(f"K >= {shot} had {judged} (takes K >= {self.buckets[b - 1]}'s)")
        if few:
            warnings.warn(
                f"ensemble: {'; '.join(few)}: fewer validation users than "
                f"min_bucket_users={self.min_bucket_users} to learn weights from",
                stacklevel=2,
            )
        self.fitted = True
        if self.mode == "rating":
            # the blend's own median-rating cuts, on P1-shaped validation tasks
            levels = rating_levels(data.ratings.ratings)
            self.cutpoints = fit_validation_cutpoints(
                self, val, data.users, levels=levels, seed=self.seed, query_size=self.query_size
            )
            if val is not None and len(val):
                warn_if_unfitted(self.cutpoints, levels, f"ensemble {self.name}")
        return self

    def _validation_tasks(self, val: UserRatings, shot: int) -> list[Task]:
        """Support = first ``shot`` interactions by time; the rest (or the last
        ``query_size`` for ratings) is what the blend is judged on.

        Time order, as a served user's support is their first ratings. P1 judges on
        tasks drawn in shuffled order, as do the rating blend's median cuts
        (:func:`fit_validation_cutpoints`); a reviewer's weights fitted on shuffled
        tasks moved P1's MAE by about 0.002 either way, within one seed's noise."""
        rng = np.random.default_rng([self.seed, shot])
        tasks = []
        need = shot + (self.query_size if self.mode == "rating" else 1)
        for row in range(len(val)):
            items, ratings = ordered(*val.history(row), "time", rng)
            if len(items) < need:
                continue
            q = (
                slice(len(items) - self.query_size, None)
                if self.mode == "rating"
                else slice(shot, None)
            )
            tasks.append(Task(row, items[:shot], ratings[:shot], items[q], ratings[q]))
        return tasks

    def _candidates(self) -> np.ndarray:
        n = len(self.members)
        if n == 1:
            return np.ones((1, 1))
        if n <= 4:
            steps = round(1 / self.grid_step)
            grid = [c for c in itertools.product(range(steps + 1), repeat=n - 1) if sum(c) <= steps]
            out = np.array([[*c, steps - sum(c)] for c in grid], dtype=np.float64) / steps
        else:
            rng = np.random.default_rng(self.seed)
            out = np.vstack(
                [np.eye(n), np.full((1, n), 1.0 / n), rng.dirichlet(np.ones(n), self.samples)]
            )
        # A strong member nudged by a little of another is often best (popularity plus
        # a small personal signal), and neither a coarse grid nor Dirichlet samples
        # contain those points: add every pair at fine small weights.
        small = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
        pairs = []
        for i, j in itertools.permutations(range(n), 2):
            for w in small:
                row = np.zeros(n)
                row[i], row[j] = 1.0 - w, w
                pairs.append(row)
        return np.vstack([out, *pairs]) if pairs else out

    def _best_weights(
        self, tasks: list[Task], users: pd.DataFrame | None
    ) -> tuple[np.ndarray | None, int]:
        """The best candidate weights and how many users judged them (None, 0: none
        could: in ranking, no user liked an item after the support)."""
        cands = self._candidates()
        if self.mode == "rating":
            preds = np.stack(
                [np.concatenate(m.predict_tasks(tasks, users)) for m in self.members.values()]
            )  # [M, total query ratings]
            for name, row in zip(self.members, preds, strict=True):
                if not np.isfinite(row).all():
                    # as in ranking: found only as a NaN in the blend's cuts, naming no one
                    raise ModelError(
                        f"{self.name}: member {name!r} predicted NaN or infinity; a blend "
                        "needs finite predictions from every member"
                    )
            truth = np.concatenate([t.query_ratings for t in tasks])
            owner = np.repeat(np.arange(len(tasks)), [len(t.query_items) for t in tasks])
            counts = np.bincount(owner)
            blended = cands @ preds  # [C, R]
            err = np.abs(blended - truth[None, :])
            per_user = np.stack([np.bincount(owner, weights=e) / counts for e in err])
            loss = per_user.mean(axis=1)
            return cands[int(np.argmin(loss))], len(tasks)
        # ranking: nDCG@k of the blended, standardised catalogue scores
        relevant = liked_query_items(tasks, self.like_threshold)
        keep = [i for i, r in enumerate(relevant) if len(r)]
        if not keep:  # nothing to rank for: nothing to choose weights by
            return None, 0
        tasks = [tasks[i] for i in keep]
        relevant = [relevant[i] for i in keep]
        users = users.iloc[keep].reset_index(drop=True) if users is not None else None
        z = self._member_z(tasks, users)  # [M, U, N]
        disc = 1.0 / np.log2(np.arange(2, self.k + 2))
        ideal = np.array([disc[: min(len(r), self.k)].sum() for r in relevant])
        rel_mask = np.zeros(z.shape[1:], dtype=bool)
        for u, r in enumerate(relevant):
            rel_mask[u, r] = True
        seen = np.zeros(z.shape[1:], dtype=bool)
        for u, t in enumerate(tasks):
            seen[u, t.support_items] = True
        best, best_w = -1.0, cands[0]
        for w in cands:
            blended = np.where(seen, -np.inf, np.tensordot(w, z, axes=1))
            part = np.argpartition(-blended, self.k - 1, axis=1)[:, : self.k]
            order = np.argsort(-np.take_along_axis(blended, part, axis=1), axis=1, kind="stable")
            top = np.take_along_axis(part, order, axis=1)  # the search needs no tie rule
            hits = np.take_along_axis(rel_mask, top, axis=1)
            score = float(((hits * disc).sum(axis=1) / ideal).mean())
            if score > best + 1e-12:
                best, best_w = score, w
        return best_w, len(tasks)

    # -- scoring ------------------------------------------------------------
    def _member_z(self, tasks: Sequence[Task], users: pd.DataFrame | None) -> np.ndarray:
        out = []
        n = self._n_fit_items
        for name, model in self.members.items():
            s = model.score_catalogue(tasks, users).astype(np.float64)
            if not np.isfinite(s).all():
                # one -inf made every z-score of the row infinite or NaN: the weight search
                # then gave that member all the weight, and recommend named no member
                raise ModelError(
                    f"{self.name}: member {name!r} scored NaN or infinity; a blend needs "
                    "finite scores from every member"
                )
            # statistics over the catalogue as fitted, so adding items later
            # leaves every existing item's blended score unchanged
            ref = s[:, :n] if n else s
            sd = ref.std(axis=1, keepdims=True)
            out.append((s - ref.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0))
        return np.stack(out)

    def _bucket(self, n_support: int) -> int:
        return int(np.searchsorted(self.buckets, n_support, side="right") - 1)

    @property
    def n_items(self) -> int:
        return next(iter(self.members.values())).n_items

    def weights_for(self, n_support: int) -> np.ndarray:
        """[M] the members' weights for a user with ``n_support`` ratings."""
        return self.weights[self._bucket(n_support)]

    def member_scores(self, tasks: Sequence[Task], users: pd.DataFrame | None = None) -> np.ndarray:
        """[M, U, N] each member's catalogue scores as the blend weighs them: as scored
        (rating mode), or z-scored over the catalogue as fitted (ranking mode)."""
        if self.mode == "rating":
            return np.stack([m.score_catalogue(tasks, users) for m in self.members.values()])
        return self._member_z(tasks, users)

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        # its tasks are checked on the way in, as every ScoringModel's are
        w = self.weights[[self._bucket(len(t.support_items)) for t in tasks]]  # [U, M]
        return np.einsum("um,mun->un", w, self.member_scores(tasks, users)).astype(np.float32)

    def predict_tasks(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> list[np.ndarray]:
        if self.mode == "ranking":
            return super().predict_tasks(tasks, users)
        check_tasks(tasks, self.n_items, users, self.name)  # before the weights index them
        w = self.weights[[self._bucket(len(t.support_items)) for t in tasks]]
        preds = [m.predict_tasks(tasks, users) for m in self.members.values()]
        return [
            sum(w[i, j] * preds[j][i] for j in range(len(preds))).astype(np.float32)
            for i in range(len(tasks))
        ]

    def add_items(self, items: pd.DataFrame, vectors: np.ndarray) -> None:
        """All members take the new items, or none does (the ensemble and its members
        are left as they were)."""
        before = copy.deepcopy(self.members)
        refusing = []
        try:
            for name, model in self.members.items():
                try:
                    model.add_items(items, vectors)
                except UnsupportedError:
                    refusing.append(name)
        except BaseException:
            # any other failure (a repeated id, wrong vectors) may come after some members
            # took the items: put every member back so the catalogues stay aligned
            self._restore(before)
            raise
        if refusing:
            self._restore(before)
            raise UnsupportedError(
                f"{self.name}: members {refusing} cannot score new items; drop them from the "
                "ensemble or use text-aware members only"
            )

    def _restore(self, before: dict[str, ScoringModel]) -> None:
        """Each member object back to its state in ``before`` (deep copies), in place: the
        caller's objects (and an EnsembleRecommender's primary run) are these ones, and
        swapping in the copies left the caller's members holding the new items."""
        for name, model in self.members.items():
            vars(model).clear()
            vars(model).update(vars(before[name]))

    def weight_table(self) -> dict[str, dict[str, float]]:
        """``{"K>=b": {member: weight}}`` — what the report prints."""
        if not self.fitted:
            raise ModelError(f"{self.name}: not fitted; call fit() first")
        names = list(self.members)
        return {
            f"K>={b}": {n: round(float(w), 4) for n, w in zip(names, row, strict=True)}
            for b, row in zip(self.buckets, self.weights, strict=True)
        }

    # -- persistence --------------------------------------------------------
    def save(self, directory: str | Path, *, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the ensemble as a folder (manifest + members), atomically.

        See :mod:`metarec.models.persist` for the layout and which members can be saved.
        """
        from metarec.models.persist import save_ensemble

        return save_ensemble(self, directory, metadata=metadata)

    @classmethod
    def load(cls, directory: str | Path, *, device: str | None = None) -> Ensemble:
        """An ensemble :meth:`save` wrote, its members and learned weights as saved;
        ``device`` for its metarec members (default: a GPU where there is one)."""
        from metarec.models.persist import load_ensemble

        return load_ensemble(directory, device=device)
