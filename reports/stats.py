"""Statistics behind every badge: intervals for a change between two checkpoints.

Pure functions on numbers and arrays (numpy only). The choice of interval follows what the record
holds, best first:

1. per-item scores on both sides, aligned and of equal length -> paired bootstrap of the mean
   difference (the same items scored twice, so item difficulty cancels out); exact for 0/1 scores;
2. a standard error on both sides -> normal interval with sqrt(se_old² + se_new²);
3. neither -> the interval is unknown, and the report says so instead of guessing.

Win rates use the Wilson interval, which stays inside [0, 1] and behaves at small n.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # two-sided 95 % normal quantile
RESAMPLES = 2000
SEED = 20240817  # fixed: the same record must give the same interval, byte for byte
EXACT_MAX = 1 << 22  # largest FFT (n x range of differences) for the exact bootstrap: ~0.1 s


@dataclass(frozen=True)
class Interval:
    """A change `delta` = new - old with its 95 % interval; `low`/`high` are None when unknown."""

    delta: float
    low: float | None
    high: float | None
    method: str  # "paired bootstrap", "stderr", "wilson" or "unknown"

    @property
    def known(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def half_width(self) -> float | None:
        return (self.high - self.low) / 2 if self.known else None


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion successes/n (n > 0)."""
    if n <= 0:
        raise ValueError("wilson interval needs n > 0")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_bootstrap(old: Sequence[float], new: Sequence[float], resamples: int = RESAMPLES,
                     seed: int = SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(new - old) over items resampled with replacement.

    When the per-item differences are whole numbers (0/1 scores give -1, 0 and 1) the bootstrap
    distribution is computed exactly, which is what infinitely many resamples converge to; otherwise
    `resamples` seeded resamples estimate it. Either way the same scores give the same interval.
    """
    diff = np.asarray(new, dtype=float) - np.asarray(old, dtype=float)
    if diff.ndim != 1 or diff.size == 0:
        raise ValueError("paired bootstrap needs two aligned, non-empty score lists")
    tail = (1 - level) / 2
    exact = _exact_integer_bootstrap(diff, tail)
    if exact is not None:
        return exact
    means = _resample_items(np.random.default_rng(seed), diff, resamples)
    means.sort()
    return _percentile(means, tail), _percentile(means, 1 - tail)


def _exact_integer_bootstrap(diff: np.ndarray, tail: float) -> tuple[float, float] | None:
    """Exact percentile interval for whole-number differences, None when they are not.

    A resample's sum is the sum of n independent draws from the items' differences, so its
    distribution is the n-th convolution power of their histogram: one FFT, O(n log n).
    """
    if not np.array_equal(diff, np.round(diff)):
        return None
    low, n = int(diff.min()), diff.size
    width = int(diff.max()) - low
    size = n * width + 1  # the sum ranges over n*low .. n*low + n*width: no wrap-around at this size
    if width == 0:
        return float(low), float(low)
    if size > EXACT_MAX:
        return None
    histogram = np.bincount((diff - low).astype(int), minlength=width + 1) / n
    dist = np.fft.irfft(np.fft.rfft(histogram, size) ** n, size)
    cdf = np.cumsum(np.clip(dist, 0, None))  # FFT round-off leaves tiny negatives
    cdf /= cdf[-1]
    lo, hi = np.searchsorted(cdf, [tail, 1 - tail])
    return (n * low + int(lo)) / n, (n * low + int(hi)) / n


def _resample_items(rng: np.random.Generator, diff: np.ndarray, resamples: int) -> np.ndarray:
    """Resampled means of real-valued differences, in chunks so memory stays bounded for large n."""
    means = np.empty(resamples)
    rows = max(1, 4_000_000 // diff.size)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        means[start:stop] = diff[rng.integers(0, diff.size, size=(stop - start, diff.size))].mean(axis=1)
    return means


def _percentile(ordered: np.ndarray, q: float) -> float:
    """Linear-interpolated quantile of sorted values (numpy's default method, without its overhead)."""
    pos = q * (ordered.size - 1)
    lo = int(pos)
    hi = min(lo + 1, ordered.size - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def stderr_of(samples: Sequence[float]) -> float | None:
    """Standard error of the mean of per-item scores (None below two items)."""
    x = np.asarray(samples, dtype=float)
    if x.size < 2:
        return None
    return float(x.std(ddof=1) / math.sqrt(x.size))


def delta_interval(old: float, new: float, *, old_se: float | None = None, new_se: float | None = None,
                   old_samples: Sequence[float] | None = None,
                   new_samples: Sequence[float] | None = None) -> Interval:
    """The change new - old with the best 95 % interval the inputs allow (see the module doc)."""
    delta = new - old
    if not math.isfinite(delta):  # a NaN or infinite score has no interval worth printing
        return Interval(delta, None, None, "unknown")
    if old_samples is not None and new_samples is not None and len(old_samples) == len(new_samples) > 1:
        low, high = paired_bootstrap(old_samples, new_samples)
        return Interval(delta, low, high, "paired bootstrap")
    # unaligned per-item scores still give each side a standard error
    if old_se is None and old_samples is not None:
        old_se = stderr_of(old_samples)
    if new_se is None and new_samples is not None:
        new_se = stderr_of(new_samples)
    if old_se is not None and new_se is not None:
        half = Z95 * math.sqrt(old_se**2 + new_se**2)
        return Interval(delta, delta - half, delta + half, "stderr")
    return Interval(delta, None, None, "unknown")


def win_rate_interval(rate: float, n: int, parity: float = 0.5) -> Interval:
    """A pairwise win rate against the base, as a change from parity with a Wilson interval."""
    low, high = wilson(rate * n, n)
    return Interval(rate - parity, low - parity, high - parity, "wilson")


@dataclass(frozen=True)
class McNemar:
    """Discordant pairs of 0/1 scores: `lost` right->wrong, `gained` wrong->right; two-sided p."""

    lost: int
    gained: int
    p: float


def mcnemar(old: Sequence[float], new: Sequence[float]) -> McNemar | None:
    """Exact McNemar test on aligned 0/1 scores; None when the scores are not all 0 or 1."""
    a = np.asarray(old, dtype=float)
    b = np.asarray(new, dtype=float)
    if a.shape != b.shape or not np.isin(a, (0.0, 1.0)).all() or not np.isin(b, (0.0, 1.0)).all():
        return None
    lost = int(((a == 1) & (b == 0)).sum())
    gained = int(((a == 0) & (b == 1)).sum())
    m, k = lost + gained, min(lost, gained)
    if m == 0:
        return McNemar(lost, gained, 1.0)
    if m <= 1000:  # exact binomial tail; exact integers, one division
        p = 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2**m
    else:  # normal approximation with continuity correction, accurate at this size
        zval = (abs(lost - gained) - 1) / math.sqrt(m)
        p = math.erfc(zval / math.sqrt(2))
    return McNemar(lost, gained, min(1.0, p))


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
