"""The statistics of an A/B test's two success rates: intervals, lift, p-value, power.

Pure functions on counts (successes of users per arm), tested without models.

* Per-arm rate with a 95 % Wilson score interval (good at small n and rates
  near 0 or 1, where the Wald interval fails).
* Lift = p_B / p_A − 1 with a 95 % CI by the delta method on the log ratio:
  se(log(p_B/p_A)) = sqrt((1 − p_A)/(n_A p_A) + (1 − p_B)/(n_B p_B)), CI =
  exp(log ratio ± z · se) − 1. Where an arm's rate is 0 or 1 that variance is
  infinite or 0 (a 20/20 against 20/20 test had the CI [0 %, 0 %]), so the
  interval is then taken with ½ added to each arm's successes and failures
  (x + ½ of n + 1, Haldane–Anscombe); the lift itself is the observed one.
  Undefined (NaN) when A has no success: there is no ratio.
* Two-sided p-value: two-proportion z-test with the pooled rate,
  z = (p_B − p_A) / sqrt(p̄ (1 − p̄) (1/n_A + 1/n_B)), what A/B tools report.
  It is a normal approximation: with under about 5 expected failures (or
  successes) an arm, its p is smaller than an exact test's (82 users at 83 %
  against 95 %: 0.077, Fisher's exact 0.155), so Fisher's exact p is given
  beside it.
* Users per arm for 80 % power at α = 0.05 at the observed rates, the pooled
  form (Fleiss):
  n = (z_{1−α/2} sqrt(2 p̄ (1 − p̄)) + z_{1−β} sqrt(p1 (1 − p1) + p2 (1 − p2)))² / (p1 − p2)²,
  p̄ = (p1 + p2)/2, rounded up; infinite when the rates are equal.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import fisher_exact, norm

from metarec.errors import InputError
from metarec.values import is_number, is_whole

# past this a float no longer holds every count exactly, and no test has such arms
MAX_USERS = 2**53


def _counts(where: str, *pairs: tuple[str, Any, str, Any]) -> None:
    """Each (successes, users) pair whole numbers with 0 <= successes <= users: 11
    successes of 10 users gave a p-value, and a negative count a lift, before; and
    0 of -3 users an interval of NaNs, as if the arm were empty."""
    for x_name, x, n_name, n in pairs:
        for name, value in ((x_name, x), (n_name, n)):
            if not is_whole(value):
                raise InputError(f"{where}: {name} must be a whole number, got {value!r:.40}")
        if n < 0:
            raise InputError(f"{where}: {n_name} must be >= 0 (a number of users), got {n}")
        if n > MAX_USERS:  # 10**400 was a bare OverflowError converting to a float
            digits = str(n)
            shown = digits if len(digits) <= 20 else f"a number of {len(digits)} digits"
            raise InputError(
                f"{where}: {n_name} must be at most 2**53 (a number of users), got {shown}"
            )
        if not 0 <= x <= n:
            raise InputError(
                f"{where}: need 0 <= {x_name} <= {n_name}, got {x_name}={x}, {n_name}={n}"
            )


def check_probability(where: str, name: str, value: object) -> float:
    """A level, alpha or power: a number strictly between 0 and 1, or an InputError naming
    ``where`` and ``name``."""
    if not is_number(value):
        raise InputError(f"{where}: {name} must be a number in (0, 1), got {value!r:.40}")
    if not 0 < value < 1:  # NaN fails this too
        raise InputError(f"{where}: {name} must be in (0, 1), got {value}")
    return float(value)


def wilson_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (NaN for n = 0)."""
    _counts("wilson_ci", ("successes", successes, "n", n))
    level = check_probability("wilson_ci", "level", level)
    if n <= 0:
        return float("nan"), float("nan")
    z = float(norm.ppf(0.5 + level / 2.0))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # the interval holds p; rounding put the bound 3e-17 past it at p = 0 and p = 1, and
    # a plot's error bar (p - lower) came out negative, which matplotlib refuses
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def two_proportion_test(x_a: int, n_a: int, x_b: int, n_b: int) -> tuple[float, float]:
    """Pooled two-proportion z-test of p_B vs p_A → (z, two-sided p): NaN for an empty
    arm; z = 0 and p = 1 when both arms are all successes or all failures."""
    _counts("two_proportion_test", ("x_a", x_a, "n_a", n_a), ("x_b", x_b, "n_b", n_b))
    if n_a <= 0 or n_b <= 0:
        return float("nan"), float("nan")
    pooled = (x_a + x_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 0.0, 1.0  # both arms all-success or all-failure: no evidence of a difference
    z = (x_b / n_b - x_a / n_a) / se
    return z, float(2 * norm.sf(abs(z)))


def fisher_exact_p(x_a: int, n_a: int, x_b: int, n_b: int) -> float:
    """Fisher's exact test of the 2x2 table (successes, failures) x (A, B), two-sided:
    the z-test's companion where an arm expects few failures or successes, whose
    normal approximation then understates p. NaN for an empty arm."""
    _counts("fisher_exact_p", ("x_a", x_a, "n_a", n_a), ("x_b", x_b, "n_b", n_b))
    if n_a <= 0 or n_b <= 0:
        return float("nan")
    table = np.array([[x_a, n_a - x_a], [x_b, n_b - x_b]], dtype=np.int64)
    return float(min(1.0, fisher_exact(table, alternative="two-sided").pvalue))


def lift_ci(
    x_a: int, n_a: int, x_b: int, n_b: int, level: float = 0.95
) -> tuple[float, float, float]:
    """Lift p_B/p_A − 1 and its delta-method CI on the log ratio → (lift, low, high);
    with ½ added to each cell for the CI when a rate is 0 or 1 (see the module notes)."""
    _counts("lift_ci", ("x_a", x_a, "n_a", n_a), ("x_b", x_b, "n_b", n_b))
    level = check_probability("lift_ci", "level", level)
    if n_a <= 0 or n_b <= 0 or x_a == 0:
        return float("nan"), float("nan"), float("nan")
    lift = (x_b / n_b) / (x_a / n_a) - 1
    xa, na, xb, nb = float(x_a), float(n_a), float(x_b), float(n_b)
    if lift_ci_corrected(x_a, n_a, x_b, n_b):
        xa, na, xb, nb = xa + 0.5, na + 1, xb + 0.5, nb + 1
    p_a, p_b = xa / na, xb / nb
    z = float(norm.ppf(0.5 + level / 2.0))
    se = math.sqrt((1 - p_a) / (na * p_a) + (1 - p_b) / (nb * p_b))
    log_ratio = math.log(p_b / p_a)
    low, high = math.exp(log_ratio - z * se) - 1, math.exp(log_ratio + z * se) - 1
    # the interval is the corrected estimate's; it must still hold the observed lift
    # (B without a success: -100 %, just below a corrected lower bound of -99.7 %)
    return lift, min(low, lift), max(high, lift)


def lift_ci_corrected(x_a: int, n_a: int, x_b: int, n_b: int) -> bool:
    """Whether :func:`lift_ci` takes its interval with ½ added to each cell: a rate of 0
    or 1, where the delta method's variance is 0 or infinite (A without a success has
    no lift to correct)."""
    return n_a > 0 and n_b > 0 and x_a > 0 and (x_a == n_a or x_b in (0, n_b))


def users_per_arm(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Users per arm to detect p1 vs p2 (two-sided α, given power), pooled form, rounded
    up; NaN when a rate is NaN (an arm without users), infinite when they are equal."""
    alpha = check_probability("users_per_arm", "alpha", alpha)
    power = check_probability("users_per_arm", "power", power)
    for name, rate in (("p1", p1), ("p2", p2)):
        if not is_number(rate):
            raise InputError(f"users_per_arm: {name} must be a rate in [0, 1], got {rate!r:.40}")
        if not math.isnan(rate) and not 0 <= rate <= 1:
            raise InputError(f"users_per_arm: {name} must be a rate in [0, 1], got {rate}")
    if math.isnan(p1) or math.isnan(p2):
        return float("nan")
    if p1 == p2:
        return math.inf
    z_a = float(norm.ppf(1 - alpha / 2))
    z_b = float(norm.ppf(power))
    p_bar = (p1 + p2) / 2
    root = z_a * math.sqrt(2 * p_bar * (1 - p_bar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    # rates 1e-300 apart: the squared gap underflows to 0 (a ZeroDivisionError), or
    # the quotient overflows (math.ceil of inf an OverflowError); either is infinite
    gap = (p1 - p2) ** 2
    needed = root**2 / gap if gap > 0 else math.inf
    return float(math.ceil(needed)) if math.isfinite(needed) else math.inf
