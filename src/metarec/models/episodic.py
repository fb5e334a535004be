"""An episodic linear item-to-item model: few-shot ranking as one closed-form ridge regression.

What it is
----------
A map from a user's support set to a score for every catalogue item,
``scores = c + x W``, where ``x`` encodes the support set (which items were
rated, optionally how) and ``W`` is an item-by-item weight matrix. ``W`` is
learned over *episodes* cut the way protocol P2 tests a model: for every
training user and every support size ``K`` in ``shots``, the input is the
user's first ``K`` ratings by time and the target is the one-hot row of the
items that user *later* liked (rated ``>= like_threshold``). The least-squares
fit with an L2 penalty has a closed form (ridge regression with an intercept)::

    W = (Xc' Xc + lam I)^-1 Xc' (Y - ymean),      c = ymean - xmean W

so the "meta-training" is one Gram matrix and one symmetric solve. It is an
amortised meta-learner in the strict sense: nothing is adapted per user; what
is learned is the map from a support set to a preference, over many tasks.

Why
---
EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019)
showed that an item-to-item ridge regression solved in closed form is a
strong top-N recommender. EASE regresses a user's whole history on itself
(with a zero diagonal). Here the regression is episodic instead: the input is
only what a new user has rated *so far* and the target what they go on to
like, so the model learns what P2 asks ("given the first K, what comes
next") -- including time effects EASE cannot see (the first films a MovieLens
user rates are the well-known ones; later likes are different items). An
offline experiment on ml-100k found this beats popularity, the strong P2
baseline, by about 7 % nDCG@10 at K = 10 where the gradient-trained meta
models do not.

Choices
-------
* Input: ``x_j = 1 / K**support_scale`` for each support item; with
  ``"binary+ratings"`` also ``(r_j - mu) / u / K**support_scale`` in a second
  block, ``mu`` the training mean rating (a dislike then pushes the other
  way), ``u`` a quarter of the rating scale (1 on 1-5 stars, so the same
  ridge strengths hold on any scale). ``support_scale = 0`` (plain one-hot)
  by default: a longer support set then moves the scores further from the
  prior, as more evidence should; unit-norm inputs (``0.5``) scored lower on
  validation in each of the 5 P2 folds of ml-100k (mean nDCG@10 over K 0.426 against 0.432).
  Which feature set, and ``lam`` from ``lams``, are chosen by validation
  nDCG@10 on the validation users' P2 episodes (``validation_shots``, each
  K weighted equally), since the best ridge strength grows with the data.
* Targets: ``1 / L**target_scale`` for each of the ``L`` later likes
  (``0``: plain one-hot, so users with long histories weigh more; on
  validation the choice made no difference beyond noise).
* Episodes: only P2's own support sizes by default; every K from 1 to 20
  gave no better validation score for four times the episodes.
* The Gram matrix ``X'X`` and ``X'Y`` are accumulated from sparse chunks of
  episodes (never a dense ``[episodes x items]`` matrix), in float64. Items
  that never occur in a support set get no row in the solve (their weights
  are exactly 0, which is also what ridge gives them).
* One Cholesky solve per (feature set, ``lam``), in float64 torch on
  ``device`` (a GPU when present; the CPU otherwise).
* ``K = 0`` (no support) gives the mean target of a ``K = 0`` episode: the
  fraction of training users who liked each item -- the popularity prior.
  The regression's own intercept ``c`` is *not* used there: no training
  episode has ``x = 0`` (each has at least one support item), so ``c`` is
  an extrapolation of the linear fit, not a prior.
* Items added with :meth:`add_items` have no learned column: they score
  just below the user's lowest known-item score, so this model never
  recommends them until it is retrained, and in a support set they
  contribute nothing; text-aware ensemble members cover new items.
* Memory grows with the square of the catalogue (168 bytes per item pair on
  ml-100k); a catalogue too large for the machine is refused before the fit
  (:mod:`metarec.models.memory`). ``max_items`` fits the model on the most
  rated items only and ranks the rest by popularity below them
  (:mod:`metarec.models.universe`); by default every item is used.
* Ranking only (``predicts_ratings = False``). Deterministic: the only
  randomness is the seeded tie order of ratings without timestamps.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from metarec.data.tasks import Task, UserRatings, ordered
from metarec.device import check_device, float64_device, resolve_device
from metarec.errors import ConfigError, DataError, ModelError
from metarec.evaluation.metrics import ranking_table
from metarec.inputs import check_new_items
from metarec.models.base import (
    ScoringModel,
    TrainingData,
    check_positive,
    check_seed,
    check_shots,
    check_whole,
    top_k,
)
from metarec.models.memory import (
    EPISODIC_BINARY_BYTES_PER_PAIR,
    EPISODIC_BYTES_PER_PAIR,
    require_memory,
)
from metarec.models.universe import Universe, check_max_items
from metarec.values import is_finite_number

FeatureSet = Literal["binary", "binary+ratings"]
FEATURE_SETS: tuple[FeatureSet, ...] = ("binary", "binary+ratings")
DEFAULT_SHOTS = (1, 3, 5, 10, 20)
DEFAULT_LAMS = (100.0, 300.0, 1000.0, 3000.0, 10000.0)
VALIDATION_SHOTS = (1, 3, 5, 10, 20)  # P2's support sizes, K = 0 aside (no lam acts there)


@dataclass
class Episodes:
    """Support sets and later likes of a set of episodes (ragged, one entry per episode)."""

    shots: np.ndarray  # int64 [E]: K of each episode
    support_items: list[np.ndarray]
    support_ratings: list[np.ndarray]
    liked: list[np.ndarray]  # items rated >= like_threshold after the support
    owners: np.ndarray  # int64 [E]: the user (row of the UserRatings) of each episode

    def __len__(self) -> int:
        return len(self.shots)

    def subset(self, rows: np.ndarray) -> Episodes:
        """The episodes at ``rows``, in that order."""
        return Episodes(
            self.shots[rows],
            [self.support_items[i] for i in rows],
            [self.support_ratings[i] for i in rows],
            [self.liked[i] for i in rows],
            self.owners[rows],
        )


def build_episodes(
    ur: UserRatings,
    shots: Sequence[int],
    *,
    like_threshold: float,
    seed: int,
    require_liked: bool = False,
) -> Episodes:
    """For each user and each ``K`` in ``shots`` with more than ``K`` ratings: the first
    ``K`` by time as support, the later likes as target (P2's episode, on training users).

    ``require_liked`` drops episodes with no later like (nDCG is undefined there).
    """
    rng = np.random.default_rng(seed)  # only breaks ties of ratings without timestamps
    ks, s_items, s_ratings, liked, owners = [], [], [], [], []
    for row in range(len(ur)):
        items, ratings = ordered(*ur.history(row), "time", rng)
        for k in shots:
            if len(items) <= k:
                continue
            later = items[k:][ratings[k:] >= like_threshold]
            if require_liked and len(later) == 0:
                continue
            ks.append(k)
            owners.append(row)
            s_items.append(items[:k])
            s_ratings.append(ratings[:k].astype(np.float64))
            liked.append(later)
    return Episodes(
        np.asarray(ks, dtype=np.int64),
        s_items,
        s_ratings,
        liked,
        np.asarray(owners, dtype=np.int64),
    )


def support_matrix(
    items: Sequence[np.ndarray],
    ratings: Sequence[np.ndarray],
    n_items: int,
    *,
    mu: float,
    scale: float,
    with_ratings: bool,
    unit: float = 1.0,
) -> sp.csr_matrix:
    """Sparse inputs [len(items), n_items (x2 with ratings)]: ``1 / K**scale`` per support
    item, then (with ratings) ``(r - mu) / unit / K**scale`` in a second block."""
    counts = np.array([len(i) for i in items], dtype=np.int64)
    rows = np.repeat(np.arange(len(items)), counts)
    cols = np.concatenate([*items, np.zeros(0, dtype=np.int64)]).astype(np.int64)
    weight = np.repeat(np.maximum(counts, 1).astype(np.float64) ** -scale, counts)
    width = 2 * n_items if with_ratings else n_items
    if with_ratings:
        r = np.concatenate([*(np.asarray(x, dtype=np.float64) for x in ratings), np.zeros(0)])
        rows = np.concatenate([rows, rows])
        cols = np.concatenate([cols, cols + n_items])
        weight = np.concatenate([weight, weight * (r - mu) / unit])
    # duplicates (an item rated twice) add up, as they would in a dense one-hot sum
    return sp.csr_matrix((weight, (rows, cols)), shape=(len(items), width))


def target_matrix(liked: Sequence[np.ndarray], n_items: int, scale: float = 0.0) -> sp.csr_matrix:
    """Targets [len(liked), n_items]: ``1 / L**scale`` for each of the L later likes."""
    liked = [np.unique(i) for i in liked]  # an item liked twice is still one target
    counts = np.array([len(i) for i in liked], dtype=np.int64)
    rows = np.repeat(np.arange(len(liked)), counts)
    cols = np.concatenate([*liked, np.zeros(0, dtype=np.int64)]).astype(np.int64)
    value = np.repeat(np.maximum(counts, 1).astype(np.float64) ** -scale, counts)
    return sp.csr_matrix((value, (rows, cols)), shape=(len(liked), n_items))


def _validation_ndcg(scores: np.ndarray, episodes: Episodes) -> float:
    """Mean over K of the mean nDCG@10 of episodes with that K (support items masked)."""
    for e, items in enumerate(episodes.support_items):
        scores[e, items] = -np.inf
    per_ep = ranking_table(top_k(scores, 10), episodes.liked, 10)["ndcg@10"]
    # each K counts equally, as in the P2 table
    return float(
        np.mean([np.nanmean(per_ep[episodes.shots == k]) for k in np.unique(episodes.shots)])
    )


class EpisodicLinear(ScoringModel):
    """Closed-form ridge from a time-ordered support set to the items liked later.

    Options: ``shots`` (support sizes episodes are cut at), ``lams`` (ridge grid),
    ``feature_sets`` (candidates, chosen by validation), ``support_scale`` (input
    weight ``1 / K**support_scale``), ``device`` (``"auto"``: a GPU when present),
    ``progress`` (a bar over the ridge solves: 6 s on ml-100k, 80 s on ml-1m,
    growing with the cube of the catalogue), ``max_items`` (fit on that many of the
    most rated items, rank the rest by popularity below them; None: every item).
    """

    name = "metarec-episodic"
    predicts_ratings = False

    def __init__(
        self,
        *,
        shots: Sequence[int] = DEFAULT_SHOTS,
        lams: Sequence[float] = DEFAULT_LAMS,
        feature_sets: Sequence[FeatureSet] = FEATURE_SETS,
        support_scale: float = 0.0,
        target_scale: float = 0.0,
        validation_shots: Sequence[int] = VALIDATION_SHOTS,
        like_threshold: float | None = None,
        chunk_episodes: int = 4096,
        device: str = "auto",
        seed: int = 0,
        name: str = "metarec-episodic",
        progress: bool = False,
        max_items: int | None = None,
    ) -> None:
        shots = check_shots(shots, f"{name}: shots")
        if isinstance(lams, (str, bytes)) or not len(lams):
            raise ConfigError(f"{name}: lams: expected a list of ridge strengths, got {lams!r}")
        check_positive(name, **{f"lams[{i}]": lam for i, lam in enumerate(lams)})
        check_whole(chunk_episodes, f"{name}: chunk_episodes", 1)  # 2.5: a TypeError at fit
        check_seed(seed, f"{name}: seed")  # -1: numpy's bare ValueError at fit
        for what, value in (("support_scale", support_scale), ("target_scale", target_scale)):
            # NaN fitted, and then every score was NaN
            if not is_finite_number(value):
                raise ConfigError(f"{name}: {what} must be a finite number, got {value!r}")
        bad = [f for f in feature_sets if f not in FEATURE_SETS]
        if not feature_sets or bad:
            raise ConfigError(f"{name}: feature_sets must be among {FEATURE_SETS}, got {bad}")
        self.shots = shots
        self.lams = tuple(float(x) for x in lams)
        self.feature_sets: tuple[FeatureSet, ...] = tuple(feature_sets)
        self.support_scale = float(support_scale)
        self.target_scale = float(target_scale)
        self.validation_shots = check_shots(validation_shots, f"{name}: validation_shots")
        self._like_option(like_threshold)  # None: the data's scale, at fit
        self.chunk_episodes = int(chunk_episodes)
        self.device = check_device(device, f"{name}: device")
        self.seed = seed
        self.name = name
        self.progress = progress
        self.max_items = check_max_items(name, max_items)
        # fitted state, over the universe's U items (the catalogue, without max_items)
        self.universe = Universe.whole(0)
        self.w_binary: np.ndarray | None = None  # float32 [U, U]
        self.w_ratings: np.ndarray | None = None  # float32 [U, U] or None
        self.intercept = np.zeros(0)  # c = ymean - xmean W, float64 [U]
        self.prior = np.zeros(0)  # K = 0 scores: mean target of a K = 0 episode, [U]
        self.mu = 0.0
        # a quarter of the rating scale (1 on 1-5 stars): the ratings block is in these
        # units, so the same ridge strengths suit a 1-10 or a 0.5-5 scale
        self.rating_unit = 1.0
        self.lam: float | None = None
        self.features: FeatureSet | None = None
        self.validation: dict[str, float] = {}  # "features lam" -> validation nDCG@10
        self.n_episodes = 0

    # -- fitting ------------------------------------------------------------
    def _torch_device(self) -> torch.device:
        return resolve_device(self.device, f"{self.name}: device")

    @property
    def _with_ratings(self) -> bool:
        """Whether a candidate feature set has the ratings block (D = 2N, not N)."""
        return any(f != "binary" for f in self.feature_sets)

    def gram(
        self, episodes: Episodes, n_items: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Centred ``Xc'Xc`` [D, D], ``Xc'(Y - ymean)`` [D, N], ``xmean`` [D], ``ymean`` [N],
        accumulated chunk by chunk. D = 2N (binary block, then ratings block) when a
        candidate feature set uses ratings, else N."""
        with_ratings = self._with_ratings
        d = 2 * n_items if with_ratings else n_items
        g = np.zeros((d, d))
        xty = np.zeros((d, n_items))
        xsum, ysum = np.zeros(d), np.zeros(n_items)
        for lo in range(0, len(episodes), self.chunk_episodes):
            sl = slice(lo, lo + self.chunk_episodes)
            x = support_matrix(
                episodes.support_items[sl],
                episodes.support_ratings[sl],
                n_items,
                mu=self.mu,
                unit=self.rating_unit,
                scale=self.support_scale,
                with_ratings=with_ratings,
            )
            y = target_matrix(episodes.liked[sl], n_items, self.target_scale)
            xt = x.T.tocsr()
            for acc, prod in ((g, xt @ x), (xty, xt @ y)):
                coo = prod.tocoo()
                coo.sum_duplicates()  # each (row, col) once, so fancy += adds every term
                acc[coo.row, coo.col] += coo.data
            xsum += np.asarray(x.sum(axis=0)).ravel()
            ysum += np.asarray(y.sum(axis=0)).ravel()
        n = max(len(episodes), 1)
        xm, ym = xsum / n, ysum / n
        # centring after the fact: Xc'Xc = X'X - n xm xm', Xc'(Y - ym) = X'Y - n xm ym'
        g -= n * np.outer(xm, xm)
        xty -= n * np.outer(xm, ym)
        return g, xty, xm, ym

    def fit(self, data: TrainingData) -> EpisodicLinear:
        self._fit_like(data)
        if len(data.interactions) == 0:
            raise DataError(f"{self.name}: no training ratings")
        universe = Universe.most_rated(data, self.max_items, self.like_threshold)
        data = universe.restrict(data)
        ur = data.ratings
        n = data.n_items
        require_memory(
            self.name,
            n,
            EPISODIC_BYTES_PER_PAIR if self._with_ratings else EPISODIC_BINARY_BYTES_PER_PAIR,
        )
        self.mu = float(ur.ratings.mean())
        lo, hi = data.rating_range
        self.rating_unit = (hi - lo) / 4.0 if hi > lo else 1.0
        episodes = build_episodes(
            ur, self.shots, like_threshold=self.like_threshold, seed=self.seed
        )
        if len(episodes) == 0:
            raise DataError(
                f"{self.name}: no training user has more than {min(self.shots)} ratings"
            )
        self.n_episodes = len(episodes)
        g, xty, xm, ym = self.gram(episodes, n)

        val = data.validation_ratings
        val_eps = (
            build_episodes(
                val,
                self.validation_shots,
                like_threshold=self.like_threshold,
                seed=self.seed,
                require_liked=True,
            )
            if val is not None
            else None
        )
        dev = self._torch_device()
        best: tuple[float, FeatureSet, float, np.ndarray, np.ndarray] | None = None
        self.validation = {}
        choose = val_eps is not None and len(val_eps) > 0
        # nothing to choose on: the first feature set and the middle of the grid
        grid = [
            (feats, lam)
            for feats in (self.feature_sets if choose else self.feature_sets[:1])
            for lam in (self.lams if choose else self.lams[len(self.lams) // 2 :][:1])
        ]
        for feats, lam in tqdm(grid, desc=self.name, unit="solve", disable=not self.progress):
            d = n if feats == "binary" else 2 * n
            # features no training support ever set have zero rows: leave them out of
            # the solve (ridge gives them weight 0 anyway) to shrink the system
            active = np.flatnonzero(np.diag(g)[:d] > 0)
            w = np.zeros((d, n))
            w[active] = self._solve(g[np.ix_(active, active)], xty[active], lam, dev)
            score = float("nan")
            if choose:
                assert val_eps is not None
                xv = support_matrix(
                    val_eps.support_items,
                    val_eps.support_ratings,
                    n,
                    mu=self.mu,
                    unit=self.rating_unit,
                    scale=self.support_scale,
                    with_ratings=feats != "binary",
                )
                s = np.asarray(xv @ w) + (ym - xm[:d] @ w)
                score = _validation_ndcg(s, val_eps)
                self.validation[f"{feats} {lam:g}"] = score
            if best is None or score > best[0] + 1e-12:
                best = (score, feats, lam, w, xm[:d])
        assert best is not None
        _, self.features, self.lam, w, xm_d = best
        self.intercept = ym - xm_d @ w
        self.w_binary = w[:n].astype(np.float32)
        self.w_ratings = w[n:].astype(np.float32) if self.features != "binary" else None
        # K = 0: the target of a K = 0 episode is everything the user liked
        liked = ur.ratings >= self.like_threshold
        self.prior = np.bincount(ur.items[liked], minlength=n) / max(len(ur), 1)
        self.universe = universe
        return self

    @staticmethod
    def _solve(gram: np.ndarray, xty: np.ndarray, lam: float, dev: torch.device) -> np.ndarray:
        """``(gram + lam I)^-1 xty`` by Cholesky in float64 on ``dev`` (on the CPU where
        ``dev`` has no float64).

        One factorisation per ``lam`` rather than one eigendecomposition for the
        grid: on a busy 2-core machine LAPACK's symmetric eigensolver ran 10-50x
        slower than a Cholesky solve of the same size.
        """
        dev = float64_device(dev)
        try:
            return _cholesky_solve(gram, xty, lam, dev)
        except torch.cuda.OutOfMemoryError:
            # require_memory measures the host's memory, and the host holds the Gram
            # matrix already: a GPU with less room than that failed the fit with
            # CUDA's traceback where the CPU solves it, slower
            if dev.type == "cpu":
                raise
            if dev.type == "cuda":
                torch.cuda.empty_cache()  # the failed attempt's blocks, for the rest of the fit
            warnings.warn(
                f"the episodic ridge's solve over {len(gram):,} features does not fit in "
                f"{dev}'s memory; it runs on the CPU (slower; the rest stays on {dev})",
                RuntimeWarning,
                stacklevel=2,
            )
            return _cholesky_solve(gram, xty, lam, torch.device("cpu"))

    # -- scoring ------------------------------------------------------------
    def _w(self) -> np.ndarray:
        if self.w_binary is None:
            raise ModelError(f"{self.name}: not fitted; call fit() first")
        return self.w_binary

    @property
    def n_items(self) -> int:
        self._w()
        return self.universe.n_catalogue

    @property
    def n_fit_items(self) -> int:
        """Items ``W`` covers: the universe's."""
        return len(self.universe.items)

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        w_bin = self._w()
        n = len(w_bin)
        if len(tasks) == 0:
            return np.zeros((0, self.n_items))
        # items outside the universe (or added after training) contribute nothing
        tasks = self.universe.tasks(tasks)
        items = [t.support_items for t in tasks]
        ratings = [np.asarray(t.support_ratings, dtype=np.float64) for t in tasks]
        x = support_matrix(
            items,
            ratings,
            n,
            mu=self.mu,
            unit=self.rating_unit,
            scale=self.support_scale,
            with_ratings=self.w_ratings is not None,
        )
        # sparse x dense products for the whole batch: cost B * K * N, not B * D * N
        scores = np.asarray(x[:, :n] @ w_bin, dtype=np.float64) + self.intercept
        if self.w_ratings is not None:
            scores += np.asarray(x[:, n:] @ self.w_ratings, dtype=np.float64)
        empty = np.array([len(i) == 0 for i in items])
        scores[empty] = self.prior
        # other items sit just below the user's lowest universe score: a gap small
        # next to the row's spread, so an ensemble's per-user z-scores barely move
        spread = scores.max(axis=1) - scores.min(axis=1) if n else np.zeros(len(scores))
        return self.universe.expand(scores, 0.01 * spread + 1e-6)

    def add_items(self, items: pd.DataFrame, vectors: np.ndarray) -> None:
        """Grow the catalogue. The new items are never recommended by this model until
        it is retrained (no rating links them to anything); a new item in a support
        set contributes nothing."""
        self._w()
        checked = check_new_items(self.name, items, vectors)  # None: a bare TypeError
        m = len(items)
        if checked is not None and len(checked) != m:
            raise DataError(f"{self.name}.add_items: {m} items but {len(checked)} vectors")
        self.universe = self.universe.grown(m)

    def describe(self) -> dict[str, Any]:
        """What validation chose (for logs and reports)."""
        return {
            "features": self.features,
            "lam": self.lam,
            "shots": list(self.shots),
            "support_scale": self.support_scale,
            "n_episodes": self.n_episodes,
            "items_fitted": len(self.universe.items),
            "validation_ndcg@10": dict(self.validation),
        }

    # -- persistence: plain arrays and JSON (see metarec.models.persist) ----------
    def to_state(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
        """(constructor options, fitted fields, arrays)."""
        w_bin = self._w()
        options = {
            "shots": list(self.shots),
            "lams": list(self.lams),
            "feature_sets": list(self.feature_sets),
            "support_scale": self.support_scale,
            "target_scale": self.target_scale,
            "validation_shots": list(self.validation_shots),
            "like_threshold": self.like_threshold,
            "chunk_episodes": self.chunk_episodes,
            "max_items": self.max_items,
        }
        fitted = {
            "mu": self.mu,
            "rating_unit": self.rating_unit,
            "n_fit_items": self.n_fit_items,
            "n_items": self.n_items,
            "lam": self.lam,
            "features": self.features,
            "n_episodes": self.n_episodes,
            "validation": dict(self.validation),
        }
        arrays = {"w_binary": w_bin, "intercept": self.intercept, "prior": self.prior}
        if self.w_ratings is not None:
            arrays["w_ratings"] = self.w_ratings
        arrays.update(self.universe.arrays())
        return options, fitted, arrays

    @classmethod
    def from_state(
        cls,
        options: dict[str, Any],
        fitted: dict[str, Any],
        arrays: dict[str, np.ndarray],
        *,
        seed: int = 0,
        name: str = "metarec-episodic",
        device: str = "auto",
    ) -> EpisodicLinear:
        """Rebuild a fitted model from :meth:`to_state`'s parts; shapes are checked.

        A state saved before universes existed holds ``W`` over the whole grown
        catalogue (zero rows and columns for added items) and is cut back to the
        ``n_fit_items`` it was fitted on.
        """
        try:
            model = cls(**options, seed=seed, name=name, device=device)
        except TypeError as exc:
            raise ModelError(f"{name}: bad options: {exc}") from None
        missing = sorted({"w_binary", "intercept", "prior"} - set(arrays))
        if missing:
            raise ModelError(f"{name}: saved state lacks arrays {missing}")
        w = np.asarray(arrays["w_binary"], dtype=np.float32)
        n = len(w)
        if w.shape != (n, n):
            raise ModelError(f"{name}: w_binary must be square, got {w.shape}")
        for key in ("intercept", "prior"):
            if np.shape(arrays[key]) != (n,):
                raise ModelError(f"{name}: {key} has shape {np.shape(arrays[key])}, not ({n},)")
        if "w_ratings" in arrays and np.shape(arrays["w_ratings"]) != (n, n):
            raise ModelError(f"{name}: w_ratings has shape {np.shape(arrays['w_ratings'])}")
        features = fitted.get("features")
        if features not in FEATURE_SETS or (features != "binary") != ("w_ratings" in arrays):
            raise ModelError(f"{name}: fitted features {features!r} do not match the arrays")
        fit = int(fitted.get("n_fit_items", n))
        if not 0 < fit <= n or ("universe.items" in arrays and fit != n):
            raise ModelError(f"{name}: n_fit_items {fit} does not match w_binary's {n} rows")
        keep = slice(0, fit)  # the whole array for a state with a universe
        model.w_binary = w[keep, keep]
        model.w_ratings = (
            np.asarray(arrays["w_ratings"], dtype=np.float32)[keep, keep]
            if "w_ratings" in arrays
            else None
        )
        model.intercept = np.asarray(arrays["intercept"], dtype=np.float64)[keep]
        model.prior = np.asarray(arrays["prior"], dtype=np.float64)[keep]
        model.universe = Universe.from_arrays(arrays, fit, int(fitted.get("n_items", n)), name)
        model.features = features
        model.mu = float(fitted.get("mu", 0.0))
        model.rating_unit = float(fitted.get("rating_unit", 1.0))  # saved before: 1-5 stars
        lam = fitted.get("lam")
        model.lam = None if lam is None else float(lam)
        model.n_episodes = int(fitted.get("n_episodes", 0))
        model.validation = {str(k): float(v) for k, v in dict(fitted.get("validation", {})).items()}
        return model


def _cholesky_solve(gram: np.ndarray, xty: np.ndarray, lam: float, dev: torch.device) -> np.ndarray:
    a = torch.as_tensor(gram, dtype=torch.float64, device=dev).clone()
    a.diagonal().add_(lam)
    chol = torch.linalg.cholesky(a)
    b = torch.as_tensor(xty, dtype=torch.float64, device=dev)
    return torch.cholesky_solve(b, chol).cpu().numpy()
