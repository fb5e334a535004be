"""The signals the stacked ranker's trees read: what a support set says about each candidate.

One row of :data:`FEATURES` per (user, candidate item): popularity, the episodic
ridge's score, item-to-item co-occurrence and regression weights (EASE, a ridge
to liked items, an RP3beta walk), user-kNN over the raters of the support,
text-vector similarity, and the support's own size and ratings. Which of them
earn their place, and why, is in :mod:`metarec.models.stacked`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from metarec.data.features import blank, category, feature_columns, many_numbers, rekeyed
from metarec.data.tasks import Task, UserRatings, ordered
from metarec.errors import ModelError
from metarec.models.episodic import EpisodicLinear

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


def top_liked(like_rate: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` most-liked items (ties: the lower index first), in index order."""
    order = np.argsort(-like_rate, kind="stable")
    return np.sort(order[: min(n, len(order))])


def _gram_columns(x: sp.csr_matrix, columns: np.ndarray) -> np.ndarray:
    """``(X'X)[:, columns]`` in float64, without forming the other columns."""
    return np.asarray((x.T @ x[:, columns]).todense(), dtype=np.float64)


def _zero_own_entries(m: np.ndarray, columns: np.ndarray) -> None:
    """Zero each column's entry for its own item (the diagonal of the square matrix)."""
    m[columns, np.arange(len(columns))] = 0.0


def cosine_cooccurrence(x: sp.csr_matrix, columns: np.ndarray) -> np.ndarray:
    """Cosine between items' rater vectors, every item against ``columns`` [n, C]."""
    g = _gram_columns(x, columns)
    squares = np.asarray(x.multiply(x).sum(axis=0), dtype=np.float64).ravel()  # diag(X'X)
    norm = np.sqrt(squares) + 1e-9
    c = g / norm[:, None] / norm[None, columns]
    _zero_own_entries(c, columns)
    return c.astype(np.float32)


def _regularised_gram(x: sp.csr_matrix, lam: float) -> np.ndarray:
    g = np.asarray((x.T @ x).todense(), dtype=np.float64)
    g[np.diag_indices_from(g)] += lam
    return g


def ridge_to_likes(
    x: sp.csr_matrix, likes: np.ndarray, lam: float, columns: np.ndarray
) -> np.ndarray:
    """``(X'X + lam I)^-1 X' L`` for the liked items ``columns``: which of them a
    user who rated a set of items liked.

    EASE regresses the rated matrix on itself; this regresses the *liked* matrix
    on the rated one, so a support item points at what its raters liked, not at
    what they merely watched. No zero-diagonal constraint: a support item is never
    a candidate, so its own column does not matter."""
    target = np.asarray(x.T @ likes[:, columns], dtype=np.float64)
    return np.linalg.solve(_regularised_gram(x, lam), target).astype(np.float32)


WALK_POPULARITY_DISCOUNT = 0.5  # RP3beta's beta: divide by like count ** beta


def walk_to_likes(
    x: sp.csr_matrix, likes: np.ndarray, beta: float, columns: np.ndarray
) -> np.ndarray:
    """A two-step random walk, item -> a user who rated it -> an item in ``columns``
    that user liked, divided by the target's like count ** ``beta`` (RP3beta: Paudel
    et al., "Updatable, accurate, diverse, and scalable recommendations for
    interactive applications", TiiS 2016), so it reaches past the items everyone
    likes."""
    raters = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
    item_to_user = sp.diags(1.0 / np.maximum(raters, 1.0)) @ x.T.astype(np.float64)
    like_counts = likes.sum(axis=1, dtype=np.float64, keepdims=True)
    user_to_liked = likes[:, columns] / np.maximum(like_counts, 1.0)
    walk = np.asarray(item_to_user @ user_to_liked, dtype=np.float64)
    popularity = likes[:, columns].sum(axis=0, dtype=np.float64) + 1.0
    return (walk / popularity[None, :] ** beta).astype(np.float32)


