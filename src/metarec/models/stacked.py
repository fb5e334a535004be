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
  On P2's validation users (5 folds of ml-100k, never the test users) the
  blend beat log-loss alone at K = 3 to 20 (nDCG@10 x 1.178 of popularity at
  K = 10 against x 1.161, x 1.121 against x 1.105 at K = 5) and tied it at
  K = 1 (x 0.992 against x 0.995); LambdaMART alone gave x 1.173 at K = 10
  but lost 2 % at K = 1 and 4 % at K = 20. ``"logloss"`` and
  ``"lambdarank"`` remain as options (the blend fits about three times as long).
  Scoring walks the exported trees in torch (:class:`TreeEnsemble`), so a
  fitted model is plain arrays and can be saved as safetensors, never pickle.
  The score is the averaged raw decision (log-odds for the classifier).
* Items never seen in training (including items added with
  :meth:`add_items`) are not candidates: they score last until retraining.
* Deterministic under ``seed`` (fold assignment and the trees' own seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from metarec.data.features import user_rows
from metarec.data.tasks import Task, UserRatings, ordered
from metarec.errors import ConfigError, DataError, ModelError
from metarec.models.base import ScoringModel, TrainingData
from metarec.models.episodic import Episodes, EpisodicLinear, build_episodes

FEATURES = (
    "log_like_rate",  # fraction of training users who liked the item (log)
    "log_rating_rate",  # fraction who rated it (log)
    "mean_rating",  # smoothed mean rating
    "episodic",  # the episodic ridge's score
    "episodic_rank",  # its rank over the catalogue (0 = best)
    "ease",  # EASE item-to-item score of the support set
    "cooc_mean",  # mean cosine co-occurrence with the support items
    "cooc_max",
    "cooc_last",  # with the latest support item
    "cooc_last3",  # mean over the latest three
    "cooc_opinion",  # co-occurrence weighted by the user's centred support ratings
    "after_mean",  # how often the item is rated after the support items, not before
    "userknn",  # what users who rated the support items liked
    "userknn_head",  # the same, matching against those users' first ratings only
    "content_max",  # text-vector cosine to the support items
    "content_mean",
    "content_opinion",  # weighted by the centred support ratings
    "ease_like",  # ridge regression from the support items to the items liked
    "walk_like",  # rated -> users -> liked random walk, discounted by popularity
    "cooc_like",  # like-matrix cosine to the support items the user liked
    "episodic_opinion",  # the episodic ridge fed how the support was rated, too
    "shots",  # K
    "support_mean_rating",
    "support_like_rate",
)
# the signals of states saved before "features" was recorded (2026-11-30)
LEGACY_FEATURES = tuple(
    f for f in FEATURES if f not in ("ease_like", "walk_like", "cooc_like", "episodic_opinion")
)
DEFAULT_SHOTS = (1, 3, 5, 10, 20)
OBJECTIVES = ("logloss", "lambdarank", "blend")


def _cosine_cooccurrence(x: sp.csr_matrix) -> np.ndarray:
    g = np.asarray((x.T @ x).todense(), dtype=np.float64)
    norm = np.sqrt(np.diag(g)) + 1e-9
    c = g / norm[:, None] / norm[None, :]
    np.fill_diagonal(c, 0.0)
    return c.astype(np.float32)


def _ridge_to_likes(x: sp.csr_matrix, likes: np.ndarray, lam: float) -> np.ndarray:
    """``(X'X + lam I)^-1 X' L``: which items a user who rated a set of items liked.

    EASE regresses the rated matrix on itself; this regresses the *liked* matrix
    on the rated one, so a support item points at what its raters liked, not at
    what they merely watched. No zero-diagonal constraint: a support item is never
    a candidate, so its own column does not matter."""
    g = np.asarray((x.T @ x).todense(), dtype=np.float64)
    g[np.diag_indices_from(g)] += lam
    return np.linalg.solve(g, np.asarray(x.T @ likes, dtype=np.float64)).astype(np.float32)


WALK_POPULARITY_DISCOUNT = 0.5  # RP3beta's beta: divide by like count ** beta


def _walk_to_likes(x: sp.csr_matrix, likes: np.ndarray, beta: float) -> np.ndarray:
    """A two-step random walk, item -> a user who rated it -> an item that user
    liked, divided by the target's like count ** ``beta`` (RP3beta: Paudel et al.,
    "Updatable, accurate, diverse, and scalable recommendations for interactive
    applications", TiiS 2016), so it reaches past the items everyone likes."""
    raters = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
    item_to_user = sp.diags(1.0 / np.maximum(raters, 1.0)) @ x.T.astype(np.float64)
    like_counts = likes.sum(axis=1, dtype=np.float64, keepdims=True)
    user_to_liked = likes / np.maximum(like_counts, 1.0)
    walk = np.asarray(item_to_user @ user_to_liked, dtype=np.float64)
    popularity = likes.sum(axis=0, dtype=np.float64) + 1.0
    return (walk / popularity[None, :] ** beta).astype(np.float32)


def _ease(x: sp.csr_matrix, lam: float) -> np.ndarray:
    """Steck's EASE weights (WWW 2019): ``B = I - P diagMat(1 / diag(P))``, zero diagonal."""
    g = np.asarray((x.T @ x).todense(), dtype=np.float64)
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


@dataclass
class Histories:
    """Training users' ratings in time order (one ragged entry per user)."""

    items: list[np.ndarray]
    ratings: list[np.ndarray]

    @classmethod
    def from_ratings(cls, ur: UserRatings, seed: int) -> Histories:
        rng = np.random.default_rng(seed)  # only breaks ties of ratings without timestamps
        items, ratings = [], []
        for row in range(len(ur)):
            it, ra = ordered(*ur.history(row), "time", rng)
            items.append(it)
            ratings.append(ra.astype(np.float64))
        return cls(items, ratings)

    def subset(self, rows: np.ndarray) -> Histories:
        return Histories([self.items[r] for r in rows], [self.ratings[r] for r in rows])

    def __len__(self) -> int:
        return len(self.items)


def _user_matrix(rows: Sequence[np.ndarray], n_items: int) -> sp.csr_matrix:
    lengths = [len(r) for r in rows]
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    idx = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    m = sp.csr_matrix(
        (np.ones(len(idx), dtype=np.float32), idx, indptr), shape=(len(rows), n_items)
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


GROUP_PRIOR = 20.0  # pseudo-users of the overall like rate in each group's like rate


@dataclass
class UserGroups:
    """Which group each side-feature column puts a user in: the value for a category,
    the quintile for a number (edges from the training users), ``None`` if missing."""

    columns: list[str]
    edges: dict[str, np.ndarray]

    @classmethod
    def fit(cls, users: pd.DataFrame | None) -> UserGroups:
        if users is None:
            return cls([], {})
        columns = [c for c in users.columns if c != "user_id"]
        edges = {}
        for c in columns:
            if pd.api.types.is_numeric_dtype(users[c]):
                v = users[c].dropna().to_numpy(dtype=np.float64)
                qs = np.quantile(v, [0.2, 0.4, 0.6, 0.8]) if len(v) else np.zeros(0)
                edges[c] = np.unique(qs)
        return cls(columns, edges)

    def keys(self, rows: pd.DataFrame | None, n: int) -> list[list[str | None]]:
        """Per column, one group key per row (``rows`` as ``score_catalogue`` gets them)."""
        out: list[list[str | None]] = []
        for c in self.columns:
            if rows is None or c not in rows:
                out.append([None] * n)
                continue
            col = rows[c]
            if c in self.edges:
                v = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
                bins = np.digitize(v, self.edges)
                out.append([None if np.isnan(x) else f"q{b}" for x, b in zip(v, bins, strict=True)])
            else:
                out.append([None if pd.isna(x) else str(x) for x in col])
        return out


class Signals:
    """Everything the features are computed from, learned from one set of users."""

    def __init__(
        self,
        hist: Histories,
        n_items: int,
        vectors: np.ndarray,
        *,
        like_threshold: float,
        head: int,
        ease_lam: float,
        episodic: EpisodicLinear,
        episodic_opinion: EpisodicLinear,
        group_keys: list[list[str | None]],
    ) -> None:
        n = n_items
        liked = [i[r >= like_threshold] for i, r in zip(hist.items, hist.ratings, strict=True)]
        self.users = _user_matrix(hist.items, n)  # csr [U, n]
        self.likes = np.asarray(_user_matrix(liked, n).todense(), dtype=np.float32)  # [U, n]
        self.heads = _user_matrix([i[:head] for i in hist.items], n)
        self.user_counts = np.asarray(self.users.sum(axis=1), dtype=np.float64).ravel()
        self.head_counts = np.asarray(self.heads.sum(axis=1), dtype=np.float64).ravel()
        n_users = max(len(hist), 1)
        self.like_rate = self.likes.sum(axis=0, dtype=np.float64) / n_users
        counts = np.asarray(self.users.sum(axis=0), dtype=np.float64).ravel()
        self.rating_rate = counts / n_users
        sums = np.zeros(n)
        for i, r in zip(hist.items, hist.ratings, strict=True):
            np.add.at(sums, i, r)
        all_r = np.concatenate(hist.ratings) if len(hist) else np.zeros(1)
        mu = float(all_r.mean()) if len(all_r) else 0.0
        self.mean_rating = (sums + 5.0 * mu) / (counts + 5.0)  # 5 pseudo-ratings of the mean
        self.cooc = _cosine_cooccurrence(self.users)
        self.ease = _ease(self.users, ease_lam)
        self.after = self._after(hist, n)
        self.ease_like = _ridge_to_likes(self.users, self.likes, ease_lam)
        self.walk_like = _walk_to_likes(self.users, self.likes, WALK_POPULARITY_DISCOUNT)
        self.cooc_like = _cosine_cooccurrence(sp.csr_matrix(self.likes))
        self.episodic = episodic
        self.episodic_opinion = episodic_opinion
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
        self.like_threshold = like_threshold
        # per side-feature column: group key -> like rate among that group's users
        self.groups: list[dict[str, np.ndarray]] = []
        for keys in group_keys:
            table: dict[str, np.ndarray] = {}
            for key in {k for k in keys if k is not None}:
                members = np.array([k == key for k in keys])
                liked_sum = self.likes[members].sum(axis=0, dtype=np.float64)
                table[key] = (liked_sum + GROUP_PRIOR * self.like_rate) / (
                    members.sum() + GROUP_PRIOR
                )
            self.groups.append(table)

    # -- persistence: plain arrays and JSON (see metarec.models.persist) ----------
    _DENSE = (
        "like_rate",
        "rating_rate",
        "mean_rating",
        "cooc",
        "ease",
        "after",
        "ease_like",
        "walk_like",
        "cooc_like",
        "vectors",
    )
    _SQUARE = ("cooc", "ease", "after", "ease_like", "walk_like", "cooc_like")
    _SPARSE = ("users", "heads")

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON fields, arrays); the episodic models are saved by their owner."""
        arrays = {k: np.asarray(getattr(self, k)) for k in self._DENSE}
        likes = sp.csr_matrix(self.likes)
        for name, m in (*((k, getattr(self, k)) for k in self._SPARSE), ("likes", likes)):
            arrays[f"{name}.indptr"] = m.indptr.astype(np.int64)
            arrays[f"{name}.indices"] = m.indices.astype(np.int64)
        group_keys = []
        for i, table in enumerate(self.groups):
            keys = sorted(table)
            group_keys.append(keys)
            n = len(self.like_rate)
            arrays[f"group.{i}"] = np.stack([table[k] for k in keys]) if keys else np.zeros((0, n))
        return {"like_threshold": self.like_threshold, "group_keys": group_keys}, arrays

    @classmethod
    def from_state(
        cls,
        fields: dict[str, Any],
        arrays: dict[str, np.ndarray],
        episodic: EpisodicLinear,
        episodic_opinion: EpisodicLinear,
    ) -> Signals:
        self = cls.__new__(cls)
        for k in cls._DENSE:
            setattr(self, k, arrays[k])
        n = len(self.like_rate)
        for k in cls._DENSE:
            rows = np.shape(getattr(self, k))
            want = (n, n) if k in cls._SQUARE else None
            if rows[0] != n or (want is not None and rows != want):
                raise ModelError(f"array {k} has shape {rows}, not {want or (n,)} for {n} items")
        for k in (*cls._SPARSE, "likes"):
            indptr, indices = arrays[f"{k}.indptr"], arrays[f"{k}.indices"]
            if len(indices) and (indices.min() < 0 or indices.max() >= n):
                raise ModelError(f"array {k}.indices points outside the {n} items")
            data = np.ones(len(indices), dtype=np.float32)
            setattr(self, k, sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, n)))
        self.likes = np.asarray(self.likes.todense(), dtype=np.float32)  # type: ignore[attr-defined]
        self.user_counts = np.asarray(self.users.sum(axis=1), dtype=np.float64).ravel()
        self.head_counts = np.asarray(self.heads.sum(axis=1), dtype=np.float64).ravel()
        self.like_threshold = float(fields["like_threshold"])
        self.groups = []
        for i, keys in enumerate(fields["group_keys"]):
            rates = arrays[f"group.{i}"]
            if len(rates) != len(keys):
                raise ModelError(f"array group.{i} has {len(rates)} rows for {len(keys)} groups")
            self.groups.append({str(k): rates[j] for j, k in enumerate(keys)})
        self.episodic = episodic
        self.episodic_opinion = episodic_opinion
        return self

    @staticmethod
    def _after(hist: Histories, n: int) -> np.ndarray:
        """``(A_ij + 1) / (A_ij + A_ji + 2)``, ``A_ij`` = users who rated j after i."""
        a = np.zeros((n, n), dtype=np.float32)
        for items in hist.items:
            pos = np.arange(len(items))
            a[np.ix_(items, items)] += pos[:, None] < pos[None, :]
        return (a + 1.0) / (a + a.T + 2.0)

    def features(
        self,
        tasks: Sequence[Task],
        candidates: np.ndarray,
        group_keys: list[list[str | None]] | None = None,
    ) -> np.ndarray:
        """Signals [len(tasks), len(candidates), len(FEATURES) + one per side-feature
        column] (float32), for tasks with K >= 1. ``group_keys``: per column, each
        task's group (:meth:`UserGroups.keys`); unknown groups get the overall rate."""
        n = len(self.like_rate)
        b, c = len(tasks), len(candidates)
        ks = np.array([len(t.support_items) for t in tasks])
        kmax = int(ks.max())
        sup = np.zeros((b, kmax), dtype=np.int64)
        mask = np.zeros((b, kmax), dtype=bool)
        opinion = np.zeros((b, kmax))
        support_ratings = np.zeros((b, kmax))
        for j, t in enumerate(tasks):
            k = len(t.support_items)
            sup[j, :k] = t.support_items
            mask[j, :k] = True
            r = np.asarray(t.support_ratings, dtype=np.float64)
            support_ratings[j, :k] = r
            opinion[j, :k] = r - r.mean()
        x = _user_matrix([np.asarray(t.support_items, dtype=np.int64) for t in tasks], n)
        out = np.empty((b, c, len(FEATURES) + len(self.groups)), dtype=np.float32)
        col = iter(range(out.shape[-1]))

        def put(v: np.ndarray) -> None:
            out[:, :, next(col)] = v

        put(np.broadcast_to(np.log(self.like_rate[candidates] + 1e-4), (b, c)))
        put(np.broadcast_to(np.log(self.rating_rate[candidates] + 1e-4), (b, c)))
        put(np.broadcast_to(self.mean_rating[candidates], (b, c)))
        epi = self.episodic.score_catalogue(tasks)
        put(epi[:, candidates])
        rank = np.empty_like(epi)
        rank[np.arange(b)[:, None], np.argsort(-epi, axis=1, kind="stable")] = np.arange(n)
        put(rank[:, candidates])
        put(np.asarray(x @ self.ease[:, candidates]))
        cs = self.cooc[:, candidates][sup]  # [b, kmax, c], never [b, kmax, n]
        kk = ks[:, None].astype(np.float64)
        put(np.where(mask[:, :, None], cs, 0.0).sum(axis=1) / kk)
        put(np.where(mask[:, :, None], cs, -np.inf).max(axis=1))
        last = ks - 1
        put(cs[np.arange(b), last])
        last3 = mask & (np.arange(kmax)[None, :] >= (ks - 3)[:, None])
        put(np.where(last3[:, :, None], cs, 0.0).sum(axis=1) / last3.sum(axis=1)[:, None])
        put(np.einsum("bk,bkc->bc", opinion, cs) / kk)
        put(np.asarray(x @ self.after[:, candidates]) / kk)
        for users, counts in ((self.users, self.user_counts), (self.heads, self.head_counts)):
            overlap = np.asarray((x @ users.T).todense(), dtype=np.float64)  # [b, U]
            w = overlap**2 / np.maximum(counts[None, :] * kk, 1e-9)
            put((w @ self.likes[:, candidates]) / np.maximum(w.sum(axis=1, keepdims=True), 1e-9))
        vs = np.einsum("bkd,cd->bkc", self.vectors[sup], self.vectors[candidates])
        put(np.where(mask[:, :, None], vs, -np.inf).max(axis=1))
        put(np.where(mask[:, :, None], vs, 0.0).sum(axis=1) / kk)
        put(np.einsum("bk,bkc->bc", opinion, vs) / kk)
        put(np.asarray(x @ self.ease_like[:, candidates]))
        put(np.asarray(x @ self.walk_like[:, candidates]) / kk)
        liked = mask & (support_ratings >= self.like_threshold)
        cl = self.cooc_like[:, candidates][sup]
        n_liked = np.maximum(liked.sum(axis=1), 1)[:, None]
        put(np.where(liked[:, :, None], cl, 0.0).sum(axis=1) / n_liked)
        put(self.episodic_opinion.score_catalogue(tasks)[:, candidates])
        put(np.broadcast_to(ks[:, None], (b, c)))
        put(np.broadcast_to(np.array([t.support_ratings.mean() for t in tasks])[:, None], (b, c)))
        likes = np.array([(t.support_ratings >= self.like_threshold).mean() for t in tasks])
        put(np.broadcast_to(likes[:, None], (b, c)))
        for table, keys in zip(
            self.groups, group_keys or [[None] * b] * len(self.groups), strict=True
        ):
            rate = np.stack(
                [table.get(k, self.like_rate) if k is not None else self.like_rate for k in keys]
            )
            put(np.log(rate[:, candidates] + 1e-4))
        assert next(col, None) is None, "every feature is filled"
        return out


TREE_FIELDS = ("feature", "threshold", "missing_left", "left", "right", "is_leaf", "value")


class TreeEnsemble:
    """Boosted regression trees as flat arrays, walked in torch for a batch of rows.

    Built from a fitted scikit-learn ``HistGradientBoostingClassifier`` or a
    LightGBM booster; scoring gives exactly its ``decision_function`` /
    ``predict`` (raw scores): numeric splits only,
    ``x <= threshold`` goes left, a missing value goes where training sent it.
    Plain arrays, so a fitted model saves as safetensors, never pickle.
    """

    def __init__(self, arrays: dict[str, np.ndarray], baseline: float) -> None:
        missing = [f for f in (*TREE_FIELDS, "roots") if f not in arrays]
        if missing:
            raise ModelError(f"tree ensemble: missing arrays {missing}")
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        n_nodes = len(self.arrays["feature"])
        if any(len(self.arrays[f]) != n_nodes for f in TREE_FIELDS):
            raise ModelError("tree ensemble: node arrays differ in length")
        for f in ("left", "right", "roots"):
            a = self.arrays[f]
            if len(a) and (a.min() < 0 or a.max() >= n_nodes):
                raise ModelError(f"tree ensemble: {f} points outside the {n_nodes} nodes")
        self.baseline = float(baseline)
        self._tensors: dict[str, dict[str, torch.Tensor]] = {}
        # states saved before 2026-11-30 carry a "depth" array; the depth now comes
        # from the trees themselves
        self.arrays.pop("depth", None)
        # The walk advances tree t only while ``level < tree_depths[t]``: LightGBM's
        # leaf-wise trees differ a lot in depth, and walking every tree to the deepest
        # one's depth made scoring several times slower than it needs to be.
        self.tree_depths = self._tree_depths()
        self.depth = int(self.tree_depths.max()) if self.tree_depths.size else 0
        self._order = np.argsort(-self.tree_depths, kind="stable")
        self._active = (
            self.tree_depths[self._order][None, :] > np.arange(self.depth)[:, None]
        ).sum(axis=1)

    def _tree_depths(self) -> np.ndarray:
        """Each tree's depth (its deepest leaf's level), found by walking every
        branch from the roots; a cycle in the node arrays is refused."""
        a = self.arrays
        roots = a["roots"].astype(np.int64)
        n_nodes = len(a["feature"])
        depths = np.zeros(len(roots), dtype=np.int64)
        frontier, owner, level = roots, np.arange(len(roots)), 0
        while len(frontier):
            inner = ~a["is_leaf"][frontier]
            frontier, owner = frontier[inner], owner[inner]
            if not len(frontier):
                break
            level += 1
            if level > n_nodes:
                raise ModelError("tree ensemble: the node arrays contain a cycle")
            depths[owner] = level
            frontier = np.concatenate([a["left"][frontier], a["right"][frontier]])
            owner = np.concatenate([owner, owner])
        return depths

    @classmethod
    def from_sklearn(cls, model: Any) -> TreeEnsemble:
        """Export a fitted binary ``HistGradientBoostingClassifier``."""
        try:
            trees = [group[0] for group in model._predictors]
            baseline = float(np.ravel(model._baseline_prediction)[0])
        except (AttributeError, IndexError) as exc:  # private API: name the version
            import sklearn

            raise ModelError(
                f"cannot read the trees of scikit-learn {sklearn.__version__}'s "
                "HistGradientBoostingClassifier (its internals changed)"
            ) from exc
        cols: dict[str, list[np.ndarray]] = {f: [] for f in TREE_FIELDS}
        roots, offset = [], 0
        for tree in trees:
            nodes = tree.nodes
            if nodes["is_categorical"].any():
                raise ModelError("tree ensemble: categorical splits are not supported")
            roots.append(offset)
            cols["feature"].append(nodes["feature_idx"].astype(np.int64))
            cols["threshold"].append(nodes["num_threshold"].astype(np.float64))
            cols["missing_left"].append(nodes["missing_go_to_left"].astype(bool))
            cols["left"].append(nodes["left"].astype(np.int64) + offset)
            cols["right"].append(nodes["right"].astype(np.int64) + offset)
            cols["is_leaf"].append(nodes["is_leaf"].astype(bool))
            cols["value"].append(nodes["value"].astype(np.float64))
            offset += len(nodes)
        arrays = {f: np.concatenate(v) for f, v in cols.items()}
        leaf = arrays["is_leaf"]
        # leaves point at themselves, so a walk of fixed length parks there
        arrays["left"][leaf] = np.flatnonzero(leaf)
        arrays["right"][leaf] = np.flatnonzero(leaf)
        arrays["feature"][leaf] = 0
        arrays["roots"] = np.asarray(roots, dtype=np.int64)
        return cls(arrays, baseline)

    @classmethod
    def from_lightgbm(cls, booster: Any) -> TreeEnsemble:
        """Export a fitted LightGBM booster (numeric ``<=`` splits only), from its
        JSON dump: a missing value goes where LightGBM sends it (``default_left``
        for a ``NaN`` missing type; as the value 0 when the type is ``None``)."""
        dump = booster.dump_model()
        cols: dict[str, list[Any]] = {f: [] for f in TREE_FIELDS}
        roots = []

        def walk(node: dict[str, Any]) -> int:
            me = len(cols["feature"])
            for f in TREE_FIELDS:
                cols[f].append(0)
            if "leaf_value" in node or "split_feature" not in node:
                cols["is_leaf"][me] = True
                cols["value"][me] = float(node.get("leaf_value", 0.0))
                cols["left"][me] = cols["right"][me] = me  # a leaf parks the walk on itself
                return me
            if node.get("decision_type", "<=") != "<=":
                raise ModelError("tree ensemble: categorical splits are not supported")
            threshold = float(node["threshold"])
            missing = node.get("missing_type", "None")
            if missing == "NaN":
                missing_left = bool(node["default_left"])
            elif missing == "None":
                missing_left = threshold >= 0.0  # NaN compared as the value 0
            else:
                raise ModelError(f"tree ensemble: missing type {missing!r} is not supported")
            cols["feature"][me] = int(node["split_feature"])
            cols["threshold"][me] = threshold
            cols["missing_left"][me] = missing_left
            cols["is_leaf"][me] = False
            cols["left"][me] = walk(node["left_child"])
            cols["right"][me] = walk(node["right_child"])
            return me

        for info in dump["tree_info"]:
            roots.append(walk(info["tree_structure"]))
        arrays = {
            "feature": np.asarray(cols["feature"], dtype=np.int64),
            "threshold": np.asarray(cols["threshold"], dtype=np.float64),
            "missing_left": np.asarray(cols["missing_left"], dtype=bool),
            "left": np.asarray(cols["left"], dtype=np.int64),
            "right": np.asarray(cols["right"], dtype=np.int64),
            "is_leaf": np.asarray(cols["is_leaf"], dtype=bool),
            "value": np.asarray(cols["value"], dtype=np.float64),
            "roots": np.asarray(roots, dtype=np.int64),
        }
        return cls(arrays, 0.0)

    @classmethod
    def average(cls, members: Sequence[TreeEnsemble]) -> TreeEnsemble:
        """One ensemble whose decision is the mean of ``members``' decisions."""
        if not members:
            raise ModelError("tree ensemble: nothing to average")
        m = len(members)
        parts: dict[str, list[np.ndarray]] = {f: [] for f in (*TREE_FIELDS, "roots")}
        offset = 0
        for e in members:
            a = e.arrays
            for f in TREE_FIELDS:
                v = a[f]
                if f in ("left", "right"):
                    v = v + offset
                elif f == "value":
                    v = v / m
                parts[f].append(v)
            parts["roots"].append(a["roots"] + offset)
            offset += len(a["feature"])
        arrays = {f: np.concatenate(v) for f, v in parts.items()}
        return cls(arrays, float(np.mean([e.baseline for e in members])))

    def scaled(self, factor: float) -> TreeEnsemble:
        """The same trees with every decision multiplied by ``factor``."""
        arrays = dict(self.arrays)
        arrays["value"] = self.arrays["value"] * factor
        return TreeEnsemble(arrays, self.baseline * factor)

    @property
    def n_trees(self) -> int:
        return len(self.arrays["roots"])

    def decision(
        self, x: np.ndarray, device: torch.device | str = "cpu", chunk: int = 8192
    ) -> np.ndarray:
        """Raw scores (log-odds) of the rows of ``x`` [R, F]."""
        dev = torch.device(device)
        t = self._tensors.get(str(dev))
        if t is None:  # once per device, not per call: scoring calls this per chunk
            t = {k: torch.as_tensor(v, device=dev) for k, v in self.arrays.items()}
            # trees deepest first, so the ones still walking at a level are a prefix
            t["roots"] = t["roots"][torch.as_tensor(self._order, device=dev)]
            t["unorder"] = torch.as_tensor(np.argsort(self._order, kind="stable"), device=dev)
            # children side by side: one gather at 2 * node + goes_right finds the next node
            # (the separate left/right copies are not kept: the walk reads only this)
            t["children"] = torch.stack([t.pop("left"), t.pop("right")], dim=1).reshape(-1)
            self._tensors[str(dev)] = t
        out = np.empty(len(x), dtype=np.float64)
        for lo in range(0, len(x), chunk):
            rows = torch.as_tensor(np.asarray(x[lo : lo + chunk], dtype=np.float64), device=dev)
            missing = bool(torch.isnan(rows).any())
            node = t["roots"].expand(len(rows), -1).clone()
            for level in range(self.depth):
                n = int(self._active[level])
                if n == 0:
                    break
                cur = node[:, :n]
                v = rows.gather(1, t["feature"][cur])
                if missing:
                    right = ~torch.where(
                        torch.isnan(v), t["missing_left"][cur], v <= t["threshold"][cur]
                    )
                else:  # the common case: no missing values, no NaN test per node
                    right = v > t["threshold"][cur]
                node[:, :n] = t["children"][cur * 2 + right]
            # leaf values summed in the trees' own order: the same sum as a full walk's
            leaves = t["value"][node[:, t["unorder"]]]
            out[lo : lo + len(rows)] = (leaves.sum(dim=1) + self.baseline).cpu().numpy()
        return out


class StackedRanker(ScoringModel):
    """Gradient-boosted trees over few-shot signals, trained on P2-shaped episodes.

    Options: ``shots`` (support sizes the training episodes are cut at),
    ``n_candidates`` (most-liked items the trees rank), ``folds`` (cross-fitting),
    ``head`` (how many first ratings ``userknn_head`` matches), tree settings
    (``learning_rate``, ``max_iter``, ``max_leaf_nodes``, ``min_samples_leaf``),
    ``objective`` (``"blend"``, ``"logloss"`` or ``"lambdarank"``, see the module
    notes), ``truncation`` (how deep LambdaMART's pairs reach into each episode's
    ranking), ``device`` for the tree walk (``"auto"``: a GPU when present).
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
    ) -> None:
        shots = tuple(int(k) for k in shots)
        if not shots or min(shots) < 1:
            raise ConfigError(f"{name}: shots must be support sizes >= 1, got {shots}")
        for what, value, low in (
            ("n_candidates", n_candidates, 1),
            ("folds", folds, 2),
            ("bags", bags, 1),
            ("head", head, 1),
            ("max_iter", max_iter, 1),
            ("max_leaf_nodes", max_leaf_nodes, 2),
            ("min_samples_leaf", min_samples_leaf, 1),
            ("chunk_tasks", chunk_tasks, 1),
        ):
            if int(value) < low:
                raise ConfigError(f"{name}: {what} must be >= {low}, got {value}")
        if ease_lam <= 0 or episodic_lam <= 0 or learning_rate <= 0:
            raise ConfigError(
                f"{name}: ease_lam, episodic_lam and learning_rate must be > 0, got "
                f"{ease_lam}, {episodic_lam}, {learning_rate}"
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
        if int(truncation) < 1:
            raise ConfigError(f"{name}: truncation must be >= 1, got {truncation}")
        self.truncation = int(truncation)
        self.chunk_tasks = int(chunk_tasks)
        self.device = device
        self.seed = seed
        self.name = name
        # fitted state
        self.signals: Signals | None = None
        self.groups = UserGroups([], {})
        self.trees: TreeEnsemble | None = None
        self.candidates = np.zeros(0, dtype=np.int64)
        self.n_fit_items = 0
        self.n_added = 0
        self.n_rows = 0
        self.positive_rate = float("nan")

    def _torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

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

        def ridge(features: str, role: str) -> EpisodicLinear:
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
            episodic=episodic,
            episodic_opinion=episodic_opinion,
            group_keys=group_keys,
        )

    def _top_liked(self, signals: Signals) -> np.ndarray:
        order = np.argsort(-signals.like_rate, kind="stable")
        return np.sort(order[: min(self.n_candidates, len(order))])

    def _training_rows(
        self,
        data: TrainingData,
        hist: Histories,
        episodes: Episodes,
        ids: np.ndarray,
        pick: Any,
        parts: list[np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, labels and rows per episode (the ranking groups, in row order)
        of every training episode's candidates, cross-fitted: a part's episodes get
        signals from the other parts' users only."""
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        groups: list[int] = []
        for part in parts:
            rest = np.setdiff1d(np.arange(len(hist)), part)
            signals = self._signals(data, hist.subset(rest), ids[rest], pick(rest))
            cand = self._top_liked(signals)
            mine = np.flatnonzero(np.isin(episodes.owners, part))
            for lo in range(0, len(mine), self.chunk_tasks):
                chunk = mine[lo : lo + self.chunk_tasks]
                # no query: the labels are the episode's later likes
                tasks = [
                    Task.support_only(episodes.support_items[e], episodes.support_ratings[e], -1)
                    for e in chunk
                ]
                f = signals.features(tasks, cand, pick(episodes.owners[chunk]))
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
            return TreeEnsemble.from_lightgbm(ranker.booster_), ranker.predict(x)
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
        ur = data.ratings
        if len(ur) < 2 * self.folds:
            raise DataError(
                f"{self.name}: needs at least {2 * self.folds} training users for "
                f"{self.folds}-fold cross-fitting, got {len(ur)}"
            )
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

        rng = np.random.default_rng(self.seed)
        bags, rows, positives = [], 0, 0
        for bag in range(self.bags):
            # each bag cross-fits on its own random folds, so bags differ in their signals
            parts = np.array_split(rng.permutation(len(hist)), self.folds)
            x, y, groups = self._training_rows(data, hist, episodes, ids, pick, parts)
            rows, positives = rows + len(y), positives + int(y.sum())
            bags.append(self._fit_trees(x, y, groups, self.seed + bag))
        self.n_rows, self.positive_rate = rows, positives / max(rows, 1)
        self.trees = TreeEnsemble.average(bags)
        self.signals = self._signals(data, hist, ids, keys)
        self.candidates = self._top_liked(self.signals)
        self.n_fit_items = data.n_items
        self.n_added = 0
        return self

    # -- scoring ------------------------------------------------------------
    def _fitted(self) -> tuple[Signals, TreeEnsemble]:
        if self.signals is None or self.trees is None:
            raise ModelError(f"{self.name}: not fitted")
        return self.signals, self.trees

    @property
    def n_items(self) -> int:
        return self.n_fit_items + self.n_added

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        signals, trees = self._fitted()
        known, n = self.n_fit_items, self.n_items
        cand = self.candidates
        prior = signals.like_rate
        scores = np.empty((len(tasks), n))
        # items the signals know nothing of (added after training) cannot be in a support
        # set's features; a support of only such items is a K = 0 user
        seen = []
        for t in tasks:
            items = np.asarray(t.support_items, dtype=np.int64)
            ratings = np.asarray(t.support_ratings, dtype=np.float64)
            ok = items < known
            seen.append(replace(t, support_items=items[ok], support_ratings=ratings[ok]))
        rows = [j for j, t in enumerate(seen) if len(t.support_items) > 0]
        keys = self.groups.keys(users, len(tasks))
        dev = self._torch_device()
        for lo in range(0, len(rows), self.chunk_tasks):
            chunk = rows[lo : lo + self.chunk_tasks]
            chunk_keys = [[col[j] for j in chunk] for col in keys]
            f = signals.features([seen[j] for j in chunk], cand, chunk_keys)
            raw = trees.decision(f.reshape(-1, f.shape[-1]), dev).reshape(len(chunk), len(cand))
            # non-candidates below every candidate, in popularity order among themselves
            floor = raw.min(axis=1, keepdims=True) - 1.0
            scores[chunk, :known] = floor + 0.5 * prior[None, :] / max(prior.max(), 1e-12)
            scores[np.asarray(chunk)[:, None], cand[None, :]] = raw
        empty = [j for j, t in enumerate(seen) if len(t.support_items) == 0]
        scores[empty, :known] = prior
        if n > known:
            lo_ = scores[:, :known].min(axis=1, keepdims=True)
            scores[:, known:] = lo_ - 1.0
        return scores

    def add_items(self, items: pd.DataFrame, vectors: np.ndarray) -> None:
        """Grow the catalogue. New items score last until retraining: no episode links
        them to anything, and in a support set they contribute nothing."""
        self._fitted()
        m = len(items)
        if vectors is not None and len(vectors) != m:
            raise DataError(f"{self.name}.add_items: {m} items but {len(vectors)} vectors")
        self.n_added += m

    def describe(self) -> dict[str, Any]:
        return {
            "features": [*FEATURES, *(f"group:{c}" for c in self.groups.columns)],
            "shots": list(self.shots),
            "n_candidates": self.n_candidates,
            "objective": self.objective,
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
        }
        sig_fields, sig_arrays = signals.to_state()
        epi_options, epi_fitted, epi_arrays = signals.episodic.to_state()
        op_options, op_fitted, op_arrays = signals.episodic_opinion.to_state()
        fitted = {
            "n_fit_items": self.n_fit_items,
            "n_added": self.n_added,
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
        arrays = {"candidates": self.candidates}
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
                fitted["signals"], part("signals."), episodic, episodic_opinion
            )
            model.trees = TreeEnsemble(part("trees."), float(fitted["tree_baseline"]))
            model.groups = UserGroups(
                [str(c) for c in fitted["group_columns"]],
                {str(c): np.asarray(e, dtype=np.float64) for c, e in fitted["group_edges"].items()},
            )
            model.candidates = np.asarray(arrays["candidates"], dtype=np.int64)
            model.n_fit_items = int(fitted["n_fit_items"])
            model.n_added = int(fitted["n_added"])
            model.n_rows = int(fitted.get("training_rows", 0))
            model.positive_rate = float(fitted.get("positive_rate", float("nan")))
        except KeyError as exc:
            raise ModelError(f"{name}: saved state lacks {exc}") from None
        n = model.n_fit_items
        if len(model.signals.like_rate) != n or any(m.n_items != n for m in models):
            raise ModelError(f"{name}: signals and episodic models disagree with {n} items")
        if len(model.signals.groups) != len(model.groups.columns):
            raise ModelError(f"{name}: {len(model.groups.columns)} group columns, tables differ")
        c = model.candidates
        if len(c) == 0 or c.min() < 0 or c.max() >= n:
            raise ModelError(f"{name}: candidates must be item indices in [0, {n})")
        return model
