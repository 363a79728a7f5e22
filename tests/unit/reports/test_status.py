"""Badges: judged by the printed test, a practical floor and the record's thresholds, never metric names."""

from __future__ import annotations

import pytest

from tunebook.reports.stats import Interval, normal_interval, win_rate_interval
from tunebook.reports.status import (
    CAUTION,
    IMPROVED,
    NOISE,
    REGRESSED,
    ThresholdError,
    Thresholds,
    Verdict,
    check_expect,
    judge,
    overall,
    parse_level,
    thresholds_for,
)

FORGETTING = Thresholds(warn=-0.01, fail=-0.05)


def iv(delta, low, high, p=None):
    return Interval(delta, low, high, "paired t", p)


def test_improvement_needs_a_significant_test():
    assert judge(iv(0.1, 0.02, 0.18), True, 120).badge == IMPROVED
    assert judge(iv(0.1, -0.01, 0.21), True, 120).badge == NOISE


def test_lower_is_better_flips_the_sides():
    assert judge(iv(-0.44, -0.5, -0.4), False, 100, FORGETTING).badge == IMPROVED
    assert judge(iv(0.2, 0.1, 0.3), False, 100, FORGETTING).badge == REGRESSED


def test_regressions_by_threshold():
    assert judge(iv(-0.15, -0.23, -0.07), True, 120, FORGETTING).badge == REGRESSED
    mild = judge(iv(-0.03, -0.05, -0.015), True, 120, FORGETTING)
    assert mild.badge == CAUTION and mild.label == "mild regression"
    # no fail threshold for these units: a significant drop is never ❌
    none = judge(iv(-0.03, -0.05, -0.01), True, 120)
    assert none.badge == CAUTION and "no fail threshold" in none.label


def test_practical_floor_item8():
    # n = 10^6, -0.002 is significant but below the floor: neither ✅ nor ❌ (was ❌ catastrophic)
    tiny = normal_interval(-0.002, 0.0005)
    assert tiny.significant
    v = judge(tiny, True, 1_000_000, FORGETTING)
    assert v.badge == NOISE and "practical floor" in v.label
    assert judge(normal_interval(0.002, 0.0005), True, 1_000_000, FORGETTING).badge == NOISE


def test_badge_follows_the_printed_test_item4():
    # interval excludes 0 but the printed test does not reject: within noise, the same decision as the p
    v = judge(Interval(-0.04, -0.098, -0.0015, "Tango score", 0.125, "McNemar exact"), True, 100, FORGETTING)
    assert v.badge == NOISE and "by McNemar exact (p=0.12)" in v.label
    assert judge(iv(-0.1, -0.2, -0.01, p=0.01), True, 100, FORGETTING).badge == REGRESSED


def test_small_n_boundary_is_inclusive_item14():
    v = judge(iv(0.3, 0.05, 0.55, p=0.01), True, 30)
    assert v.badge == CAUTION and "n=30 ≤ 30" in v.note and "±0.25" in v.note
    assert judge(iv(0.3, 0.05, 0.55, p=0.01), True, 31).badge == IMPROVED
    noise = judge(iv(0.1, -0.2, 0.4), True, 16)
    assert noise.badge == NOISE and "n=16 ≤ 30" in str(noise)


def test_asymmetric_interval_is_not_written_as_plus_minus_item13():
    w = win_rate_interval(12 / 13, 13)
    v = judge(w, True, 13)
    assert "±" not in v.note and "[" in v.note


def test_unknown_interval_and_missing_baseline():
    v = judge(Interval(-0.54, None, None, "unknown"), True, 80, FORGETTING)
    assert v.badge == CAUTION and v.label == "CI unknown"
    assert str(judge(None, True, 80)) == "no baseline"


def test_defaults_are_the_same_for_hand_written_and_compiled_records_item8():
    compiled = thresholds_for("general", "arc", "acc", {"forgetting": {"warn": -0.01, "fail": -0.05}}, 0.8, 0.7)
    by_hand = thresholds_for("general", "arc", "acc", {}, 0.8, 0.7)
    assert (compiled.warn, compiled.fail) == (by_hand.warn, by_hand.fail) == (-0.01, -0.05)
    # MT-Bench points: an absolute -0.05 is not in its units; the relative default applies
    mt = thresholds_for("general", "mt_bench", "score", {"forgetting": {"warn": -0.01, "fail": -0.05}}, 6.0, 5.0)
    assert mt.fail == pytest.approx(-0.3) and "relative" in mt.source


def test_relative_and_per_task_thresholds_item9():
    expect = {"forgetting": {"warn": "-2%", "fail": "-10%", "tasks": {"mt_bench": {"warn": -0.2, "fail": -0.5},
                                                                     "wiki/ppl": {"fail": "-3%"}}}}
    check_expect(expect)
    t = thresholds_for("general", "arc", "acc", expect, 0.5, 0.4)
    assert (t.warn, t.fail) == (pytest.approx(-0.01), pytest.approx(-0.05))
    assert thresholds_for("general", "mt_bench", "score", expect, 6.0, 5.0).fail == -0.5
    ppl = thresholds_for("general", "wiki", "ppl", expect, 20.0, 21.0, higher_is_better=False)
    assert ppl.fail == pytest.approx(-0.6) and ppl.warn is None


@pytest.mark.parametrize("bad, says", [
    ({"warn": 0.01, "fail": 0.05}, "did you mean -0.01"),  # magnitudes: a +0.03 gain became catastrophic
    ({"warn": "-5 percent"}, "is not a threshold"),         # was silently ignored
    ({"warn": -0.05, "fail": -0.01}, "fail (-0.01) must be at or below warn"),
    ({"warn": True}, "is not a threshold"),
    ({"tasks": {"mt": {"fail": "5%"}}}, "expect.forgetting.tasks.mt.fail"),
    ({"wran": -0.01}, "unknown key"),
])
def test_thresholds_are_validated_item9(bad, says):
    with pytest.raises(ThresholdError, match=says.replace("(", r"\(").replace(")", r"\)")):
        check_expect({"forgetting": bad})


def test_parse_level():
    assert parse_level("-5%", "x").relative and parse_level("-5%", "x").value == pytest.approx(-0.05)
    assert parse_level(-0.02, "x").value == -0.02 and parse_level(None, "x") is None


def test_overall_badge():
    good = Verdict(IMPROVED, "improved")
    assert overall([good], ["fail", "info"]).badge == REGRESSED
    assert overall([good], ["warn"]).badge == CAUTION
    assert overall([good], ["info"]).badge == IMPROVED
    assert overall([Verdict(NOISE, "within noise")], []).badge == NOISE
