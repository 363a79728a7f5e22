"""Reward functions by name: what each pays for, the trl calling convention, and unknown names."""

from __future__ import annotations

import pytest

from tunebook.compiler.errors import SpecError
from tunebook.runtime.extract import EXTRACTORS
from tunebook.runtime.rewards import REWARDS, check_names, for_trl

FIRST = EXTRACTORS["first_number"]


@pytest.mark.parametrize("completion, answer, expected", [
    ("19", "19", 1.0), (" 19</s>", "19", 1.0), ("19.0", "19", 1.0), ("18", "19", 0.0), ("", "19", 0.0), ("x", "19", 0.0),
])
def test_numeric_match(completion, answer, expected):
    assert REWARDS["numeric_match"](completion, answer, FIRST) == expected


def test_numeric_match_uses_the_spec_extractor():
    text = "125 * 4 = 500, 500 - 2 = 498. Answer: 623"
    assert REWARDS["numeric_match"](text, "623", EXTRACTORS["answer_anchor"]) == 1.0
    assert REWARDS["numeric_match"](text, "623", FIRST) == 0.0  # first_number reads 125


@pytest.mark.parametrize("completion, expected", [
    ("C. they are not rotating", 1.0), ("The answer is (C)", 1.0), ("A car is faster", 0.0), ("B", 0.0),
])
def test_mcq_letter_respects_word_boundaries(completion, expected):
    assert REWARDS["mcq_letter"](completion, "C", FIRST) == expected


def test_format_pays_for_a_readable_answer_right_or_wrong():
    assert REWARDS["format"]("42", "19", FIRST) == 1.0
    assert REWARDS["format"]("no idea", "19", FIRST) == 0.0


def test_trl_adapter_scores_a_batch_and_shows_it_to_the_watchdog():
    seen = []
    fn = for_trl("numeric_match", "first_number", seen.extend)
    assert fn.__name__ == "numeric_match"  # trl logs rewards/<name>/mean
    scores = fn(prompts=["3-1=", "5-2="], completions=["2", [{"role": "assistant", "content": "4"}]], answer=["2", "3"])
    assert scores == [1.0, 0.0] and seen == ["2", "4"]


def test_unknown_reward_names_are_spec_errors_with_a_suggestion():
    with pytest.raises(SpecError, match="unknown reward 'numeric_mach'.*did you mean 'numeric_match'"):
        check_names(["numeric_mach", "format"], "exp.method.grpo.rewards")
