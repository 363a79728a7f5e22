"""Every interval and test in reports/stats.py against an independent implementation (scipy, statsmodels).

A generated grid: n = 1, 13, 30, 80, 3270; all items equal; all 0 and all 1; proportions near 0 and
near 1; random and skewed real-valued scores; and NaN, infinite and negative inputs, which must be
rejected rather than turned into a bracket with nan in it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

scipy_stats = pytest.importorskip("scipy.stats")
special = pytest.importorskip("scipy.special")
sm_prop = pytest.importorskip("statsmodels.stats.proportion")
sm_table = pytest.importorskip("statsmodels.stats.contingency_tables")
sm_multi = pytest.importorskip("statsmodels.stats.multitest")
sm_weight = pytest.importorskip("statsmodels.stats.weightstats")
sm_rater = pytest.importorskip("statsmodels.stats.inter_rater")

from tunebook.reports.stats import (  # noqa: E402
    Z95,
    BadNumber,
    betainc,
    cohen_kappa,
    delta_interval,
    holm,
    mcnemar,
    mcnemar_counts,
    normal_interval,
    paired_t,
    stderr_of,
    t_quantile,
    tango,
    t_sf2,
    wilson,
    win_rate_interval,
)

NS = (1, 13, 30, 80, 3270)
REL = 1e-9


def counts(n: int) -> list[int]:
    """Successes out of n: all 0, one (p near 0), a third, half, all but one (p near 1), all."""
    return sorted({0, min(1, n), n // 3, n // 2, max(n - 1, 0), n})


@pytest.mark.parametrize("n", NS)
def test_wilson_matches_statsmodels(n):
    for k in counts(n):
        low, high = wilson(k, n)
        ref = sm_prop.proportion_confint(k, n, alpha=0.05, method="wilson")
        assert (low, high) == pytest.approx(ref, rel=REL, abs=1e-12), (k, n)


@pytest.mark.parametrize("n", NS)
def test_win_rate_score_test_matches_statsmodels(n):
    for k in counts(n):
        iv = win_rate_interval(k / n, n)
        ref_low, ref_high = sm_prop.proportion_confint(k, n, alpha=0.05, method="wilson")
        assert (iv.low, iv.high) == pytest.approx((ref_low - 0.5, ref_high - 0.5), rel=REL, abs=1e-12)
        _, p = sm_prop.proportions_ztest(k, n, value=0.5, prop_var=0.5)
        assert iv.p == pytest.approx(p, rel=1e-7, abs=1e-300)
        # the score test and the Wilson interval are one decision
        assert iv.significant == (not iv.low <= 0 <= iv.high) or math.isclose(iv.p, 0.05, rel_tol=1e-6)


def _tables(n: int):
    """(lost, gained) grids for n paired 0/1 items: no flips, one flip, rare flips, many, all."""
    out = {(0, 0), (min(1, n), 0), (0, min(1, n)), (n, 0), (0, n)}
    if n >= 13:
        out |= {(n // 10, 0), (n // 10, n // 20), (n // 3, n // 3), (n // 2, n // 4)}
    return sorted(out)


def _tango_reference(lost: int, gained: int, n: int) -> tuple[float, float]:
    """Tango's score interval the long way: the restricted MLE by scipy's bounded optimizer on the
    multinomial likelihood, the score statistic from it, and its ±1.96 crossings by brentq."""
    optimize = pytest.importorskip("scipy.optimize")
    rest = n - lost - gained

    def z(change: float) -> float:  # change = p_gained - p_lost
        lo, hi = max(0.0, change), min(1.0, (1 + change) / 2)  # p_gained range with p_lost = p_gained - change
        if hi - lo < 1e-14:
            p_gained = lo
        else:
            def nll(pg):
                pl = pg - change
                terms = [(lost, pl), (gained, pg), (rest, 1 - pl - pg)]
                return -sum(k * math.log(max(p, 1e-300)) for k, p in terms if k)
            p_gained = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded",
                                                options={"xatol": 1e-13}).x
        var = n * (p_gained + (p_gained - change) - change**2)  # n·Var of one item's difference, restricted
        num = gained - lost - n * change
        if var <= 0:
            return 0.0 if abs(num) < 1e-12 else math.copysign(math.inf, num)
        return num / math.sqrt(var)

    crit = scipy_stats.norm.ppf(0.975)
    est = (gained - lost) / n
    eps = 1e-9
    low = -1.0 if est <= -1 + eps or z(-1 + eps) <= crit else optimize.brentq(lambda c: z(c) - crit, -1 + eps, est)
    high = 1.0 if est >= 1 - eps or z(1 - eps) >= -crit else optimize.brentq(lambda c: z(c) + crit, est, 1 - eps)
    return low, high


@pytest.mark.parametrize("n", NS)
def test_tango_matches_a_numerical_score_interval(n):
    for lost, gained in _tables(n):
        low, high = tango(lost, gained, n)
        ref = _tango_reference(lost, gained, n)
        assert (low, high) == pytest.approx(ref, abs=2e-6), (lost, gained, n)
        assert high - low > 0  # never [0, 0], however rarely items flip (item 5)
    # the score test at no change is McNemar's z without continuity correction
    lost, gained = 4, 0
    low, high = tango(lost, gained, 100)
    excludes = not low <= 0 <= high
    assert excludes == (abs(lost - gained) / math.sqrt(lost + gained) > scipy_stats.norm.ppf(0.975))


@pytest.mark.parametrize("n", NS)
def test_mcnemar_matches_statsmodels_exact(n):
    for lost, gained in _tables(n):
        ref = sm_table.mcnemar([[0, lost], [gained, 0]], exact=True).pvalue
        assert mcnemar_counts(lost, gained).p == pytest.approx(min(1.0, ref), rel=1e-9, abs=1e-300), (lost, gained)


def test_mcnemar_exact_beyond_a_thousand_discordant_pairs():
    for lost, gained in ((700, 900), (3000, 3270), (1200, 1201), (10, 2000)):
        ref = sm_table.mcnemar([[0, lost], [gained, 0]], exact=True).pvalue
        assert mcnemar_counts(lost, gained).p == pytest.approx(ref, rel=1e-8, abs=1e-300)


def _paired_grid(n: int, rng: np.random.Generator):
    yield "random normal", rng.normal(size=n), rng.normal(0.1, 1.0, size=n)
    yield "skewed", rng.exponential(size=n), rng.exponential(size=n) * 1.2
    yield "near zero", np.full(n, 1e-6), np.full(n, 1e-6) + rng.normal(0, 1e-9, size=n)
    yield "near one", np.full(n, 1 - 1e-6), np.full(n, 1 - 1e-6) - np.abs(rng.normal(0, 1e-9, size=n))


@pytest.mark.parametrize("n", NS)
def test_paired_t_matches_scipy(n):
    rng = np.random.default_rng(n)
    for name, old, new in _paired_grid(n, rng):
        if n < 2:
            with pytest.raises(BadNumber):
                paired_t(new - old)
            continue
        low, high, p, se = paired_t(new - old)
        ref = scipy_stats.ttest_rel(new, old)
        ci = ref.confidence_interval(0.95)
        assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-7, abs=1e-15), name
        assert p == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-300), name
        assert se == pytest.approx(scipy_stats.sem(new - old), rel=REL), name


@pytest.mark.parametrize("n", NS)
def test_delta_interval_dispatch_on_the_grid(n):
    rng = np.random.default_rng(100 + n)
    # 0/1 scores: Tango score with McNemar's p
    for lost, gained in _tables(n):
        both = n - lost - gained
        old = np.array([1.0] * lost + [0.0] * gained + [1.0] * (both // 2) + [0.0] * (both - both // 2))
        new = np.array([0.0] * lost + [1.0] * gained + list(old[lost + gained:]))
        if n < 2:
            assert not delta_interval(old.mean(), new.mean(), old_samples=old, new_samples=new).known
            continue
        iv = delta_interval(old.mean(), new.mean(), old_samples=old, new_samples=new)
        assert iv.method == "Tango score" and iv.paired
        assert (iv.low, iv.high) == pytest.approx(_tango_reference(lost, gained, n), abs=2e-6)
        assert iv.p == pytest.approx(sm_table.mcnemar([[0, lost], [gained, 0]], exact=True).pvalue, rel=1e-8)
    # all items equal on both sides (real-valued): no change and nothing to doubt, or unknown if all moved alike
    same = np.full(n, 0.37)
    if n >= 2:
        zero = delta_interval(0.37, 0.37, old_samples=same, new_samples=same)
        assert zero.p == 1.0 and not zero.significant
        shifted = delta_interval(0.37, 0.47, old_samples=same, new_samples=same + 0.1)
        assert not shifted.known and "no spread" in shifted.note


@pytest.mark.parametrize("n", NS)
def test_stderr_and_normal_interval_match_scipy(n):
    x = np.random.default_rng(n).normal(size=n)
    if n < 2:
        assert stderr_of(x) is None
        return
    assert stderr_of(x) == pytest.approx(scipy_stats.sem(x), rel=REL)
    se = 0.01 * math.sqrt(30 / n)
    iv = normal_interval(0.02, se)
    assert (iv.low, iv.high) == pytest.approx(scipy_stats.norm.interval(0.95, loc=0.02, scale=se), rel=1e-9)
    assert iv.p == pytest.approx(2 * scipy_stats.norm.sf(0.02 / se), rel=1e-9)
    assert Z95 == pytest.approx(scipy_stats.norm.ppf(0.975), rel=1e-15)


@pytest.mark.parametrize("df", [1, 2, 4, 12, 29, 79, 3269, 10**5])
def test_t_distribution_matches_scipy(df):
    # lgamma differences lose ~1e-16·df of precision: 1e-11 at df=1e5, far below what a log prints
    assert t_quantile(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-9)
    for t in (0.0, 0.5, 1.96, 3.0, 8.0, 40.0):
        assert t_sf2(t, df) == pytest.approx(2 * scipy_stats.t.sf(t, df), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("a, b", [(0.5, 0.5), (0.5, 6.5), (1634.5, 0.5), (2.0, 3.0), (40.0, 0.5)])
def test_incomplete_beta_matches_scipy(a, b):
    for x in (1e-12, 0.01, 0.3, 0.5, 0.9, 0.999999):
        assert betainc(a, b, x) == pytest.approx(special.betainc(a, b, x), rel=1e-10, abs=1e-300)


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(7)
    for m in (1, 2, 10, 50):
        p = np.concatenate([rng.uniform(size=m - m // 3), rng.uniform(0, 0.01, size=m // 3)])
        ref = sm_multi.multipletests(p, alpha=0.05, method="holm")[1]
        assert holm(p) == pytest.approx(list(ref), rel=1e-12)
    assert holm([0.01, 0.01, 1.0]) == pytest.approx(list(sm_multi.multipletests([0.01, 0.01, 1.0], method="holm")[1]))


def test_cohen_kappa_matches_statsmodels():
    rng = np.random.default_rng(3)
    for n in (13, 30, 80):
        a = rng.integers(0, 3, size=n)
        b = np.where(rng.random(n) < 0.7, a, rng.integers(0, 3, size=n))
        table = np.zeros((3, 3))
        np.add.at(table, (a, b), 1)
        assert cohen_kappa(list(a), list(b)) == pytest.approx(sm_rater.cohens_kappa(table).kappa, rel=1e-12)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs_are_rejected(bad):
    with pytest.raises(BadNumber, match="final samples\\[1\\]"):
        delta_interval(0.5, 0.5, old_samples=[0.0, 1.0, 0.5], new_samples=[0.0, bad, 1.0])
    with pytest.raises(BadNumber, match="final stderr"):
        delta_interval(0.5, 0.6, old_se=0.1, new_se=bad)
    with pytest.raises(BadNumber, match="final value"):
        delta_interval(0.5, bad, old_se=0.1, new_se=0.1)
    with pytest.raises(BadNumber):
        wilson(bad, 10)
    with pytest.raises(BadNumber):
        win_rate_interval(bad, 10)
    with pytest.raises(BadNumber):
        paired_t([0.1, bad, 0.2])


def test_negative_and_out_of_range_inputs_are_rejected():
    with pytest.raises(BadNumber, match="negative"):
        delta_interval(0.5, 0.6, old_se=-0.01, new_se=0.01)
    with pytest.raises(BadNumber):
        wilson(3, 0)
    with pytest.raises(BadNumber):
        wilson(-1, 10)
    with pytest.raises(BadNumber):
        wilson(11, 10)
    with pytest.raises(BadNumber, match="not a proportion"):
        win_rate_interval(77, 100)
    with pytest.raises(BadNumber):
        tango(-1, 0, 10)
    assert mcnemar([0.5, 1.0], [1.0, 1.0]) is None  # not 0/1: no McNemar


def test_items_needed_matches_a_search_with_the_reference_intervals():
    from tunebook.reports.stats import items_needed

    for wins, n in ((10, 13), (9, 13), (20, 30), (45, 80)):
        rate = wins / n
        need = items_needed(win_rate_interval(rate, n))
        ref = next(k for k in range(2, 100_000)
                   if not sm_prop.proportion_confint(rate * k, k, alpha=0.05, method="wilson")[0] <= 0.5
                   <= sm_prop.proportion_confint(rate * k, k, alpha=0.05, method="wilson")[1])
        assert need == ref, (wins, n)
    rng = np.random.default_rng(11)
    for n in (5, 8):  # below bootstrap-t's range: Student t
        d = rng.normal(0.1, 1.0, size=n)
        mean, sd = d.mean(), d.std(ddof=1)
        ref = next(k for k in range(2, 1_000_000)
                   if scipy_stats.t.ppf(0.975, k - 1) * sd / math.sqrt(k) < abs(mean))
        iv = delta_interval(0.0, float(mean), old_samples=np.zeros(n), new_samples=d)
        assert iv.method == "paired t" and items_needed(iv) == ref
    for n in (13, 30):  # bootstrap-t: the reference quantiles of t*, scaled to k items
        d = rng.normal(0.1, 1.0, size=n)
        mean, sd = d.mean(), d.std(ddof=1)
        t_star = _reference_t_star(d)
        q_low, q_high = np.quantile(t_star, [0.025, 0.975])
        ref = next(k for k in range(2, 1_000_000)
                   if not mean - q_high * sd / math.sqrt(k) <= 0 <= mean - q_low * sd / math.sqrt(k))
        iv = delta_interval(0.0, float(mean), old_samples=np.zeros(n), new_samples=d)
        assert iv.method == "bootstrap-t" and items_needed(iv) == ref


def _reference_t_star(d: np.ndarray) -> np.ndarray:
    """t* = (mean* - mean) / se* by a plain loop over the same resampling plan (statistics module)."""
    import statistics

    from tunebook.reports.stats import _boot_t_indices

    n, mean = len(d), statistics.fmean(d)
    out = []
    for row in _boot_t_indices(n):
        x = [float(d[i]) for i in row]
        s = statistics.stdev(x) / math.sqrt(n)
        out.append((statistics.fmean(x) - mean) / s if s > 0 else 0.0)
    return np.array(out)


@pytest.mark.parametrize("n", [10, 13, 30, 80])
def test_bootstrap_t_matches_a_plain_loop_and_its_test_agrees_with_its_interval(n):
    from tunebook.reports.stats import bootstrap_t

    rng = np.random.default_rng(500 + n)
    for shift in (0.0, 0.3, 0.8):
        d = rng.exponential(size=n) - 1 + shift  # skewed per-item differences
        low, high, p, se, q_low, q_high = bootstrap_t(d)
        t_star = _reference_t_star(d)
        ref_q = np.quantile(t_star, [0.025, 0.975])
        assert (q_low, q_high) == pytest.approx(tuple(ref_q), rel=1e-9)
        assert se == pytest.approx(scipy_stats.sem(d), rel=REL)
        assert (low, high) == pytest.approx((d.mean() - ref_q[1] * se, d.mean() - ref_q[0] * se), rel=1e-9)
        assert (p < 0.05) == (not low <= 0 <= high), (p, low, high)  # one decision, one test


def test_bootstrap_t_is_the_method_from_10_to_5000_items():
    rng = np.random.default_rng(3)
    for n, method in ((9, "paired t"), (10, "bootstrap-t"), (5000, "bootstrap-t"), (5001, "paired t")):
        d = rng.normal(size=n)
        assert delta_interval(0.0, float(d.mean()), old_samples=np.zeros(n), new_samples=d).method == method, n
