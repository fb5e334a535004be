"""A learned few-shot ranking function: gradient-boosted trees over signals of the support set.

What it is
----------
For a user with support set ``S`` (their first ``K`` ratings) and a candidate
item ``i``, a vector of signals ``f(S, i)`` is computed -- how popular ``i``
is, how often it co-occurs with the items in ``S``, what the episodic ridge
(:mod:`metarec.models.episodic`) predicts for it, what users who rated the
same items went on to like, how close its text vector is to the texts of
``S`` -- and a gradient-boosted tree ensemble maps it to "will the user like
``i`` later". The trees are trained on *episodes* cut the way protocol P2
tests a model (users as tasks): a training user's first ``K`` ratings by
time are the support, the items they later rated ``>= like_threshold`` are
the positives, every other popular candidate a negative.

Why
---
On P2 (ml-100k) popularity is the baseline every single-signal model fails to
clear by much: the first films a MovieLens user rates are the well-known
ones, so co-occurrence alone (EASE, item kNN) ranks *below* popularity, and
the episodic ridge beats it by about 7 % at K = 10. Which signal to trust
depends on K, on how popular the candidate is and on how the user rated:
interactions a linear blend cannot express and trees can. Stacking learned
on episodes is the learning-to-rank form of model aggregation (one more
"ensemble with learned weights", where the weights are a function of the
signals and of K). On the single P2 split of ml-100k it reached nDCG@10
0.47 at K = 10 against popularity's 0.40 in an offline study; time-of-rating,
release-year and demographic signals were tried there and added nothing
beyond noise, so they are not part of the model.

Four signals look at what the support's raters *liked* rather than what they
rated, and at how the user rated the support: a ridge regression from rated
items to liked ones (``ease_like``), an RP3beta-style walk from a support item
through its raters to what they liked (``walk_like``), the like-matrix cosine
to the support items the user liked (``cooc_like``), and the episodic ridge
with the centred support ratings as a second input block
(``episodic_opinion``). Added together, they moved nDCG@10 on P2's validation
users (5 folds of ml-100k, one tree bag, never the test users) from x 1.138 of
popularity to x 1.153 at K = 10 and from x 1.199 to x 1.220 at K = 20, and
were no worse at any K (``benchmarks/results/stacked-variants.md``).

Cross-fitting
-------------
A signal computed from the same users whose episodes train the trees would
leak their labels (the co-occurrence of a user's own later likes with their
support). So the training users are split into ``folds`` (seeded); each
fold's episodes get signals computed from the *other* folds' users only. The
signals used at scoring time are recomputed from all training users.

Choices
-------
* Candidates: the ``n_candidates`` most-liked training items (a top-10 list
  almost never reaches further on MovieLens: 300 covers most later likes).
  Other items score below every candidate, in popularity order.
* ``K = 0`` (no support): the popularity prior (most signals are undefined).
* Trees (``objective``): by default each bag fits two tree ensembles on the
  same rows -- scikit-learn's ``HistGradientBoostingClassifier`` (log-loss:
  "is this item liked later") and LightGBM's LambdaMART (``lambdarank``: the
  order of each episode's candidates, weighted toward its top 20) -- and
  averages their decisions, each divided by its spread on the training rows.
  On P2's validation users (5 folds of ml-100k, never the test users; one bag
  each, ``benchmarks/results/stacked-variants.md``) the blend gave nDCG@10
  x 1.138 of popularity at K = 10 against x 1.121 for log-loss alone and
  x 1.102 for LambdaMART alone, ahead of both at K = 1, 5 and 20; at K = 3
  log-loss alone was 0.4 % ahead. ``"logloss"`` and
  ``"lambdarank"`` remain as options (the blend fits about three times as long).
  Scoring walks the exported trees in torch
  (:class:`metarec.models.trees.TreeEnsemble`), so a fitted model is plain
  arrays and can be saved as safetensors, never pickle.
  The score is the averaged raw decision (log-odds for the classifier).
* Items never seen in training (including items added with
  :meth:`add_items`) are not candidates: they score last until retraining.
* Memory grows with the square of the catalogue (the item-by-item signals
  and the episodic ridges inside); a catalogue too large for the machine is
  refused before the fit (:mod:`metarec.models.memory`). ``max_items`` fits
  the ranker on the most rated items only and ranks the rest by popularity
  below them (:mod:`metarec.models.universe`); by default every item is used.
* ``max_episodes`` bounds the trees' training rows, whose count grows with the
  training users: ml-100k's P2 split gives 3,290 episodes (one bag's trees fit
  in about 2 minutes on 2 cores), ml-1m's 22,500 (6.7 million rows; one bag
  fits in 20 minutes, 15 of them its trees). With it each bag learns from its
  own seeded sample of episodes, while the signals still come from every
  training user. On ml-1m 10,000 episodes fit a bag in 11 minutes and 2,500
  in 5, within 0.004 and 0.010 of nDCG@10 at every K
  (``benchmarks/results/stacked-episodes.md``). The default stays every
  episode, so quality never changes silently; past :data:`MANY_EPISODES`, a fit
  without the cap warns of its time instead.
* Deterministic under ``seed`` (fold assignment, episode samples and the trees'
  own seed).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from metarec.data.features import user_rows
from metarec.data.tasks import Task
from metarec.device import check_device, resolve_device
from metarec.errors import ConfigError, DataError, ModelError
from metarec.inputs import check_new_items
from metarec.models.base import (
    ScoringModel,
    TrainingData,
    check_positive,
    check_seed,
    check_shots,
    check_whole,
)
from metarec.models.episodic import Episodes, EpisodicLinear, FeatureSet, build_episodes
from metarec.models.memory import STACKED_BYTES_PER_PAIR, require_memory
from metarec.models.support_signals import (
    FEATURES,
    LEGACY_FEATURES,
    Histories,
    Signals,
    UserGroups,
)
from metarec.models.trees import TreeEnsemble
from metarec.models.universe import Universe, check_max_items

DEFAULT_SHOTS = (1, 3, 5, 10, 20)
# past this many training episodes a fit without max_episodes warns of its time
MANY_EPISODES = 10_000
OBJECTIVES = ("logloss", "lambdarank", "blend")


class _Stages:
    """A progress bar over a fit's stages, not its rows: a stage (one part's signals,
    one bag's trees) takes seconds to a minute, and inside the tree libraries there
    is nothing to count. No time-left estimate: a bag's trees take 20 times as long
    as one part's signals, so a rate over stages would mislead. :meth:`begin` ends
    the stage before it."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.bar = tqdm(
            total=total,
            desc=desc,
            disable=not enabled,
            bar_format="{desc}: {n}/{total} stages [{elapsed}{postfix}]",
        )
        self.running = False

    def begin(self, what: str) -> None:
        if self.running:
            self.bar.update()
        self.running = True
        self.bar.set_postfix_str(what)

    def __enter__(self) -> _Stages:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.running and exc[0] is None:
            self.bar.update()
        self.bar.close()


