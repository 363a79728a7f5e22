"""`expect.forgetting` is read the same way at `tunebook compile` and at `tunebook report`.

The compiler (compiler/schema.Threshold) and the reports (reports/status.check_expect) each check
thresholds — they do not import each other — so this test holds them to the same answer on a grid of
inputs: what one accepts, the other accepts; what one refuses, the other refuses.
"""

from __future__ import annotations

import itertools

import pytest
from pydantic import ValidationError

from tunebook.compiler.schema import Threshold
from tunebook.reports.status import ThresholdError, check_expect

LEVELS = [None, -0.05, -0.01, 0.0, 0.01, -1, -5, "-5%", "-1%", "5%", "-0.5 %", "abc", "-5", ""]


def compiler_accepts(t: dict) -> bool:
    try:
        Threshold.model_validate(t, strict=True)
        return True
    except ValidationError:
        return False


def reports_accept(t: dict) -> bool:
    try:
        check_expect({"forgetting": t})
        return True
    except ThresholdError:
        return False


@pytest.mark.parametrize("warn,fail", list(itertools.product(LEVELS, LEVELS)))
def test_compiler_and_reports_agree_on_every_pair(warn, fail):
    t = {k: v for k, v in (("warn", warn), ("fail", fail)) if v is not None}
    assert compiler_accepts(t) == reports_accept(t), t
    per_task = {"tasks": {"mt_bench": t}}
    assert compiler_accepts(per_task) == reports_accept(per_task), per_task


def test_the_mistakes_the_issue_names_are_refused_at_compile_with_a_hint():
    with pytest.raises(ValidationError, match=r"positive.*did you mean -0.01"):
        Threshold.model_validate({"warn": 0.01, "fail": 0.05}, strict=True)  # magnitudes, not changes
    with pytest.raises(ValidationError, match="fail is the larger drop"):
        Threshold.model_validate({"warn": -0.05, "fail": -0.01}, strict=True)
    ok = Threshold.model_validate({"warn": "-1%", "fail": "-5%", "tasks": {"mt_bench/score": {"fail": -0.5}}}, strict=True)
    assert ok.tasks["mt_bench/score"].fail == -0.5
