"""Statistics behind every badge: intervals and tests for a change between two checkpoints.

Pure functions on numbers and arrays (numpy and the standard library only: `tunebook report` needs no
scipy). The choice follows what the record holds, best first:

1. per-item 0/1 scores on both sides, aligned -> Tango's score interval for the difference of paired
   proportions (real width and coverage when items rarely flip, where a bootstrap collapses to
   [0, 0]); the decision is McNemar's exact test;
2. per-item real-valued scores on both sides, aligned -> the studentized (bootstrap-t) interval of
   the mean per-item difference, from 10 to 5,000 items; the decision inverts the same bootstrap
   distribution, so they never disagree. Student t, which assumes symmetric differences, covered
   0.93 (exponential) and 0.89 (lognormal) at n = 30; bootstrap-t 0.95 and 0.93 (2,000 simulated runs
   each; `make bench` prints the worst case). Below 10 items the resamples are too few and above
   5,000 the skew no longer matters: there, the paired t interval and test;
3. a standard error on both sides (or per-item scores that cannot be aligned) -> normal interval
   with sqrt(se_old² + se_new²), marked unpaired with the reason;
4. neither -> the interval is unknown, and the report says so instead of guessing.

Win rates use the Wilson interval and the score test against parity (which agree by construction).
Every interval carries the two-sided p of the test it goes with: a badge follows that p, and the
row prints it. `holm` adjusts a family of p-values (the forgetting verdict over a suite).

tests/unit/reports/test_stats_reference.py checks every function here against scipy/statsmodels.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

Z95 = 1.959963984540054  # two-sided 95 % normal quantile
ALPHA = 0.05  # the level every interval and test in a log uses
SEARCH_MAX = 10**8  # items_needed gives up beyond this many items


class BadNumber(ValueError):
    """A number a statistic cannot use (NaN, infinite, negative where it must not be)."""


def finite(x: float, what: str) -> float:
    """`x` as a float, or BadNumber naming `what`."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise BadNumber(f"{what}: not a number ({x!r})") from None
    if not math.isfinite(v):
        raise BadNumber(f"{what}: not a finite number ({v})")
    return v