class StackedRanker(ScoringModel):
    """Gradient-boosted trees over few-shot signals, trained on P2-shaped episodes.

    Options: ``shots`` (support sizes the training episodes are cut at),
    ``n_candidates`` (most-liked items the trees rank), ``folds`` (cross-fitting),
    ``head`` (how many first ratings ``userknn_head`` matches), tree settings
    (``learning_rate``, ``max_iter``, ``max_leaf_nodes``, ``min_samples_leaf``),
    ``objective`` (``"blend"``, ``"logloss"`` or ``"lambdarank"``, see the module
    notes), ``truncation`` (how deep LambdaMART's pairs reach into each episode's
    ranking), ``device`` for the tree walk (``"auto"``: a GPU when present),
    ``progress`` (a bar over the fit's stages; the fit takes minutes on ml-100k and
    grows with the number of training users), ``max_items`` (fit on that many of the
    most rated items, rank the rest by popularity below them; None: every item),
    ``max_episodes`` (each bag's trees learn from a seeded sample of at most that many
    training episodes, about 300 rows each; the signals still use every training
    user; None: every episode).
    """

    name = "metarec-stacked"
    predicts_ratings = False

    def __init__(
        self,
        *,
        shots: Sequence[int] = DEFAULT_SHOTS,
        n_candidates: int = 300,
        folds: int = 4,
        bags: int = 3,
        head: int = 20,
        ease_lam: float = 1000.0,
        episodic_lam: float = 300.0,
        like_threshold: float | None = None,
        learning_rate: float = 0.05,
        max_iter: int = 300,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 200,
        objective: str = "blend",
        truncation: int = 20,
        chunk_tasks: int = 128,
        device: str = "auto",
        seed: int = 0,
        name: str = "metarec-stacked",
        progress: bool = False,
        max_items: int | None = None,
        max_episodes: int | None = None,
    ) -> None:
        shots = check_shots(shots, f"{name}: shots")
        for what, value, low in (
            ("n_candidates", n_candidates, 1),
            ("folds", folds, 2),
            ("bags", bags, 1),
            ("head", head, 1),
            ("max_iter", max_iter, 1),
            ("max_leaf_nodes", max_leaf_nodes, 2),
            ("min_samples_leaf", min_samples_leaf, 1),
            ("chunk_tasks", chunk_tasks, 1),
            ("truncation", truncation, 1),
        ):
            check_whole(value, f"{name}: {what}", low)  # int() cut 2.7 to 2
        if max_episodes is not None:
            check_whole(max_episodes, f"{name}: max_episodes", 1)
        check_seed(seed, f"{name}: seed")  # -1: numpy's bare ValueError at fit
        check_positive(
            name, ease_lam=ease_lam, episodic_lam=episodic_lam, learning_rate=learning_rate
        )
        self.shots = shots
        self.n_candidates = int(n_candidates)
        self.folds = int(folds)
        self.bags = int(bags)
        self.head = int(head)
        self.ease_lam = float(ease_lam)
        self.episodic_lam = float(episodic_lam)
        self._like_option(like_threshold)  # None: the data's scale, at fit
        self.learning_rate = float(learning_rate)
        self.max_iter = int(max_iter)
        self.max_leaf_nodes = int(max_leaf_nodes)
        self.min_samples_leaf = int(min_samples_leaf)
        if objective not in OBJECTIVES:
            raise ConfigError(f"{name}: objective must be one of {OBJECTIVES}, got {objective!r}")
        self.objective = objective
        self.truncation = int(truncation)
        self.chunk_tasks = int(chunk_tasks)
        self.device = check_device(device, f"{name}: device")
        self.seed = seed
        self.name = name
        self.progress = progress
        self.max_items = check_max_items(name, max_items)
        self.max_episodes = None if max_episodes is None else int(max_episodes)
        # fitted state; the signals index the universe's U items
        self.universe = Universe.whole(0)
        self.signals: Signals | None = None
        self.groups = UserGroups([], {})
        self.trees: TreeEnsemble | None = None
        self.n_rows = 0
        self.positive_rate = float("nan")

    def _torch_device(self) -> torch.device:
        return resolve_device(self.device, f"{self.name}: device")

    # -- fitting ------------------------------------------------------------
    def _signals(
        self,
        data: TrainingData,
        hist: Histories,
        user_ids: np.ndarray,
        group_keys: list[list[str | None]],
    ) -> Signals:
        frame = data.interactions
        sub = frame[frame["user_id"].astype(str).isin(set(map(str, user_ids)))]
        train = TrainingData(sub, data.catalogue, rating_range=data.rating_range, seed=data.seed)

        def ridge(features: FeatureSet, role: str) -> EpisodicLinear:
            return EpisodicLinear(
                shots=self.shots,
                lams=(self.episodic_lam,),
                feature_sets=(features,),
                like_threshold=self.like_threshold,
                device=self.device,
                seed=self.seed,
                name=f"{self.name}/{role}",
            ).fit(train)

        episodic = ridge("binary", "episodic")
        # the same ridge with a second input block, each support rating minus the
        # mean: a disliked support item then points away from what its fans liked
        episodic_opinion = ridge("binary+ratings", "episodic_opinion")
        return Signals(
            hist,
            data.n_items,
            data.catalogue.vectors,
            like_threshold=self.like_threshold,
            head=self.head,
            ease_lam=self.ease_lam,
            n_candidates=self.n_candidates,
            episodic=episodic,
            episodic_opinion=episodic_opinion,
            group_keys=group_keys,
        )

    def _training_rows(
        self,
        data: TrainingData,
        hist: Histories,
        episodes: Episodes,
        ids: np.ndarray,
        pick: Any,
        parts: list[np.ndarray],
        stage: Callable[[str], None],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, labels and rows per episode (the ranking groups, in row order)
        of every training episode's candidates, cross-fitted: a part's episodes get
        signals from the other parts' users only."""
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        groups: list[int] = []
        for i, part in enumerate(parts):
            stage(f"signals for part {i + 1}/{len(parts)}")
            rest = np.setdiff1d(np.arange(len(hist)), part)
            signals = self._signals(data, hist.subset(rest), ids[rest], pick(rest))
            cand = signals.candidates
            mine = np.flatnonzero(np.isin(episodes.owners, part))
            for lo in range(0, len(mine), self.chunk_tasks):
                chunk = mine[lo : lo + self.chunk_tasks]
                # no query: the labels are the episode's later likes
                tasks = [
                    Task.support_only(episodes.support_items[e], episodes.support_ratings[e], -1)
                    for e in chunk
                ]
                f = signals.features(tasks, pick(episodes.owners[chunk]))
                for j, e in enumerate(chunk):
                    keep = ~np.isin(cand, episodes.support_items[e])
                    xs.append(f[j, keep])
                    ys.append(np.isin(cand[keep], episodes.liked[e]))
                    groups.append(int(keep.sum()))
        if not xs:
            raise DataError(
                f"{self.name}: no training user has more than {min(self.shots)} ratings"
            )
        x, y = np.concatenate(xs), np.concatenate(ys)
        if y.all() or not y.any():
            raise DataError(f"{self.name}: training episodes need both liked and other items")
        return x, y, np.asarray(groups, dtype=np.int64)

    def _fit_trees(
        self, x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int
    ) -> TreeEnsemble:
        if self.objective == "blend":
            # both objectives, each scaled to unit spread of its decisions on the
            # training rows, so neither dominates the mean by its scale alone
            members = []
            for objective in ("logloss", "lambdarank"):
                trees, decisions = self._fit_one(objective, x, y, groups, seed)
                members.append(trees.scaled(1.0 / max(float(np.std(decisions)), 1e-12)))
            return TreeEnsemble.average(members)
        return self._fit_one(self.objective, x, y, groups, seed)[0]

    def _fit_one(
        self, objective: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int
    ) -> tuple[TreeEnsemble, np.ndarray]:
        """The fitted trees and their decisions on the training rows (from the
        library's own predictor: the same numbers, far faster than a torch walk)."""
        if objective == "lambdarank":
            import lightgbm

            ranker = lightgbm.LGBMRanker(
                objective="lambdarank",
                n_estimators=self.max_iter,
                learning_rate=self.learning_rate,
                num_leaves=self.max_leaf_nodes,
                min_child_samples=self.min_samples_leaf,
                lambdarank_truncation_level=self.truncation,
                random_state=seed,
                deterministic=True,
                force_row_wise=True,
                verbose=-1,
            ).fit(x, y.astype(np.int32), group=groups)
            return TreeEnsemble.from_lightgbm(ranker.booster_), np.asarray(ranker.predict(x))
        from sklearn.ensemble import HistGradientBoostingClassifier

        gb = HistGradientBoostingClassifier(
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            early_stopping=False,
            random_state=seed,
        ).fit(x, y)
        return TreeEnsemble.from_sklearn(gb), gb.decision_function(x)

    def fit(self, data: TrainingData) -> StackedRanker:
        self._fit_like(data)
        universe = Universe.most_rated(data, self.max_items, self.like_threshold)
        data = universe.restrict(data)
        ur = data.ratings
        if len(ur) < 2 * self.folds:
            raise DataError(
                f"{self.name}: needs at least {2 * self.folds} training users for "
                f"{self.folds}-fold cross-fitting, got {len(ur)}"
            )
        require_memory(self.name, data.n_items, STACKED_BYTES_PER_PAIR)
        hist = Histories.from_ratings(ur, self.seed)
        # the same tie-breaking seed as the histories, so both see one order of ratings
        episodes = build_episodes(
            ur, self.shots, like_threshold=self.like_threshold, seed=self.seed
        )
        ids = np.asarray(ur.user_ids)
        self.groups = UserGroups.fit(data.users)
        keys = self.groups.keys(user_rows(data.users, ids), len(ids))

        def pick(rows: np.ndarray) -> list[list[str | None]]:
            return [[col[r] for r in rows] for col in keys]

        if self.max_episodes is None and len(episodes) > MANY_EPISODES:
            # the default keeps quality from changing silently, so say what it costs
            warnings.warn(
                f"{self.name}: its trees learn from all {len(episodes):,} training episodes "
                f"(about {300 * len(episodes) / 1e6:.1f}M rows, ~20 min a bag on 2 CPU cores "
                "at ml-1m's 22,500); max_episodes=10000 (--max-episodes 10000) took half the "
                "time within 0.004 nDCG@10 there (benchmarks/results/stacked-episodes.md)",
                RuntimeWarning,
                stacklevel=2,
            )
        rng = np.random.default_rng(self.seed)
        bags, rows, positives = [], 0, 0
        stages = _Stages(self.bags * (self.folds + 1) + 1, self.name, self.progress)
        with stages:
            for bag in range(self.bags):

                def stage(what: str, bag: int = bag) -> None:
                    stages.begin(f"bag {bag + 1}/{self.bags}: {what}")

                # each bag cross-fits on its own random folds, so bags differ in their signals
                parts = np.array_split(rng.permutation(len(hist)), self.folds)
                mine = episodes
                if self.max_episodes is not None and len(episodes) > self.max_episodes:
                    # the trees' cost grows with their rows; each bag draws its own
                    # sample, so the bags together still see most episodes
                    drawn = rng.choice(len(episodes), self.max_episodes, replace=False)
                    mine = episodes.subset(np.sort(drawn))
                x, y, groups = self._training_rows(data, hist, mine, ids, pick, parts, stage)
                rows, positives = rows + len(y), positives + int(y.sum())
                stage(f"trees on {len(y):,} rows")
                bags.append(self._fit_trees(x, y, groups, (self.seed + bag) % 2**32))
            stages.begin("signals from all training users")
            self.signals = self._signals(data, hist, ids, keys)
        self.n_rows, self.positive_rate = rows, positives / max(rows, 1)
        self.trees = TreeEnsemble.average(bags)
        self.universe = universe
        return self

    # -- scoring ------------------------------------------------------------
    def _fitted(self) -> tuple[Signals, TreeEnsemble]:
        if self.signals is None or self.trees is None:
            raise ModelError(f"{self.name}: not fitted")
        return self.signals, self.trees

    @property
    def n_items(self) -> int:
        self._fitted()  # an unfitted ranker says so, not "item 301 is not in [0, 0)"
        return self.universe.n_catalogue

    @property
    def n_fit_items(self) -> int:
        """Items the signals cover: the universe's."""
        return len(self.universe.items)

    @property
    def candidates(self) -> np.ndarray:
        """The items the trees rank (the most-liked training items), ascending."""
        return self._fitted()[0].candidates

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        signals, trees = self._fitted()
        cand = self.candidates
        prior = signals.like_rate
        known = len(prior)
        scores = np.empty((len(tasks), known))
        # items the signals know nothing of (outside the universe, or added after
        # training) cannot be in a support set's features; a support of only such
        # items is a K = 0 user
        seen = [
            replace(t, support_ratings=np.asarray(t.support_ratings, dtype=np.float64))
            for t in self.universe.tasks(tasks)
        ]
        rows = [j for j, t in enumerate(seen) if len(t.support_items) > 0]
        keys = self.groups.keys(users, len(tasks))
        dev = self._torch_device()
        for lo in range(0, len(rows), self.chunk_tasks):
            chunk = rows[lo : lo + self.chunk_tasks]
            chunk_keys = [[col[j] for j in chunk] for col in keys]
            f = signals.features([seen[j] for j in chunk], chunk_keys)
            raw = trees.decision(f.reshape(-1, f.shape[-1]), dev).reshape(len(chunk), len(cand))
            # non-candidates below every candidate, in popularity order among themselves
            floor = raw.min(axis=1, keepdims=True) - 1.0
            scores[chunk] = floor + 0.5 * prior[None, :] / max(prior.max(), 1e-12)
            scores[np.asarray(chunk)[:, None], cand[None, :]] = raw
        empty = [j for j, t in enumerate(seen) if len(t.support_items) == 0]
        scores[empty] = prior
        return self.universe.expand(scores, 1.0)

    def add_items(self, items: pd.DataFrame, vectors: np.ndarray) -> None:
        """Grow the catalogue. New items score last until retraining: no episode links
        them to anything, and in a support set they contribute nothing."""
        self._fitted()
        checked = check_new_items(self.name, items, vectors)  # None: a bare TypeError
        m = len(items)
        if checked is not None and len(checked) != m:
            raise DataError(f"{self.name}.add_items: {m} items but {len(checked)} vectors")
        self.universe = self.universe.grown(m)

    def describe(self) -> dict[str, Any]:
        return {
            "features": [*FEATURES, *(f"group:{c}" for c in self.groups.columns)],
            "shots": list(self.shots),
            "n_candidates": self.n_candidates,
            "objective": self.objective,
            "items_fitted": self.n_fit_items,
            "trees": self.trees.n_trees if self.trees is not None else 0,
            "training_rows": self.n_rows,
            "positive_rate": self.positive_rate,
        }

    # -- persistence: plain arrays and JSON (see metarec.models.persist) ----------
    def to_state(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
        """(constructor options, fitted fields, arrays): the trees, the signals and the
        inner episodic model, each under its own prefix."""
        signals, trees = self._fitted()
        options = {
            "shots": list(self.shots),
            "n_candidates": self.n_candidates,
            "folds": self.folds,
            "bags": self.bags,
            "head": self.head,
            "ease_lam": self.ease_lam,
            "episodic_lam": self.episodic_lam,
            "like_threshold": self.like_threshold,
            "learning_rate": self.learning_rate,
            "max_iter": self.max_iter,
            "max_leaf_nodes": self.max_leaf_nodes,
            "min_samples_leaf": self.min_samples_leaf,
            "objective": self.objective,
            "truncation": self.truncation,
            "chunk_tasks": self.chunk_tasks,
            "max_items": self.max_items,
            "max_episodes": self.max_episodes,
        }
        sig_fields, sig_arrays = signals.to_state()
        epi_options, epi_fitted, epi_arrays = signals.episodic.to_state()
        op_options, op_fitted, op_arrays = signals.episodic_opinion.to_state()
        fitted = {
            "n_fit_items": self.n_fit_items,
            "n_items": self.n_items,
            "training_rows": self.n_rows,
            "positive_rate": self.positive_rate,
            "tree_baseline": trees.baseline,
            "group_columns": list(self.groups.columns),
            "group_edges": {c: e.tolist() for c, e in self.groups.edges.items()},
            "signals": sig_fields,
            "episodic": {"options": epi_options, "fitted": epi_fitted},
            "episodic_opinion": {"options": op_options, "fitted": op_fitted},
            "features": list(FEATURES),
        }
        arrays = {"candidates": self.candidates, **self.universe.arrays()}
        arrays.update({f"trees.{k}": v for k, v in trees.arrays.items()})
        arrays.update({f"signals.{k}": v for k, v in sig_arrays.items()})
        arrays.update({f"episodic.{k}": v for k, v in epi_arrays.items()})
        arrays.update({f"episodic_opinion.{k}": v for k, v in op_arrays.items()})
        return options, fitted, arrays

    @classmethod
    def from_state(
        cls,
        options: dict[str, Any],
        fitted: dict[str, Any],
        arrays: dict[str, np.ndarray],
        *,
        seed: int = 0,
        name: str = "metarec-stacked",
        device: str = "auto",
    ) -> StackedRanker:
        """Rebuild a fitted model from :meth:`to_state`'s parts; a missing or
        inconsistent part raises :class:`ModelError` naming it."""
        # runs saved before the objective was an option were fitted with log-loss
        options = {"objective": "logloss", **options}
        try:
            model = cls(**options, seed=seed, name=name, device=device)
        except TypeError as exc:
            raise ModelError(f"{name}: bad options: {exc}") from None

        def part(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}

        # the trees index the signals by position, so a state saved with another
        # list of signals cannot be scored by this code (states before 2026-11-30
        # carry no list: they had the 20 signals of LEGACY_FEATURES)
        saved = [str(f) for f in fitted.get("features", LEGACY_FEATURES)]
        if saved != list(FEATURES):
            lacking = [f for f in FEATURES if f not in saved]
            raise ModelError(
                f"{name}: saved with {len(saved)} signals, but this version of metarec "
                f"computes {len(FEATURES)} (the saved state lacks {lacking}); retrain it"
            )
        try:
            models = []
            for key in ("episodic", "episodic_opinion"):
                epi = fitted[key]
                models.append(
                    EpisodicLinear.from_state(
                        epi["options"], epi["fitted"], part(f"{key}."), seed=seed, device=device
                    )
                )
            episodic, episodic_opinion = models
            model.signals = Signals.from_state(
                fitted["signals"],
                part("signals."),
                episodic,
                episodic_opinion,
                candidates=arrays["candidates"],
            )
            model.trees = TreeEnsemble(part("trees."), float(fitted["tree_baseline"]))
            model.groups = UserGroups(
                [str(c) for c in fitted["group_columns"]],
                {str(c): np.asarray(e, dtype=np.float64) for c, e in fitted["group_edges"].items()},
            )
            fit = int(fitted["n_fit_items"])
            # saved before universes: the fitted items plus the ones added since
            n_items = fitted.get("n_items", fit + int(fitted.get("n_added", 0)))
            model.universe = Universe.from_arrays(arrays, fit, int(n_items), name)
            model.n_rows = int(fitted.get("training_rows", 0))
            model.positive_rate = float(fitted.get("positive_rate", float("nan")))
        except KeyError as exc:
            raise ModelError(f"{name}: saved state lacks {exc}") from None
        n = model.n_fit_items
        if len(model.signals.like_rate) != n or any(m.n_items != n for m in models):
            raise ModelError(f"{name}: signals and episodic models disagree with {n} items")
        if len(model.signals.groups) != len(model.groups.columns):
            raise ModelError(f"{name}: {len(model.groups.columns)} group columns, tables differ")
        return model
