"""Answer extraction methods, by name (a small registry; specs choose with `extract:`).

Each returns the extracted answer as a string, or None when nothing could be extracted — a failure
the report counts beside accuracy (seed 003 lost points to "X" extractions it never counted).
Pure Python, no torch.
"""

from __future__ import annotations

import re
from typing import Callable

EXTRACTORS: dict[str, Callable[[str], str | None]] = {}
_NUM = r"-?\d[\d,]*(?:\.\d+)?"


def extractor(name: str):
    def deco(fn):
        EXTRACTORS[name] = fn
        return fn

    return deco


def _clean_number(s: str) -> str:
    s = s.replace(",", "")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s if s not in ("", "-") else s


@extractor("first_number")
def first_number(text: str) -> str | None:
    m = re.search(_NUM, text)
    return _clean_number(m.group()) if m else None


@extractor("last_number")
def last_number(text: str) -> str | None:
    found = re.findall(_NUM, text)
    return _clean_number(found[-1]) if found else None


@extractor("answer_anchor")
def answer_anchor(text: str) -> str | None:
    """The number after the last 'Answer:' (or '####'); falls back to the last number."""
    anchors = list(re.finditer(r"(?:answer\s*(?:is)?\s*[:=]?|####)\s*\$?\s*(" + _NUM + ")", text, re.IGNORECASE))
    if anchors:
        return _clean_number(anchors[-1].group(1))
    return last_number(text)


@extractor("boxed")
def boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth, out = start + len("\\boxed{"), 1, []
    while i < len(text):
        c = text[i]
        depth += c == "{"
        depth -= c == "}"
        if depth == 0:
            return "".join(out).strip()
        out.append(c)
        i += 1
    return None


@extractor("mcq_word_boundary")
def mcq_word_boundary(text: str) -> str | None:
    """A standalone option letter A-E ('C.' or '(C)' or 'answer: C'), never the 'A' of 'A car'."""
    m = re.search(r"answer\s*(?:is)?\s*[:=]?\s*\(?([A-E])\)?(?![A-Za-z])", text, re.IGNORECASE)
    if m:
        return m.group(1).upper()
    m = re.search(r"(?<![A-Za-z])\(?([A-E])\)?(?=[.):]|\s*$)", text)
    return m.group(1) if m else None


@extractor("mcq_first_letter")
def mcq_first_letter(text: str) -> str | None:
    """The legacy method: first capital A-E anywhere (kept to reproduce old numbers)."""
    m = re.search(r"[A-E]", text)
    return m.group() if m else None


@extractor("exact")
def exact(text: str) -> str | None:
    t = text.strip().splitlines()[0].strip() if text.strip() else ""
    return t or None


def normalize_answer(ans: str) -> str:
    s = ans.strip()
    return _clean_number(s) if re.fullmatch(_NUM, s) else s.lower()


def score(extracted: str | None, reference: str) -> bool:
    return extracted is not None and normalize_answer(extracted) == normalize_answer(str(reference))
