"""Reward functions by name (a small registry; specs choose with `grpo.rewards:` or `teacher.reward:`).

    method:
      kind: grpo
      grpo: {rewards: [numeric_match, format], extract: first_number}

A reward reads one completion and the row's reference answer and returns a float; 1.0 means right.
The spec's `extract` names the answer extractor (runtime/extract.py) that answer-checking rewards
use, so training rewards and evaluation score answers the same way. Pure Python, no torch.

Adding one: decorate `fn(completion, answer, extract) -> float` with `@reward("name")`.
"""

from __future__ import annotations

import re
from typing import Callable

from tunebook.compiler.errors import SpecError, SpecIssue, did_you_mean
from tunebook.runtime.extract import EXTRACTORS, mcq_word_boundary, score

Extractor = Callable[[str], "str | None"]
RewardFn = Callable[[str, str, Extractor], float]
REWARDS: dict[str, RewardFn] = {}


def reward(name: str):
    def deco(fn: RewardFn) -> RewardFn:
        REWARDS[name] = fn
        return fn

    return deco


@reward("numeric_match")
def numeric_match(completion: str, answer: str, extract: Extractor) -> float:
    """1 if the extracted number equals the answer ("7.0" equals "7"), else 0."""
    return 1.0 if score(extract(completion), answer) else 0.0


@reward("mcq_letter")
def mcq_letter(completion: str, answer: str, extract: Extractor) -> float:
    """1 if the standalone option letter (word boundaries: never the 'A' of 'A car') is the answer."""
    got = mcq_word_boundary(completion)
    return 1.0 if got is not None and got == answer.strip().upper() else 0.0


@reward("format")
def format_reward(completion: str, answer: str, extract: Extractor) -> float:
    """1 if an answer can be read from the completion at all, right or wrong: it teaches the shape."""
    return 1.0 if completion.strip() and extract(completion) is not None else 0.0


def check_names(names: list[str], key: str) -> None:
    """Unknown names are spec errors, raised before any model is loaded."""
    issues = [SpecIssue("params.yaml", key, f"unknown reward '{n}'; available: {', '.join(sorted(REWARDS))}",
                        hint=did_you_mean(n, REWARDS)) for n in names if n not in REWARDS]
    if issues:
        raise SpecError(issues)


def completion_text(completion) -> str:
    """trl passes plain strings for plain prompts and message lists for chat prompts."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def for_trl(name: str, extract_name: str, on_completions: Callable[[list[str]], None] | None = None):
    """The named reward as trl's GRPOTrainer calls it: a batch of completions plus dataset columns.

    `on_completions` sees every sampled batch (the watchdog checks it for collapse into repetition).
    """
    fn, extract = REWARDS[name], EXTRACTORS[extract_name]

    def reward_func(prompts, completions, answer, **_) -> list[float]:
        texts = [completion_text(c) for c in completions]
        if on_completions is not None:
            on_completions(texts)
        return [fn(t, str(a), extract) for t, a in zip(texts, answer)]

    reward_func.__name__ = name  # trl logs rewards/<name>/mean under this name
    return reward_func


_WS = re.compile(r"\s+")


def normalize_completion(text: str) -> str:
    """For de-duplicating teacher samples: case and whitespace do not make a new solution."""
    return _WS.sub(" ", text.strip().lower())