def ease(x: sp.csr_matrix, lam: float, columns: np.ndarray) -> np.ndarray:
    """Steck's EASE weights (WWW 2019), ``B = I - P diagMat(1 / diag(P))`` with a
    zero diagonal, for the target items ``columns`` [n, C]. ``P`` needs its diagonal
    as well as those columns, so the whole inverse is formed (and dropped)."""
    p = np.linalg.inv(_regularised_gram(x, lam))
    b = -p[:, columns] / np.diag(p)[None, columns]
    _zero_own_entries(b, columns)
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
        columns = feature_columns(users)
        edges = {}
        for c in columns:
            col = users[c]
            # files give every column as text: ml-100k's ages made 61 groups of one age
            # each, not quintiles; numbers as text are numbers where the feature encoder
            # bins them
            numbers = col.dropna() if pd.api.types.is_numeric_dtype(col) else many_numbers(col)
            if numbers is not None:
                v = numbers.to_numpy(dtype=np.float64)
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
                bins = np.digitize(v, self.edges[c])
                out.append([None if np.isnan(x) else f"q{b}" for x, b in zip(v, bins, strict=True)])
            else:
                # as the feature encoder reads categories: a blank is missing, and the
                # file's "34.0" the request's 34
                out.append([None if blank(x) else category(x) for x in col])
        return out


