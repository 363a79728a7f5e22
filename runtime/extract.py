"""Answer extraction methods, by name (a small registry; specs choose with `extract:`).

Each returns the extracted answer as a string, or None when nothing could be extracted — a failure
the report counts beside accuracy (seed 003 lost points to "X" extractions it never counted).
Pure Python, no torch.

| name                | takes                                                         | use for            |
| ------------------- | ------------------------------------------------------------- | ------------------ |
| `first_number`      | the first number in the text                                  | short answers      |
| `last_number`       | the last number                                               | chain of thought   |
| `answer_anchor`     | the number after the last "Answer:"/"answer is"/"####", else the last number | GSM8K, SVAMP |
| `boxed`             | the content of the last `\\boxed{...}`                        | MATH               |
| `mcq_word_boundary` | a standalone option letter A-E                                | MMLU, ARC, AQuA    |
| `mcq_first_letter`  | the first capital A-E anywhere (legacy; reproduces old numbers) | comparisons only |
| `exact`             | the first non-empty line                                      | short strings      |

Answer transforms prepare a row's reference answer before it is compared (`answer_transform:` beside
`extract:`): `fn(answer: str) -> str`.

| name         | makes                                                 | use for |
| ------------ | ----------------------------------------------------- | ------- |
| `gsm8k_hash` | "... so 40 + 2 = 42. #### 42" -> "42": what follows the last "####" | GSM8K |
| `boxed`      | the content of the last `\\boxed{...}`                | MATH    |

A project adds its own of either from a plugin file (docs/plugins.md).
"""

from __future__ import annotations

import re
from typing import Callable

from tunebook.runtime.registry import Registry

EXTRACTORS = Registry("extractor")  # name -> fn(text) -> str | None
ANSWER_TRANSFORMS = Registry("answer transform")  # name -> fn(answer) -> str
extractor = EXTRACTORS.register
answer_transform = ANSWER_TRANSFORMS.register

# A number: thousands groups only in threes ("1,234", not the "1,2,3" of a list), optional decimals.
# The minus sign counts only when it does not follow a word character, so "49-26" is 49 and 26,
# not 49 and -26, while "x = -5" is -5.
_NUM = r"(?:(?<![\w.])-)?\d+(?:,\d{3})*(?:\.\d+)?"


def _clean_number(s: str) -> str:
    """'1,234.50' -> '1234.5', '7.0' -> '7': one spelling per value, so comparison is by value."""
    s = s.replace(",", "")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


@extractor("first_number")
def first_number(text: str) -> str | None:
    m = re.search(_NUM, text)
    return _clean_number(m.group()) if m else None


@extractor("last_number")
def last_number(text: str) -> str | None:
    found = re.findall(_NUM, text)
    return _clean_number(found[-1]) if found else None


_ANCHOR = re.compile(r"(?:\banswer\s*(?:is)?\s*[:=]?|####)\s*\$?\s*(" + _NUM + ")", re.IGNORECASE)


@extractor("answer_anchor")
def answer_anchor(text: str) -> str | None:
    """The number after the last 'Answer:' / 'answer is' / '####'; falls back to the last number.

    The anchor matters for reasoning outputs: "125 * 4 = 500 ... Answer: 623" is 623, where
    first_number would say 125.
    """
    anchors = list(_ANCHOR.finditer(text))
    if anchors:
        return _clean_number(anchors[-1].group(1))
    return last_number(text)


@extractor("boxed")
def boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, braces balanced (so \\boxed{\\frac{1}{2}} works)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth, out = start + len("\\boxed{"), 1, []
    while i < len(text):
        c = text[i]
        depth += c == "{"
        depth -= c == "}"
        if depth == 0:
            return "".join(out).strip() or None
        out.append(c)
        i += 1
    return None  # unbalanced: the model stopped mid-answer


# "answer: C", "the answer is (B)", "correct option is D" — case-insensitive keyword, but the letter
# itself must be a capital: with IGNORECASE on the whole pattern "the answer is a bit unclear" is "A".
_MCQ_ANCHOR = re.compile(r"(?i:\b(?:answer|option|choice))\s*(?i:is)?\s*[:=]?\s*\(?([A-E])\)?(?![A-Za-z])")
# A letter standing alone: "C." / "(C)" / "B) Paris" / a bare "D" at the end; never the "A" of "A car"
# and never the "E" of "E.g.".
_MCQ_ALONE = re.compile(r"(?<![A-Za-z])\(?([A-E])\)?(?=[.):](?:\s|$)|\)|\s*$)")


@extractor("mcq_word_boundary")
def mcq_word_boundary(text: str) -> str | None:
    """A standalone option letter A-E, preferring one after 'answer'/'option'/'choice'."""
    m = _MCQ_ANCHOR.search(text) or _MCQ_ALONE.search(text)
    return m.group(1) if m else None


@extractor("mcq_first_letter")
def mcq_first_letter(text: str) -> str | None:
    """The legacy method: first capital A-E anywhere ("A car ..." is "A"). Kept to reproduce old numbers."""
    m = re.search(r"[A-E]", text)
    return m.group() if m else None


@extractor("exact")
def exact(text: str) -> str | None:
    t = text.strip().splitlines()[0].strip() if text.strip() else ""
    return t or None


@answer_transform("gsm8k_hash")
def gsm8k_hash(answer: str) -> str:
    """GSM8K's reference is the worked solution ending in '#### 42': the answer is what follows the
    last '####'. An answer without one is taken as it is."""
    return answer.rsplit("####", 1)[-1].strip()


@answer_transform("boxed")
def boxed_answer(answer: str) -> str:
    """MATH's reference is a solution with the answer in \\boxed{...}: its content. Without one (or
    unbalanced), the answer is taken as it is."""
    return boxed(answer) or answer.strip()


def prepare(name: str | None) -> Callable[[str], str]:
    """The named answer transform, or the answer unchanged when the spec names none."""
    return ANSWER_TRANSFORMS[name] if name else str


def normalize_answer(ans: str) -> str:
    s = ans.strip()
    return _clean_number(s) if re.fullmatch(_NUM, s) else s.lower()


def score(extracted: str | None, reference: str) -> bool:
    """Right or wrong; an extraction failure (None) is wrong, and counted separately by the caller."""
    return extracted is not None and normalize_answer(extracted) == normalize_answer(str(reference))
