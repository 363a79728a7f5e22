"""Badges: judged against the interval and the record's thresholds, never against metric names."""

from __future__ import annotations

from tunebook.reports.stats import Interval
from tunebook.reports.status import CAUTION, IMPROVED, NOISE, REGRESSED, Thresholds, Verdict, judge, overall

FORGETTING = Thresholds(warn=-0.01, fail=-0.05)


def iv(delta, low, high):
    return Interval(delta, low, high, "paired bootstrap")


def test_improvement_needs_the_whole_interval():
    assert judge(iv(0.1, 0.02, 0.18), True, 120).badge == IMPROVED
    assert judge(iv(0.1, -0.01, 0.21), True, 120).badge == NOISE


def test_lower_is_better_flips_the_sides():
    assert judge(iv(-0.44, -0.5, -0.4), False, 100).badge == IMPROVED
    assert judge(iv(0.2, 0.1, 0.3), False, 100).badge == REGRESSED


def test_regressions_by_threshold():
    assert judge(iv(-0.15, -0.23, -0.07), True, 120, FORGETTING).badge == REGRESSED
    mild = judge(iv(-0.03, -0.05, -0.01), True, 120, FORGETTING)
    assert mild.badge == CAUTION and mild.label == "mild regression"
    small = judge(iv(-0.005, -0.008, -0.002), True, 5000, FORGETTING)
    assert small.badge == CAUTION and "within warn" in small.label
    # no tolerance declared: any significant regression fails
    assert judge(iv(-0.03, -0.05, -0.01), True, 120).badge == REGRESSED


def test_small_n_is_never_a_confident_badge_and_says_the_width():
    v = judge(iv(0.3, 0.05, 0.55), True, 13)
    assert v.badge == CAUTION and "n=13" in v.note and "±0.25" in v.note
    noise = judge(iv(0.1, -0.2, 0.4), True, 16)
    assert noise.badge == NOISE and "n=16 < 30" in str(noise)


def test_unknown_interval_and_missing_baseline():
    v = judge(Interval(-0.54, None, None, "unknown"), True, 80, FORGETTING)
    assert v.badge == CAUTION and v.label == "CI unknown"
    assert str(judge(None, True, 80)) == "no baseline"


def test_thresholds_only_for_the_general_suite_and_only_numbers():
    expect = {"forgetting": {"warn": -0.02, "fail": "-0.1"}}
    assert Thresholds.for_suite("general", expect) == Thresholds(warn=-0.02, fail=None)
    assert Thresholds.for_suite("target", expect) == Thresholds()
    assert Thresholds.for_suite("general", {"forgetting": [1]}) == Thresholds()


def test_overall_badge():
    good = Verdict(IMPROVED, "improved")
    assert overall([good], ["fail", "info"]).badge == REGRESSED
    assert overall([good], ["warn"]).badge == CAUTION
    assert overall([good], ["info"]).badge == IMPROVED
    assert overall([Verdict(NOISE, "within noise")], []).badge == NOISE
