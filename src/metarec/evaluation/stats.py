"""Significance tests and confidence intervals for per-user metric values.

Benchmarks compare models user by user (every model sees the same users), so
the tests are paired:

* :func:`paired_wilcoxon` — two-sided Wilcoxon signed-rank test of the
  per-user differences (``scipy.stats.wilcoxon``). Zero differences, and those
  under 1e-12 of max(|a|, |b|, 1) (rounding; the metrics here are of order 1),
  are dropped before scipy chooses its method by their count, and differences
  equal but for rounding (0.6 − 0.4 and 0.8 − 0.6) are made equal, so that they tie
  (scipy's documentation asks for this): the exact distribution up to 50 without
  ties; with ties, the exact distribution of W+ given those (mid)ranks up to
  :data:`EXACT_TIED_MAX` differences (:func:`_tied_exact_p`; scipy's normal
  approximation past 13 was too liberal where every difference had one size, as on a
  hit@k: 7.7 % of 16 such pairs under the null came out below 0.05); the normal
  approximation otherwise. Pairs with a NaN on either side are
  dropped; when every difference is zero the two models agree exactly and
  p = 1.
* :func:`holm` — Holm–Bonferroni step-down adjustment: sort the m p-values
  ascending, p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j)) (1-based), which
  is monotone and controls the family-wise error rate.
* :func:`bootstrap_ci` — percentile bootstrap CI of the mean (seeded);
  :func:`paired_bootstrap_ci` — the same for the per-user differences.
* :func:`compare_to_peers` — all of the above for one model against its
  peers, which is what benchmark reports call; where that model was picked as
  the best of several on the same users, its p-values are also multiplied by
  their number before they are judged (``chosen_from``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy.stats import wilcoxon

from metarec.errors import InputError
from metarec.evaluation.ab_stats import check_probability
from metarec.evaluation.metrics import as_numbers
from metarec.models.base import check_seed
from metarec.values import is_number, is_whole

_BOOT_CHUNK = 256  # bootstrap resamples drawn at a time (bounds memory for large n)


class WilcoxonResult(NamedTuple):
    statistic: float  # min(W+, W−) over the non-zero differences
    pvalue: float  # two-sided; 1.0 when all differences are 0, NaN with no pairs
    n: int  # pairs used (finite on both sides)


# a difference this small against the values compared is rounding, not a difference: a
# model and its ensemble's dominant member, equal but summed in another order, gave a
# consistent run of 4e-16 signs, and p = 2e-50
TIE_TOLERANCE = 1e-12


def _finite_pairs(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) over the pairs finite on both sides."""
    a = as_numbers(a, f"{where}: a")
    b = as_numbers(b, f"{where}: b")
    if a.shape != b.shape:
        raise InputError(f"{where}: paired values need equal shapes, got {a.shape} and {b.shape}")
    if a.ndim != 1:  # a mask flattens a table: its cells were pooled as if each were a user
        raise InputError(f"{where}: paired values must be 1-d lists, one a user, got {a.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def _paired(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, where: str = "paired"
) -> np.ndarray:
    """a − b over the pairs finite on both sides."""
    a, b = _finite_pairs(a, b, where)
    return a - b


def _tied_by_rounding(diff: np.ndarray, tolerance: np.ndarray) -> np.ndarray:
    """``diff`` with magnitudes equal but for rounding made equal, so that they tie.
    0.6 - 0.4 and 0.6 - 0.8 came out as 0.19999999999999996 and -0.20000000000000007,
    and the ranks followed the rounding's direction (20 users, 10 better and 10 worse
    by 0.2, gave p = 0.05 for p = 1). Sorted by magnitude, each takes the magnitude of
    its run of neighbours within ``tolerance`` (each pair's own, as for the zeros): a
    grid of one size for all pairs made a difference of small values next to large
    ones 0 again, and split ties that fell on a half-step of it."""
    if len(diff) == 0:
        return diff
    order = np.argsort(np.abs(diff), kind="stable")
    mags = np.abs(diff)[order]
    starts = np.concatenate([[True], np.diff(mags) > tolerance[order][1:]])
    first = np.maximum.accumulate(np.where(starts, np.arange(len(mags)), 0))
    tied = np.empty_like(mags)
    tied[order] = mags[first]
    return np.sign(diff) * tied


