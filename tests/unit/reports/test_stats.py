"""Intervals: Wilson, paired bootstrap (exact and resampled), stderr fallback, McNemar, kappa."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunebook.reports.stats import (
    cohen_kappa,
    delta_interval,
    mcnemar,
    paired_bootstrap,
    stderr_of,
    wilson,
    win_rate_interval,
)

from .conftest import binary


def test_wilson_known_values_and_bounds():
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson(5, 10)
    assert low == pytest.approx(1 - high)  # symmetric around one half
    with pytest.raises(ValueError):
        wilson(1, 0)


def test_exact_bootstrap_matches_many_resamples():
    rng = np.random.default_rng(0)
    old = (rng.random(150) < 0.8).astype(float)
    new = np.where(rng.random(150) < 0.85, old, 1 - old)
    low, high = paired_bootstrap(old, new)
    means = (new - old)[rng.integers(0, 150, size=(40_000, 150))].mean(axis=1)
    mc_low, mc_high = np.quantile(means, [0.025, 0.975])
    assert abs(low - mc_low) <= 1 / 150 and abs(high - mc_high) <= 1 / 150


def test_real_valued_bootstrap_is_seeded_and_covers_the_mean():
    rng = np.random.default_rng(1)
    old = rng.normal(size=300)
    new = old + rng.normal(0.2, 1.0, size=300)
    first = paired_bootstrap(old, new)
    assert first == paired_bootstrap(old, new)
    assert first[0] < (new - old).mean() < first[1]
    half = 1.96 * (new - old).std(ddof=1) / math.sqrt(300)
    assert (first[1] - first[0]) / 2 == pytest.approx(half, rel=0.15)


def test_bootstrap_rejects_misaligned_scores():
    with pytest.raises(ValueError):
        paired_bootstrap([], [])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=2, max_size=60))
def test_exact_bootstrap_interval_holds_the_mean(pairs):
    old, new = (np.array(x, dtype=float) for x in zip(*pairs))
    low, high = paired_bootstrap(old, new)
    diff = new - old
    assert diff.min() <= low <= diff.mean() <= high <= diff.max()


def test_delta_interval_picks_the_best_method():
    old, new = binary(100, 80, flip=20)
    assert delta_interval(0.8, 0.6, old_samples=old, new_samples=new).method == "paired bootstrap"
    # unaligned samples still give standard errors
    unaligned = delta_interval(0.8, 0.6, old_samples=old, new_samples=new[:50])
    assert unaligned.method == "stderr" and unaligned.known
    by_se = delta_interval(0.5, 0.6, old_se=0.03, new_se=0.04)
    assert by_se.method == "stderr"
    assert by_se.half_width == pytest.approx(1.96 * 0.05, rel=1e-3)
    unknown = delta_interval(2.0357, 1.4924)
    assert unknown.method == "unknown" and not unknown.known and unknown.half_width is None
    assert delta_interval(0.5, math.nan, old_se=0.1, new_se=0.1).method == "unknown"


def test_stderr_of_samples():
    assert stderr_of([1.0]) is None
    assert stderr_of([0.0, 1.0, 0.0, 1.0]) == pytest.approx(math.sqrt(1 / 3) / 2)


def test_win_rate_interval_is_relative_to_parity():
    iv = win_rate_interval(10 / 13, 13)
    assert iv.method == "wilson" and iv.delta == pytest.approx(10 / 13 - 0.5)
    # seed 004's "77% in-domain win rate" (10 of 13) cannot be told apart from a coin flip
    assert iv.low < 0 < iv.high
    assert win_rate_interval(0.77, 100).low > 0


def test_mcnemar_exact_and_non_binary():
    old = [1.0] * 1 + [0.0] * 9 + [1.0] * 5
    new = [0.0] * 1 + [1.0] * 9 + [1.0] * 5
    result = mcnemar(old, new)
    assert (result.lost, result.gained) == (1, 9)
    assert result.p == pytest.approx(2 * 11 / 1024)
    assert mcnemar([0.5, 1.0], [1.0, 1.0]) is None
    assert mcnemar([1.0, 0.0], [1.0, 0.0]).p == 1.0


def test_mcnemar_large_counts_use_the_normal_approximation():
    old, new = binary(3000, 2000, flip=600)
    result = mcnemar(old, new)
    assert result.lost == 600 and result.p < 1e-10


def test_cohen_kappa():
    assert cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.5)
    assert cohen_kappa(["a", "b"], ["a", "b"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None
    with pytest.raises(ValueError):
        cohen_kappa([1], [1, 2])
