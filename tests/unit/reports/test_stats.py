"""Intervals by what they must do at the edges (reference values are in test_stats_reference.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tunebook.reports.stats import (
    BadNumber,
    cohen_kappa,
    delta_interval,
    items_needed,
    mcnemar,
    proportion_stderr,
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


def test_nan_in_samples_is_an_error_not_a_bracket_item1():
    old, new = binary(100, 80, flip=5)
    new[3] = math.nan
    with pytest.raises(BadNumber, match="samples\\[3\\]"):
        delta_interval(0.8, 0.75, old_samples=old, new_samples=new)
    with pytest.raises(BadNumber):
        delta_interval(0.5, 0.6, old_se=math.nan, new_se=0.01)


def test_rare_flips_never_give_a_zero_width_interval_item5():
    old, new = binary(13, 10)  # nothing flipped, 13 items
    iv = delta_interval(10 / 13, 10 / 13, old_samples=old, new_samples=new)
    assert iv.method == "Tango score" and iv.low < 0 < iv.high and iv.high - iv.low > 0.1
    one = delta_interval(0.8, 0.795, old_samples=binary(200, 160)[0], new_samples=binary(200, 160, flip=1)[1])
    assert one.low < 0 < one.high  # a bootstrap stopped at 0 here


def test_real_valued_scores_use_a_t_interval_on_differences_item5():
    rng = np.random.default_rng(1)
    old = rng.normal(size=5)
    new = old + rng.normal(0.2, 1.0, size=5)
    iv = delta_interval(old.mean(), new.mean(), old_samples=old, new_samples=new)
    assert iv.method == "paired t" and iv.paired and iv.n == 5
    assert iv == delta_interval(old.mean(), new.mean(), old_samples=old, new_samples=new)  # deterministic


def test_unpaired_fallback_says_why_item12():
    old, new = binary(100, 80, flip=20)
    unaligned = delta_interval(0.8, 0.6, old_samples=old, new_samples=new[:99])
    assert unaligned.method == "normal" and not unaligned.paired
    assert "100 items at base, 99 at final" in unaligned.note
    by_se = delta_interval(0.5, 0.6, old_se=0.03, new_se=0.04)
    assert by_se.half_width == pytest.approx(1.96 * 0.05, rel=1e-3) and "standard errors only" in by_se.note
    # with item ids, the one missing item does not cost the pairing
    ids = [f"q{i}" for i in range(100)]
    paired = delta_interval(0.8, 0.6, old_samples=old, new_samples=new[:99], old_ids=ids, new_ids=ids[:99])
    assert paired.paired and paired.method == "Tango score" and "1 item(s) missing at final" in paired.note
    unknown = delta_interval(2.0357, 1.4924)
    assert unknown.method == "unknown" and not unknown.known and unknown.half_width is None


def test_items_needed_comes_from_the_intervals_own_formula_item13():
    iv = win_rate_interval(10 / 13, 13)  # seed 004: 10 wins of 13, "about 8 items" before
    need = items_needed(iv)
    assert need == 14
    # at that n the same rate's Wilson interval clears parity, one item fewer it does not
    assert wilson(10 / 13 * 14, 14)[0] > 0.5 >= wilson(10 / 13 * 13, 13)[0]
    assert items_needed(win_rate_interval(0.5, 13)) is None  # no change: no n resolves it


def test_stderr_of_samples():
    assert stderr_of([1.0]) is None
    assert stderr_of([0.0, 1.0, 0.0, 1.0]) == pytest.approx(math.sqrt(1 / 3) / 2)


def test_proportion_stderr_is_the_binomial_one():
    assert proportion_stderr(0.5, 100) == pytest.approx(0.05)
    assert proportion_stderr(0.0, 7) == 0.0 and proportion_stderr(1.0, 7) == 0.0
    # the standard error of the mean of n 0/1 items, with n (not n - 1) in the variance
    x = np.asarray(binary(40, 12)[0])
    assert proportion_stderr(x.mean(), x.size) == pytest.approx(x.std(ddof=0) / math.sqrt(x.size))
    for p, n in [(1.5, 10), (0.5, 0), (math.nan, 10)]:
        with pytest.raises(BadNumber):
            proportion_stderr(p, n)


def test_win_rate_interval_is_relative_to_parity():
    iv = win_rate_interval(10 / 13, 13)
    assert iv.method == "Wilson" and iv.delta == pytest.approx(10 / 13 - 0.5)
    assert iv.low < 0 < iv.high and not iv.significant
    assert win_rate_interval(0.77, 100).low > 0


def test_mcnemar_exact_and_non_binary():
    old = [1.0] * 1 + [0.0] * 9 + [1.0] * 5
    new = [0.0] * 1 + [1.0] * 9 + [1.0] * 5
    result = mcnemar(old, new)
    assert (result.lost, result.gained) == (1, 9)
    assert result.p == pytest.approx(2 * 11 / 1024)
    assert mcnemar([0.5, 1.0], [1.0, 1.0]) is None
    assert mcnemar([1.0, 0.0], [1.0, 0.0]).p == 1.0


def test_badge_decision_on_0_1_is_mcnemar_item4():
    old, new = binary(100, 80, flip=4)  # 4 right->wrong, 0 wrong->right: McNemar p = 0.125
    iv = delta_interval(0.8, 0.76, old_samples=old, new_samples=new)
    assert iv.p == pytest.approx(0.125) and not iv.significant


def test_cohen_kappa():
    assert cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.5)
    assert cohen_kappa(["a", "b"], ["a", "b"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None
    with pytest.raises(ValueError):
        cohen_kappa([1], [1, 2])


def test_zero_standard_errors_never_divide_by_zero():
    from tunebook.reports.stats import normal_interval

    same = normal_interval(0.0, 0.0)
    assert (same.low, same.high, same.p) == (0.0, 0.0, 1.0)
    assert not normal_interval(0.1, 0.0).known
    # two benchmarks whose items all scored the same at both checkpoints: the table's Mean still renders
    from tunebook.reports.compute import compute, forgetting_table

    from .conftest import make, metric

    rec = make(metrics=[metric(t, ck, 0.3, samples=[0.3, 0.3]) for t in ("a", "b") for ck in ("base", "final")])
    assert forgetting_table(rec, compute(rec))["rows"][-1]["mean"].delta == 0.0