def paired_wilcoxon(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray
) -> WilcoxonResult:
    """Two-sided Wilcoxon signed-rank test of per-user pairs (a[u], b[u])."""
    a, b = _finite_pairs(a, b, "paired_wilcoxon")
    diff = a - b
    if len(diff) == 0:
        return WilcoxonResult(float("nan"), float("nan"), 0)
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1.0)
    kept = np.abs(diff) > TIE_TOLERANCE * scale
    nonzero = _tied_by_rounding(diff[kept], TIE_TOLERANCE * scale[kept])
    if len(nonzero) == 0:
        return WilcoxonResult(0.0, 1.0, len(diff))
    # zeros dropped here, not by scipy: its "auto" picks the exact distribution or the
    # normal approximation by the count before it drops them, so users on whom both
    # models agree moved a test of 5 differences (exact p >= 0.0625) to p = 0.043
    magnitudes = np.abs(nonzero)
    if len(np.unique(magnitudes)) < len(magnitudes) and len(nonzero) <= EXACT_TIED_MAX:
        statistic, pvalue = _tied_exact_p(nonzero)
        return WilcoxonResult(statistic, pvalue, len(diff))
    res = wilcoxon(nonzero, alternative="two-sided")
    return WilcoxonResult(float(res.statistic), float(res.pvalue), len(diff))


# tied differences up to this many get the exact conditional distribution: its table
# has n(n+1) + 1 entries, built in n steps (a few ms at 200)
EXACT_TIED_MAX = 200