class Signals:
    """Everything the features are computed from, learned from one set of users.

    The item-to-item matrices keep only the columns of the ``n_candidates``
    most-liked items (``candidates``), the only items the trees ever rank: a
    fitted model then holds ``n x 300`` numbers per matrix instead of ``n x n``
    (68 MB against 12 MB on ml-100k, 330 MB against 27 MB on ml-1m). Fitting still
    forms the full Gram matrix and, for EASE, its inverse, one at a time."""

    def __init__(
        self,
        hist: Histories,
        n_items: int,
        vectors: np.ndarray,
        *,
        like_threshold: float,
        head: int,
        ease_lam: float,
        n_candidates: int,
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
        self.candidates = top_liked(self.like_rate, n_candidates)
        cand = self.candidates
        self.cooc = cosine_cooccurrence(self.users, cand)
        self.ease = ease(self.users, ease_lam, cand)
        self.after = self._after(hist, n, cand)
        self.ease_like = ridge_to_likes(self.users, self.likes, ease_lam, cand)
        self.walk_like = walk_to_likes(self.users, self.likes, WALK_POPULARITY_DISCOUNT, cand)
        self.cooc_like = cosine_cooccurrence(sp.csr_matrix(self.likes), cand)
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
    # item x candidate (states saved before 2026-12-01: item x item, see from_state)
    _COLUMNS = ("cooc", "ease", "after", "ease_like", "walk_like", "cooc_like")
    _SPARSE = ("users", "heads")

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON fields, arrays); the episodic models and the candidates are saved by
        their owner."""
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
        candidates: np.ndarray,
    ) -> Signals:
        """Rebuild from :meth:`to_state`'s parts. A state saved with whole item x item
        matrices keeps their candidate columns, the only ones scoring reads."""
        self = cls.__new__(cls)
        for k in cls._DENSE:
            setattr(self, k, arrays[k])
        n = len(self.like_rate)
        cand = np.asarray(candidates, dtype=np.int64)
        if len(cand) == 0 or cand.min() < 0 or cand.max() >= n:
            raise ModelError(f"candidates must be item indices in [0, {n})")
        self.candidates = cand
        for k in cls._DENSE:
            shape = np.shape(getattr(self, k))
            if k in cls._COLUMNS and shape == (n, n) and len(cand) != n:
                setattr(self, k, np.ascontiguousarray(getattr(self, k)[:, cand]))
                shape = (n, len(cand))
            want = (n, len(cand)) if k in cls._COLUMNS else None
            if shape[0] != n or (want is not None and shape != want):
                raise ModelError(f"array {k} has shape {shape}, not {want or (n,)} for {n} items")
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
            self.groups.append(rekeyed({str(k): rates[j] for j, k in enumerate(keys)}))
        self.episodic = episodic
        self.episodic_opinion = episodic_opinion
        return self

    @staticmethod
    def _after(hist: Histories, n: int, columns: np.ndarray) -> np.ndarray:
        """``(A_ij + 1) / (A_ij + A_ji + 2)``, ``A_ij`` = users who rated j after i,
        for the items j in ``columns``."""
        a = np.zeros((n, n), dtype=np.float32)
        for items in hist.items:
            pos = np.arange(len(items))
            a[np.ix_(items, items)] += pos[:, None] < pos[None, :]
        ahead = a[:, columns]
        return (ahead + 1.0) / (ahead + a[columns, :].T + 2.0)

    def features(
        self, tasks: Sequence[Task], group_keys: list[list[str | None]] | None = None
    ) -> np.ndarray:
        """Signals [len(tasks), len(candidates), len(FEATURES) + one per side-feature
        column] (float32), for tasks with K >= 1. ``group_keys``: per column, each
        task's group (:meth:`UserGroups.keys`); unknown groups get the overall rate."""
        n = len(self.like_rate)
        candidates = self.candidates
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
        put(np.asarray(x @ self.ease))
        cs = self.cooc[sup]  # [b, kmax, c]
        kk = ks[:, None].astype(np.float64)
        put(np.where(mask[:, :, None], cs, 0.0).sum(axis=1) / kk)
        put(np.where(mask[:, :, None], cs, -np.inf).max(axis=1))
        last = ks - 1
        put(cs[np.arange(b), last])
        last3 = mask & (np.arange(kmax)[None, :] >= (ks - 3)[:, None])
        put(np.where(last3[:, :, None], cs, 0.0).sum(axis=1) / last3.sum(axis=1)[:, None])
        put(np.einsum("bk,bkc->bc", opinion, cs) / kk)
        put(np.asarray(x @ self.after) / kk)
        for users, counts in ((self.users, self.user_counts), (self.heads, self.head_counts)):
            overlap = np.asarray((x @ users.T).todense(), dtype=np.float64)  # [b, U]
            w = overlap**2 / np.maximum(counts[None, :] * kk, 1e-9)
            put((w @ self.likes[:, candidates]) / np.maximum(w.sum(axis=1, keepdims=True), 1e-9))
        vs = np.einsum("bkd,cd->bkc", self.vectors[sup], self.vectors[candidates])
        put(np.where(mask[:, :, None], vs, -np.inf).max(axis=1))
        put(np.where(mask[:, :, None], vs, 0.0).sum(axis=1) / kk)
        put(np.einsum("bk,bkc->bc", opinion, vs) / kk)
        put(np.asarray(x @ self.ease_like))
        put(np.asarray(x @ self.walk_like) / kk)
        liked = mask & (support_ratings >= self.like_threshold)
        cl = self.cooc_like[sup]
        n_liked = np.maximum(liked.sum(axis=1), 1)[:, None]
        put(np.where(liked[:, :, None], cl, 0.0).sum(axis=1) / n_liked)
        put(self.episodic_opinion.score_catalogue(tasks)[:, candidates])
        put(np.broadcast_to(ks[:, None], (b, c)))
        put(np.broadcast_to(np.array([t.support_ratings.mean() for t in tasks])[:, None], (b, c)))
        likes = np.array([(t.support_ratings >= self.like_threshold).mean() for t in tasks])
        put(np.broadcast_to(likes[:, None], (b, c)))
        per_group: list[list[str | None]] = group_keys or [[None] * b for _ in self.groups]
        for table, keys in zip(self.groups, per_group, strict=True):
            rate = np.stack(
                [table.get(k, self.like_rate) if k is not None else self.like_rate for k in keys]
            )
            put(np.log(rate[:, candidates] + 1e-4))
        assert next(col, None) is None, "every feature is filled"
        return out
