"""Answer extraction on the outputs seed 003 reported (GSM8K, SVAMP, MMLU, AQuA, ARC), each method by name."""

from __future__ import annotations

import pytest

from tunebook.compiler.errors import SpecError
from tunebook.compiler.schema import TargetTask
from tunebook.runtime.extract import ANSWER_TRANSFORMS, EXTRACTORS, normalize_answer, prepare, score

# Model outputs quoted (or lightly completed) from seed 003.
GSM8K_ANCHORED = ("So the steps you will take to solve the problem are 125, 125 * 4, 4 *125 = 500, "
                  "2 less than 500, 500 - 2 = 498...\nAnswer: 623")
SVAMP_COOKIES = "He ate 15 of the 22 sweet cookies, leaving 22 - 15 = 7 sweet cookies. Answer: 7"
SVAMP_BIRDS = ("15 birds had moved to a warmer country and 21 birds have died, that's 36 birds that have "
               "left their home or died. There is a total of 41 - 36 = 5 bird")
MMLU_CORIOLIS = "C. they are not rotating"
AQUA_RAMBLING = ("a cliff. One could simply call a driver who leaves the base of the cliff and crashes on the "
                 "ground with no more pieces than one is given a drop. Howe")
ARC_COLLAPSE = "4" * 50
ARTICLE_FIRST = "A car is being driven towards the base of a tower, so the answer is D"


@pytest.mark.parametrize("name, text, expected", [
    # numeric: the anchor prioritises "Answer:", first_number takes the first number it sees (seed 003)
    ("answer_anchor", GSM8K_ANCHORED, "623"),
    ("first_number", GSM8K_ANCHORED, "125"),
    ("last_number", GSM8K_ANCHORED, "623"),
    ("answer_anchor", SVAMP_COOKIES, "7"),
    ("first_number", SVAMP_COOKIES, "15"),
    ("answer_anchor", SVAMP_BIRDS, "5"),  # no anchor: falls back to the last number
    ("answer_anchor", "Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
    ("answer_anchor", "The answer is $1,234.50.", "1234.5"),
    ("answer_anchor", "x = -5, so the answer is -5", "-5"),
    ("last_number", "10-5", "5"),  # the hyphen between digits is not a minus sign
    ("first_number", "1,2,3 and 4", "1"),  # a list, not the number 123
    ("first_number", "19", "19"),  # the tiny model's subtraction outputs
    ("first_number", "7.0 apples", "7"),
    # boxed
    ("boxed", "so $x = \\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
    ("boxed", "first \\boxed{3} then \\boxed{4}", "4"),
    # multiple choice: word boundary vs the legacy first capital letter (seed 003: 18% vs 24% on MMLU)
    ("mcq_word_boundary", MMLU_CORIOLIS, "C"),
    ("mcq_first_letter", MMLU_CORIOLIS, "C"),
    ("mcq_word_boundary", ARTICLE_FIRST, "D"),
    ("mcq_first_letter", ARTICLE_FIRST, "A"),  # the article "A" — why the legacy method under-scores
    ("mcq_word_boundary", "I think (B) is correct", "B"),
    ("mcq_word_boundary", "B) Paris", "B"),
    ("mcq_word_boundary", "The correct option is E", "E"),
    ("mcq_word_boundary", "Answer: (c)", None),  # lowercase letters are not options
    ("mcq_word_boundary", "the answer is a bit unclear", None),
    ("mcq_word_boundary", "E.g. a mirror", None),
    ("exact", "\n  Paris  \nmore", "Paris"),
])
def test_extractors_on_seed_examples(name, text, expected):
    assert EXTRACTORS[name](text) == expected


@pytest.mark.parametrize("text", [AQUA_RAMBLING, ARC_COLLAPSE])
def test_mcq_failures_are_none_not_a_guess(text):
    """Seed 003's "Predicted: X": no option letter at all must be an extraction failure (None)."""
    assert EXTRACTORS["mcq_word_boundary"](text) is None
    assert EXTRACTORS["mcq_first_letter"](text) is None


@pytest.mark.parametrize("name", ["first_number", "last_number", "answer_anchor", "boxed"])
def test_numeric_methods_fail_on_text_without_numbers(name):
    assert EXTRACTORS[name]("I do not know") is None


def test_boxed_unbalanced_or_empty_is_a_failure():
    assert EXTRACTORS["boxed"]("\\boxed{3") is None
    assert EXTRACTORS["boxed"]("\\boxed{ }") is None


def test_scoring_compares_values_and_counts_none_as_wrong():
    assert score("7.0", "7") and score("1,234", "1234") and score("paris", "Paris")
    assert not score(None, "7")
    assert not score("8", "7")
    assert normalize_answer(" -0 ") == "0"


def test_editors_are_offered_every_built_in_extractor_and_transform():
    """The schema lists the built-ins (compile checks names against them and the spec's plugins)."""
    props = TargetTask.model_json_schema()["properties"]
    assert props["extract"]["examples"] == list(EXTRACTORS)
    assert props["answer_transform"]["examples"] == list(ANSWER_TRANSFORMS)


@pytest.mark.parametrize("name, answer, expected", [
    ("gsm8k_hash", "Natalia sold 48/2 = 24 clips in May.\nAltogether she sold 48+24 = 72 clips.\n#### 72", "72"),
    ("gsm8k_hash", "#### 1,234 ", "1,234"),
    ("gsm8k_hash", "42", "42"),  # already an answer
    ("boxed", "So $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("boxed", "first \\boxed{1}, then \\boxed{2}", "2"),
    ("boxed", " 7 ", "7"),  # no box: the answer as it is
])
def test_answer_transforms_prepare_the_reference(name, answer, expected):
    assert ANSWER_TRANSFORMS[name](answer) == expected
    assert prepare(name)(answer) == expected and prepare(None)(answer) == answer


def test_a_transformed_gsm8k_reference_scores_against_the_extracted_number():
    assert score(EXTRACTORS["answer_anchor"]("... so 1234 in all. Answer: 1234"), prepare("gsm8k_hash")("#### 1,234"))


def test_an_unknown_name_is_a_spec_error_with_a_suggestion():
    with pytest.raises(SpecError, match="unknown extractor 'last_numbr'.*did you mean 'last_number'"):
        EXTRACTORS["last_numbr"]