def _tied_exact_p(nonzero: np.ndarray) -> tuple[float, float]:
    """(min(W+, W−), two-sided p) of the signed-rank test on non-zero differences with
    ties, from the exact distribution of W+ under the null given their midranks: each
    sign + or − with probability 1/2, so W+ is a sum over ranks of Bernoulli halves,
    whose distribution is the product of (1 + x^rank) / 2. Midranks are halves, so the
    table is kept in doubled ranks, which are whole. The permutation test scipy runs up
    to 13 differences is this same distribution, enumerated."""
    from scipy.stats import rankdata

    doubled = np.rint(2 * rankdata(np.abs(nonzero))).astype(np.int64)
    total = int(doubled.sum())
    dist = np.zeros(total + 1)
    dist[0] = 1.0
    for r in doubled:  # one sign at a time: P(W+ = w) = (P_before(w) + P_before(w - r)) / 2
        shifted = np.zeros_like(dist)
        shifted[r:] = dist[:-r]
        dist = 0.5 * (dist + shifted)
    plus = int(doubled[nonzero > 0].sum())
    low = min(plus, total - plus)  # the distribution is symmetric about total / 2
    pvalue = min(1.0, 2.0 * float(dist[: low + 1].sum()))
    return low / 2.0, pvalue


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, in the input order (NaN stays NaN, not counted)."""
    p = as_numbers(pvalues, "holm: pvalues")
    if p.ndim != 1:  # the step-down indexes p as one list
        raise InputError(f"holm: pvalues must be a 1-d list of p-values, got shape {p.shape}")
    if ((p < 0) | (p > 1)).any():  # NaN compares false: it passes, and stays NaN
        raise InputError(f"holm: p-values must lie in [0, 1], got {p[(p < 0) | (p > 1)][0]:g}")
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


MAX_BOOT = 10_000_000  # resampled means held at once: 80 MB


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (NaN dropped; seeded).

    Resamples users with replacement ``n_boot`` times and takes the
    (1 − level)/2 and (1 + level)/2 quantiles of the resampled means. NaN with
    fewer than two values, which say nothing of the spread.
    """
    check_probability("bootstrap_ci", "level", level)
    if not is_whole(n_boot) or not 0 < n_boot <= MAX_BOOT:
        # 2**62 was numpy's bare "array is too big"
        raise InputError(
            f"bootstrap_ci: n_boot must be a whole number in [1, {MAX_BOOT:,}], got {n_boot!r:.40}"
        )
    check_seed(seed, "bootstrap_ci: seed")  # "x" was a raw numpy SeedSequence error
    x = as_numbers(values, "bootstrap_ci: values")
    if x.ndim != 1:  # a table's cells were pooled as if each were a user
        raise InputError(f"bootstrap_ci: values must be a 1-d list, one a user, got {x.shape}")
    x = x[np.isfinite(x)]
    if len(x) < 2:  # one user's every resample is that user: an interval of width 0
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for lo in range(0, n_boot, _BOOT_CHUNK):
        n = min(_BOOT_CHUNK, n_boot - lo)
        means[lo : lo + n] = x[rng.integers(0, len(x), size=(n, len(x)))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_bootstrap_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(a − b) over users (pairs with a NaN dropped)."""
    return bootstrap_ci(_paired(a, b, "paired_bootstrap_ci"), n_boot=n_boot, seed=seed, level=level)


def choice_p(p_holm: float, chosen_from: int) -> float:
    """Holm's p of a model picked as the best of ``chosen_from`` on the same users,
    times their number (Bonferroni over the choice), at most 1; NaN stays NaN."""
    if not is_whole(chosen_from) or chosen_from < 1:  # 0 made every p 0, "significant"
        raise InputError(f"choice_p: chosen_from must be a whole number >= 1, got {chosen_from!r}")
    if not (is_number(p_holm) and (np.isnan(p_holm) or 0 <= p_holm <= 1)):
        raise InputError(f"choice_p: p_holm must be a p-value in [0, 1] or NaN, got {p_holm!r}")
    if not np.isfinite(p_holm):
        return float("nan")
    return min(1.0, chosen_from * float(p_holm))


def compare_to_peers(
    per_user: Mapping[str, Sequence[float] | np.ndarray],
    model: str,
    peers: Sequence[str],
    lower_is_better: bool,
    alpha: float = 0.05,
    seed: int = 0,
    n_boot: int = 2000,
    chosen_from: int = 1,
) -> dict[str, dict[str, Any]]:
    """``model`` against each peer on one metric's per-user values.

    Per peer: ``mean_diff`` = mean(model − peer) over users finite in both,
    ``ci`` (paired bootstrap, 95 %), ``p`` (Wilcoxon), ``p_holm`` (Holm over
    this call's peers), ``p_choice`` = min(1, chosen_from · p_holm),
    ``significant`` = p_choice < alpha, ``better`` = the mean difference points
    the good way (below 0 when lower is better) — so a claim "significantly
    better" is ``better and significant``. The test ranks the differences and the
    direction is the mean's, so on skewed differences (most users a little better,
    a few much worse) the two can disagree: read such a mark beside ``ci``.

    ``chosen_from``: how many models ``model`` was picked from as the best on these
    same users (a benchmark's reference is its best metarec model). Picking the best
    of several and then testing it as if named in advance makes a win come up too
    often: with 6 candidates and no true difference, over 10 % of simulated runs
    instead of 2.5 % marked one significantly better (the test of this function
    simulates it). Multiplying by the number
    of candidates (Bonferroni over the choice, on top of Holm over the peers) keeps
    the family-wise error at ``alpha``; 1 where the model was fixed in advance.
    """
    if not isinstance(per_user, Mapping):
        raise InputError(
            f"compare_to_peers: per_user must map model names to per-user values, "
            f"got {type(per_user).__name__}"
        )
    if not isinstance(model, str):  # a list was "unhashable type", raised by the lookup
        raise InputError(f"compare_to_peers: model must be a model name, got {model!r:.60}")
    if (
        isinstance(peers, str)
        or not isinstance(peers, Sequence)
        or not all(isinstance(p, str) for p in peers)
    ):
        # a bare name was compared letter by letter: "no per-user values for ['b', ...]"
        raise InputError(f"compare_to_peers: peers must be a list of names, got {peers!r:.60}")
    twice = sorted({p for p in peers if peers.count(p) > 1})
    if twice:  # one row per name: Holm would count one comparison where the list has two
        raise InputError(f"compare_to_peers: peers name {twice} more than once")
    # 0 or NaN made nothing significant, 5 everything
    check_probability("compare_to_peers", "alpha", alpha)
    if not isinstance(lower_is_better, (bool, np.bool_)):
        raise InputError(
            f"compare_to_peers: lower_is_better must be True or False, got {lower_is_better!r:.40}"
        )
    missing = [m for m in [model, *peers] if m not in per_user]
    if missing:
        raise InputError(
            f"compare_to_peers: no per-user values for {missing}; have {sorted(map(str, per_user))}"
        )
    if not is_whole(chosen_from) or chosen_from < 1:
        raise InputError(
            "compare_to_peers: chosen_from must be a whole number >= 1 (the models the "
            f"reference was picked from), got {chosen_from!r:.40}"
        )
    rows: dict[str, dict[str, Any]] = {}
    for peer in peers:
        diff = _paired(per_user[model], per_user[peer], f"compare_to_peers ({model!r} vs {peer!r})")
        test = paired_wilcoxon(per_user[model], per_user[peer])
        mean = float(diff.mean()) if len(diff) else float("nan")
        rows[peer] = {
            "mean_diff": mean,
            "ci": bootstrap_ci(diff, n_boot=n_boot, seed=seed, level=0.95),
            "p": test.pvalue,
            "n": test.n,
        }
    adjusted = holm([r["p"] for r in rows.values()])
    for r, p_holm in zip(rows.values(), adjusted, strict=True):
        r["p_holm"] = float(p_holm)
        r["p_choice"] = choice_p(float(p_holm), chosen_from)
        r["significant"] = bool(np.isfinite(r["p_choice"]) and r["p_choice"] < alpha)
        r["better"] = bool(r["mean_diff"] < 0 if lower_is_better else r["mean_diff"] > 0)
    return rows
