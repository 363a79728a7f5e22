"""Reward functions by name: what each pays for, the trl calling convention, and unknown names."""

from __future__ import annotations

import pytest

from tunebook.compiler.errors import SpecError
from tunebook.runtime.extract import EXTRACTORS
from tunebook.runtime.rewards import REWARDS, bind, check_names, for_trl, reward

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


@pytest.mark.parametrize("completion, answer, extract, expected", [
    ("Paris", "paris", "exact", 1.0),
    ("  New   York \n", "new york", "exact", 1.0),  # runs of whitespace and case aside
    ("New York\nbecause it is big", "New York", "exact", 1.0),  # the extracted first line
    ("The answer is Paris", "Paris", "exact", 0.0),  # neither the line nor the whole text
    ("Paris", "", "exact", 0.0),  # an empty answer is never matched
    ("12 apples", "12 apples", "first_number", 1.0),  # the whole completion, when the extraction is not it
])
def test_exact_match_compares_text_case_and_whitespace_aside(completion, answer, extract, expected):
    assert REWARDS["exact_match"](completion, answer, EXTRACTORS[extract]) == expected


def test_a_reward_gets_the_keyword_parameters_it_declares():
    seen = {}

    @reward("test_sees_everything")
    def sees(prompt, completion, answer, logprobs):
        seen.update(prompt=prompt, completion=completion, answer=answer, logprobs=logprobs)
        return 0.5

    @reward("test_positional_names")
    def simple(c, a, ex):  # the simple signature under other names: called by position
        return float(ex(c) == a)

    try:
        fn = for_trl("test_sees_everything", "first_number", answer_transform="gsm8k_hash")
        assert fn(prompts=["3-1="], completions=["2"], answer=["work #### 2"], trainer_state=None) == [0.5]
        assert seen == {"prompt": "3-1=", "completion": "2", "answer": "2", "logprobs": None}  # trl 1.16 passes none
        assert bind("test_positional_names", "first_number", "gsm8k_hash")("it is 2", "#### 2") == 1.0
    finally:
        del REWARDS["test_sees_everything"], REWARDS["test_positional_names"]


def test_a_reward_asking_for_what_no_caller_gives_is_refused_naming_it():
    @reward("test_wants_more")
    def wants(completion, answer, temperature):
        return 0.0

    try:
        with pytest.raises(SpecError, match=r"test_rewards.py:\d+ \(.*wants\).*reward 'test_wants_more' takes 'temperature'"):
            bind("test_wants_more", "first_number")
    finally:
        del REWARDS["test_wants_more"]


def test_a_second_definition_of_a_name_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"reward 'exact_match' is defined twice: at .*test_rewards.py:\d+ \(.*mine\) "
                                         r"and at .*rewards.py:\d+ \(exact_match\)"):
        @reward("exact_match")
        def mine(completion, answer, extract):
            return 1.0
    assert REWARDS["exact_match"].__module__ == "tunebook.runtime.rewards"
