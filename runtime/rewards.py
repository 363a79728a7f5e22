"""Reward functions by name (a small registry; specs choose with `grpo.rewards:` or `teacher.reward:`).

    method:
      kind: grpo
      grpo: {rewards: [numeric_match, format], extract: first_number, answer_transform: gsm8k_hash}

A reward reads one completion and the row's reference answer and returns a float; 1.0 means right.
The spec's `extract` names the answer extractor (runtime/extract.py) that answer-checking rewards
use, so training rewards and evaluation score answers the same way; its `answer_transform`, if any,
prepares the reference answer first. Pure Python, no torch.

Adding one (here, or in a project's plugin file: docs/plugins.md): decorate a function with
`@reward("name")`. The simple signature is `fn(completion, answer, extract) -> float`. A reward that
needs more declares keyword parameters among ARGS and gets exactly those:

    @reward("short_and_right")
    def short_and_right(completion, answer, extract, prompt, logprobs): ...

`logprobs` is the policy's per-token log-probs of the completion where the caller has them, else None.
trl 1.16's GRPOTrainer scores rewards before it computes the policy's log-probs of the batch (and,
generating with transformers, has no sampling log-probs), so under GRPO it is None today; so it is in
the teacher stage and the held-out reward.
"""

from __future__ import annotations

import inspect
import re
from typing import Callable

from tunebook.compiler.errors import SpecError, SpecIssue
from tunebook.runtime.extract import EXTRACTORS, mcq_word_boundary, prepare, score
from tunebook.runtime.registry import Registry, where

Extractor = Callable[[str], "str | None"]
RewardFn = Callable[..., float]
REWARDS = Registry("reward")
reward = REWARDS.register
# what a reward may ask for by naming a parameter after it
ARGS = ("prompt", "completion", "answer", "extract", "logprobs")
_WS = re.compile(r"\s+")


@reward("numeric_match")
def numeric_match(completion: str, answer: str, extract: Extractor) -> float:
    """1 if the extracted number equals the answer ("7.0" equals "7"), else 0."""
    return 1.0 if score(extract(completion), answer) else 0.0


@reward("mcq_letter")
def mcq_letter(completion: str, answer: str, extract: Extractor) -> float:
    """1 if the standalone option letter (word boundaries: never the 'A' of 'A car') is the answer."""
    got = mcq_word_boundary(completion)
    return 1.0 if got is not None and got == answer.strip().upper() else 0.0


@reward("exact_match")
def exact_match(completion: str, answer: str, extract: Extractor) -> float:
    """1 if the extracted answer or the whole completion equals the answer, case and runs of whitespace
    aside ("New  York" is "new york"): for text answers (with `extract: exact`, the first line)."""
    want, got = normalize_completion(answer), extract(completion)
    return 1.0 if want in (normalize_completion(completion), normalize_completion(got or "")) and want else 0.0


@reward("format")
def format_reward(completion: str, answer: str, extract: Extractor) -> float:
    """1 if an answer can be read from the completion at all, right or wrong: it teaches the shape."""
    return 1.0 if completion.strip() and extract(completion) is not None else 0.0


def check_names(names: list[str], key: str) -> None:
    """Unknown names are spec errors, raised before any model is loaded."""
    REWARDS.check(names, key)


def completion_text(completion) -> str:
    """trl passes plain strings for plain prompts and message lists for chat prompts."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def _caller(name: str, fn: RewardFn) -> Callable[..., float]:
    """`call(**ARGS) -> float` that passes `fn` the ARGS it declares: all of them to a `**kwargs`, the
    three of the simple signature by position when it names none of ARGS (`fn(c, a, ex)`)."""
    params = list(inspect.signature(fn).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return fn
    declared = [p.name for p in params if p.name in ARGS]
    if not declared:
        return lambda **kw: fn(kw["completion"], kw["answer"], kw["extract"])
    other = [p.name for p in params if p.name not in ARGS and p.default is p.empty and p.kind is not p.VAR_POSITIONAL]
    if other:
        raise SpecError([SpecIssue(where(fn), "", f"reward '{name}' takes '{other[0]}', which no caller gives",
                                   hint=f"a reward takes (completion, answer, extract) or keyword parameters among {', '.join(ARGS)}")])
    return lambda **kw: fn(**{k: kw[k] for k in declared})


def bind(name: str, extract_name: str, answer_transform: str | None = None) -> Callable[..., float]:
    """`score_one(completion, answer, prompt=None, logprobs=None) -> float`: the named reward with the spec's
    extractor and answer transform. Every caller (GRPO, the teacher, the held-out reward) goes through it."""
    call, extract, prepare_answer = _caller(name, REWARDS[name]), EXTRACTORS[extract_name], prepare(answer_transform)

    def score_one(completion: str, answer, prompt: str | None = None, logprobs=None) -> float:
        return call(prompt=prompt, completion=completion, answer=prepare_answer(str(answer)), extract=extract, logprobs=logprobs)

    return score_one


def for_trl(name: str, extract_name: str, on_completions: Callable[[list[str]], None] | None = None,
            answer_transform: str | None = None):
    """The named reward as trl's GRPOTrainer calls it: a batch of completions plus dataset columns.

    `on_completions` sees every sampled batch (the watchdog checks it for collapse into repetition).
    trl 1.16 passes no log-probs to reward functions (see the module's docstring): `logprobs` is None.
    """
    score_one = bind(name, extract_name, answer_transform)

    def reward_func(prompts, completions, answer, **_) -> list[float]:
        texts = [completion_text(c) for c in completions]
        if on_completions is not None:
            on_completions(texts)
        return [score_one(t, a, prompt=completion_text(p)) for t, a, p in zip(texts, answer, prompts)]

    reward_func.__name__ = name  # trl logs rewards/<name>/mean under this name
    return reward_func


def normalize_completion(text: str) -> str:
    """For de-duplicating teacher samples: case and whitespace do not make a new solution."""
    return _WS.sub(" ", text.strip().lower())