def finite_array(xs: Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(xs, dtype=float)
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise BadNumber(f"{what}[{int(bad[0])}]: not a finite number ({a[bad[0]]})")
    return a


@dataclass(frozen=True)
class Interval:
    """A change `delta` = new - old with its 95 % interval; `low`/`high` are None when unknown.

    `p` is the two-sided p-value of the test named in `test`, the one a badge follows; `se` the
    standard error of `delta` (for aggregates); `paired` whether items were matched; `note` says why
    an interval is unpaired or unknown. `resize(n)` gives the interval the same data would give at n
    items (what `items_needed` searches over)."""

    delta: float
    low: float | None
    high: float | None
    method: str  # "Tango score", "bootstrap-t", "paired t", "normal", "Wilson" or "unknown"
    p: float | None = None
    test: str = ""
    se: float | None = None
    paired: bool = False
    n: int | None = None
    note: str = ""
    resize: Callable[[int], tuple[float, float]] | None = field(default=None, compare=False, repr=False)

    @property
    def known(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def half_width(self) -> float | None:
        return (self.high - self.low) / 2 if self.known else None

    @property
    def symmetric(self) -> bool:
        return self.known and math.isclose(self.high - self.delta, self.delta - self.low, rel_tol=1e-6, abs_tol=1e-12)

    @property
    def significant(self) -> bool:
        """The test the row prints rejects "no change" at 5 %; without a test, the interval excludes 0."""
        if not self.known:
            return False
        if self.p is not None:
            return self.p < ALPHA
        return not (self.low <= 0 <= self.high)


def unknown(delta: float, note: str) -> Interval:
    return Interval(delta, None, None, "unknown", note=note)


# ---------------------------------------------------------------------------------------------------
# distributions (standard library only)


def normal_sf2(z: float) -> float:
    """Two-sided p of a standard normal statistic."""
    return math.erfc(abs(z) / math.sqrt(2))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1 + aa * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1 - math.exp(log_front) * _betacf(b, a, 1 - x) / b


def t_sf2(t: float, df: float) -> float:
    """Two-sided p of a Student t statistic with `df` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return min(1.0, betainc(df / 2, 0.5, df / (df + t * t)))


@functools.lru_cache(maxsize=4096)
def t_quantile(df: float, level: float = 0.95) -> float:
    """The two-sided `level` quantile of Student t (bisection on t_sf2: deterministic, ~1e-12)."""
    alpha = 1 - level
    lo, hi = 0.0, 2.0
    while t_sf2(hi, df) > alpha:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_sf2(mid, df) > alpha:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * hi:
            break
    return (lo + hi) / 2


# ---------------------------------------------------------------------------------------------------
# intervals


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion successes/n (n > 0, 0 <= successes <= n)."""
    successes, n = finite(successes, "successes"), finite(n, "n")
    if n <= 0:
        raise BadNumber(f"n: a Wilson interval needs n > 0 (got {n:g})")
    if not 0 <= successes <= n:
        raise BadNumber(f"successes: {successes:g} is outside 0..n={n:g}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _tango_z(lost: float, gained: float, n: float, change: float) -> float:
    """Tango's score statistic for H0: p_gained - p_lost = change (restricted maximum likelihood)."""
    d = -change  # Tango writes the difference as p_lost - p_gained
    a, b = 2 * n, -lost - gained + (2 * n - lost + gained) * d
    c = -gained * d * (1 - d)
    p_gained = (-b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)  # the restricted MLE of p_gained
    var = n * (2 * p_gained + d * (1 - d))
    num = lost - gained - n * d
    if var <= 0:
        return 0.0 if num == 0 else math.copysign(math.inf, -num)
    return -num / math.sqrt(var)


def tango(lost: float, gained: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Tango's (1998) score interval for p_new - p_old from paired 0/1 scores.

    `lost` items went right→wrong, `gained` wrong→right, of n paired items. The interval holds the
    changes the score test does not reject; it keeps real width when no item flipped, and its
    coverage stays near 95 % when flips are rare and one-sided (BENCH paired_ci_min_coverage)."""
    if n <= 0 or lost < 0 or gained < 0 or lost + gained > n:
        raise BadNumber(f"tango: need 0 <= lost + gained <= n, n > 0 (lost={lost}, gained={gained}, n={n})")
    estimate = (gained - lost) / n

    def root(lo: float, hi: float, side: float) -> float:  # the statistic decreases as the change grows
        for _ in range(200):
            mid = (lo + hi) / 2
            if side * _tango_z(lost, gained, n, mid) > z:
                lo, hi = (mid, hi) if side > 0 else (lo, mid)
            else:
                lo, hi = (lo, mid) if side > 0 else (mid, hi)
            if hi - lo < 1e-12:  # far below the 4 decimals a log prints
                break
        return (lo + hi) / 2

    low = -1.0 if _tango_z(lost, gained, n, -1.0) <= z else root(-1.0, estimate, 1.0)
    high = 1.0 if _tango_z(lost, gained, n, 1.0) >= -z else root(estimate, 1.0, -1.0)
    return low, high


def paired_t(diff: Sequence[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """(low, high, p, se) of the mean per-item difference: Student t with n - 1 degrees of freedom (n >= 2)."""
    d = finite_array(diff, "differences")
    if d.ndim != 1 or d.size < 2:
        raise BadNumber("paired_t: needs at least two per-item differences")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    se = sd / math.sqrt(d.size)
    q = t_quantile(d.size - 1, level)
    p = 1.0 if se == 0 and mean == 0 else (0.0 if se == 0 else t_sf2(mean / se, d.size - 1))
    return mean - q * se, mean + q * se, p, se


def stderr_of(samples: Sequence[float]) -> float | None:
    """Standard error of the mean of per-item scores (None below two items)."""
    x = finite_array(samples, "samples")
    if x.size < 2:
        return None
    return float(x.std(ddof=1) / math.sqrt(x.size))


def proportion_stderr(p: float, n: float) -> float:
    """Standard error of a proportion p observed on n items (the binomial one, sqrt(p(1 - p) / n))."""
    p, n = finite(p, "proportion"), finite(n, "n")
    if n <= 0:
        raise BadNumber(f"n: a proportion's standard error needs n > 0 (got {n:g})")
    if not 0 <= p <= 1:
        raise BadNumber(f"proportion: {p:g} is not in [0, 1]")
    return math.sqrt(p * (1 - p) / n)


def is_binary(*lists: Sequence[float]) -> bool:
    return all(np.isin(np.asarray(x, dtype=float), (0.0, 1.0)).all() for x in lists)


def _paired_binary(old: np.ndarray, new: np.ndarray, delta: float) -> Interval:
    n = old.size
    lost = int(((old == 1) & (new == 0)).sum())
    gained = int(((old == 0) & (new == 1)).sum())
    low, high = tango(lost, gained, n)
    test = mcnemar_counts(lost, gained)

    def resize(k: int) -> tuple[float, float]:
        return tango(lost * k / n, gained * k / n, k)

    se = (high - low) / (2 * Z95)
    return Interval(delta, low, high, "Tango score", test.p, "McNemar exact", se, True, n, resize=resize)


BOOT_T_MIN, BOOT_T_MAX = 10, 5000  # item counts where bootstrap-t is used (see the module docstring)
BOOT_T_RESAMPLES = 999
BOOT_T_SEED = 20261130  # fixed: the same differences always give the same interval


@functools.lru_cache(maxsize=8)  # at most 8 x 999 x 5,000 int32 = 160 MB, usually a few MB
def _boot_t_indices(n: int) -> np.ndarray:
    """The resampling plan for n items: one fixed plan per n, so results depend on the data alone."""
    return np.random.default_rng(BOOT_T_SEED + n).integers(0, n, size=(BOOT_T_RESAMPLES, n), dtype=np.int32)


def bootstrap_t(diff: Sequence[float], level: float = 0.95) -> tuple[float, float, float, float, float, float]:
    """(low, high, p, se, q_low, q_high) for the mean per-item difference by the studentized bootstrap
    (Efron & Tibshirani 1993, ch. 12.5): t* = (mean* - mean) / se* over resamples; the interval is
    [mean - q_high·se, mean - q_low·se]; p is the equal-tailed p of "mean = 0" under the same t*
    distribution, so p < 1 - level exactly when the interval excludes 0."""
    d = finite_array(diff, "differences")
    n = d.size
    if n < 2:
        raise BadNumber("bootstrap_t: needs at least two per-item differences")
    mean, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n)
    t_star = np.empty(BOOT_T_RESAMPLES)
    plan = _boot_t_indices(n)
    for start in range(0, BOOT_T_RESAMPLES, 256):  # chunks keep memory at 256 x n
        x = d[plan[start:start + 256]]
        m = x.mean(axis=1)
        s = x.std(axis=1, ddof=1) / math.sqrt(n)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_star[start:start + 256] = np.where(s > 0, (m - mean) / s, 0.0)
    alpha = 1 - level
    q_low, q_high = (float(v) for v in np.quantile(t_star, [alpha / 2, 1 - alpha / 2]))
    t_obs = mean / se
    # equal-tailed: twice the smaller tail of t* beyond the observed t (plus one: never exactly 0)
    upper = (np.count_nonzero(t_star >= t_obs) + 1) / (BOOT_T_RESAMPLES + 1)
    lower = (np.count_nonzero(t_star <= t_obs) + 1) / (BOOT_T_RESAMPLES + 1)
    p = float(min(1.0, 2 * min(upper, lower)))
    low, high = mean - q_high * se, mean - q_low * se
    # the quantile and the count can differ by one resample at the edge: the interval decides
    if (low > 0 or high < 0) and p >= alpha:
        p = alpha * (1 - 1e-9)
    elif low <= 0 <= high and p < alpha:
        p = alpha
    return low, high, p, se, q_low, q_high


def _paired_real(diff: np.ndarray, delta: float) -> Interval:
    n = diff.size
    mean, sd = float(diff.mean()), float(diff.std(ddof=1))
    if sd <= 1e-12 * max(1.0, float(np.abs(diff).max())):  # all items moved alike (up to float round-off)
        if abs(mean) <= 1e-12 * max(1.0, float(np.abs(diff).max())):
            return Interval(delta, 0.0, 0.0, "paired t", 1.0, "paired t", 0.0, True, n,
                            "every item scored the same at both checkpoints")
        return unknown(delta, f"every one of the {n} items changed by {mean:+.4g}: no spread to measure noise")
    if BOOT_T_MIN <= n <= BOOT_T_MAX:
        low, high, p, se, q_low, q_high = bootstrap_t(diff)

        def resize_boot(k: int) -> tuple[float, float]:  # the same t* quantiles, at k items
            s = sd / math.sqrt(k)
            return mean - q_high * s, mean - q_low * s

        return Interval(delta, low, high, "bootstrap-t", p, "bootstrap-t", se, True, n, resize=resize_boot)
    low, high, p, se = paired_t(diff)

    def resize(k: int) -> tuple[float, float]:
        half = t_quantile(max(k - 1, 1)) * sd / math.sqrt(k)
        return mean - half, mean + half

    return Interval(delta, low, high, "paired t", p, "paired t", se, True, n, resize=resize)


def _align(old: Sequence[float], new: Sequence[float], old_ids: Sequence[str] | None,
           new_ids: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The aligned pairs, with a note when some items had no partner; None when they cannot be aligned."""
    if old_ids is not None and new_ids is not None:
        where = {k: i for i, k in enumerate(new_ids)}
        common = [(i, where[k]) for i, k in enumerate(old_ids) if k in where]
        if len(common) < 2:
            return None
        a = np.asarray(old, dtype=float)[[i for i, _ in common]]
        b = np.asarray(new, dtype=float)[[j for _, j in common]]
        missing_new, missing_old = len(old_ids) - len(common), len(new_ids) - len(common)
        parts = [f"{k} item(s) missing at {side}" for k, side in ((missing_new, "final"), (missing_old, "base")) if k]
        return a, b, (f"paired by id on {len(common)} common items; " + ", ".join(parts)) if parts else ""
    if len(old) == len(new) and len(old) > 1:
        return np.asarray(old, dtype=float), np.asarray(new, dtype=float), ""
    return None


def delta_interval(old: float, new: float, *, old_se: float | None = None, new_se: float | None = None,
                   old_samples: Sequence[float] | None = None, new_samples: Sequence[float] | None = None,
                   old_ids: Sequence[str] | None = None, new_ids: Sequence[str] | None = None,
                   n: int | None = None) -> Interval:
    """The change new - old with the best 95 % interval the inputs allow (see the module doc).

    Raises BadNumber on a NaN, infinite or negative input instead of printing a bracket with nan in it."""
    old, new = finite(old, "baseline value"), finite(new, "final value")
    delta = new - old
    for se, side in ((old_se, "baseline"), (new_se, "final")):
        if se is not None and (finite(se, f"{side} stderr") < 0):
            raise BadNumber(f"{side} stderr: negative ({se})")
    if old_samples is not None:
        finite_array(old_samples, "baseline samples")
    if new_samples is not None:
        finite_array(new_samples, "final samples")
    why = ""
    if old_samples is not None and new_samples is not None:
        aligned = _align(old_samples, new_samples, old_ids, new_ids)
        if aligned is not None:
            a, b, note = aligned
            iv = _paired_binary(a, b, delta) if is_binary(a, b) else _paired_real(b - a, delta)
            return _with_note(iv, note) if note else iv
        why = (f"unpaired: {len(old_samples)} items at base, {len(new_samples)} at final, no item ids to align them"
               if old_ids is None or new_ids is None else "unpaired: fewer than two items in common by id")
        # unaligned per-item scores still give each side a standard error
        old_se = old_se if old_se is not None else stderr_of(old_samples)
        new_se = new_se if new_se is not None else stderr_of(new_samples)
    elif old_samples is not None or new_samples is not None:
        why = "unpaired: per-item scores on one side only"
    if old_se is None or new_se is None:
        return unknown(delta, "no stderr or per-item scores on both sides")
    se = math.sqrt(old_se**2 + new_se**2)
    if se == 0:
        return unknown(delta, "both standard errors are 0: no noise estimate")
    return normal_interval(delta, se, why or "unpaired: standard errors only", n)


def normal_interval(delta: float, se: float, note: str = "", n: int | None = None) -> Interval:
    """delta ± 1.96·se with the z test's p; with n known it can be resized (se shrinks as 1/sqrt(n))."""
    if se <= 0:  # nothing varied: no change is exactly no change; any other has no noise estimate
        if delta == 0:
            return Interval(delta, 0.0, 0.0, "normal", 1.0, "z", 0.0, False, n, note)
        return unknown(delta, "standard error 0: no noise estimate")
    half = Z95 * se

    def resize(k: int) -> tuple[float, float]:
        h = half * math.sqrt(n / k)
        return delta - h, delta + h

    return Interval(delta, delta - half, delta + half, "normal", normal_sf2(delta / se), "z", se, False, n, note,
                    resize if n else None)


def _with_note(iv: Interval, note: str) -> Interval:
    return Interval(iv.delta, iv.low, iv.high, iv.method, iv.p, iv.test, iv.se, iv.paired, iv.n, note, iv.resize)


def win_rate_interval(rate: float, n: float, parity: float = 0.5) -> Interval:
    """A pairwise win rate against the base, as a change from parity: Wilson interval, score test p."""
    rate, n = finite(rate, "win rate"), finite(n, "n")
    if not 0 <= rate <= 1:
        raise BadNumber(f"win rate: {rate:g} is not a proportion in [0, 1]")
    low, high = wilson(rate * n, n)
    p = normal_sf2((rate - parity) / math.sqrt(parity * (1 - parity) / n))

    def resize(k: int) -> tuple[float, float]:
        lo, hi = wilson(rate * k, k)
        return lo - parity, hi - parity

    se = (high - low) / (2 * Z95)
    return Interval(rate - parity, low - parity, high - parity, "Wilson", p, "score test vs parity", se, False,
                    int(n), resize=resize)


def items_needed(iv: Interval, limit: int = SEARCH_MAX) -> int | None:
    """Smallest n at which the same observed effect would give an interval excluding no change.

    Computed from the interval's own formula (asymmetric ones included); None when the change is 0,
    the interval cannot be resized, or more than `limit` items would be needed."""
    if iv.resize is None or iv.delta == 0:
        return None

    def excludes(k: int) -> bool:
        lo, hi = iv.resize(k)
        return lo > 0 or hi < 0

    if excludes(2):
        return 2
    hi = 4
    while not excludes(hi):
        hi *= 2
        if hi > limit:
            return None
    lo = hi // 2  # does not exclude; hi does: the interval narrows as n grows
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if excludes(mid) else (mid, hi)
    return hi


# ---------------------------------------------------------------------------------------------------
# tests


@dataclass(frozen=True)
class McNemar:
    """Discordant pairs of 0/1 scores: `lost` right->wrong, `gained` wrong->right; two-sided exact p."""

    lost: int
    gained: int
    p: float


def mcnemar_counts(lost: int, gained: int) -> McNemar:
    """Exact McNemar test from the discordant counts: binomial(m, ½) two-sided, exact at every m."""
    m, k = lost + gained, min(lost, gained)
    if m == 0 or lost == gained:
        return McNemar(lost, gained, 1.0)
    if m <= 1000:  # exact integers, one division
        p = 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2**m
    else:  # log space: log C(m, i) by cumulative sums, then log-sum-exp
        i = np.arange(1, k + 1)
        logc = np.concatenate(([0.0], np.cumsum(np.log((m - i + 1) / i))))
        top = logc.max()
        p = 2 * math.exp(top + math.log(np.exp(logc - top).sum()) - m * math.log(2))
    return McNemar(lost, gained, min(1.0, p))


def mcnemar(old: Sequence[float], new: Sequence[float]) -> McNemar | None:
    """Exact McNemar test on aligned 0/1 scores; None when the scores are not all 0 or 1."""
    a = np.asarray(old, dtype=float)
    b = np.asarray(new, dtype=float)
    if a.shape != b.shape or not is_binary(a, b):
        return None
    return mcnemar_counts(int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum()))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: reject where adjusted p < alpha controls the family-wise error."""
    p = [finite(x, "p-value") for x in pvalues]
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def cohen_kappa(a: Sequence, b: Sequence) -> float | None:
    """Agreement of two raters beyond chance; None when undefined (both raters constant and equal)."""
    if len(a) != len(b) or not a:
        raise ValueError("cohen_kappa needs two label lists of the same, non-zero length")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca.keys() & cb.keys()) / (n * n)  # integer sum: exact
    if expected == 1:
        return None
    return (observed - expected) / (1 - expected)
