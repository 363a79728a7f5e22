"""The runtime's registries by name (rewards, answer extractors, answer transforms), read from source files.

An extension point is one decorated function (docs/architecture.md, docs/plugins.md): a reward is
decorated with `@reward("name")` in runtime/rewards.py, an extractor with `@extractor("name")` and an
answer transform with `@answer_transform("name")` in runtime/extract.py, or any of them in a project's
plugin file that the spec lists under `plugins:`. The compiler checks spec names against them without
importing anything: the files are parsed, not run, so `tunebook compile` never loads torch, the
runtime's dependencies or a project's code. A name must be a string literal in the decorator to be seen.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

# kind -> (the runtime module of its built-ins, the decorator that registers one)
KINDS = {"reward": ("rewards", "reward"), "extractor": ("extract", "extractor"),
         "answer transform": ("extract", "answer_transform")}
DECORATORS = {decorator: kind for kind, (_, decorator) in KINDS.items()}


@dataclass(frozen=True)
class Definition:
    kind: str  # a key of KINDS
    name: str
    line: int


def definitions(source: str, filename: str = "<plugin>") -> list[Definition]:
    """Every `@reward("name")`, `@extractor("name")`, `@answer_transform("name")` (also as
    `@tunebook.plugins.reward(...)`) on a function of `source`, in file order. SyntaxError if it does not parse."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for d in node.decorator_list:
            func = d.func if isinstance(d, ast.Call) else None
            kind = DECORATORS.get(getattr(func, "id", None) or getattr(func, "attr", None))
            if kind and d.args and isinstance(d.args[0], ast.Constant) and isinstance(d.args[0].value, str):
                found.append(Definition(kind, d.args[0].value, d.lineno))
    return sorted(found, key=lambda x: x.line)


@functools.cache
def builtin(kind: str) -> tuple[str, ...]:
    """The built-in names of a kind, read from tunebook.runtime.<module>, in file order."""
    module, _ = KINDS[kind]
    spec = importlib.util.find_spec(f"tunebook.runtime.{module}")  # locates the file; runs none of it
    return tuple(d.name for d in definitions(Path(spec.origin).read_text(), spec.origin) if d.kind == kind)


def rewards() -> tuple[str, ...]:
    return builtin("reward")


def extractors() -> tuple[str, ...]:
    return builtin("extractor")


def answer_transforms() -> tuple[str, ...]:
    return builtin("answer transform")


def names_used(spec) -> list[tuple[tuple, str, str]]:
    """(key path, kind, name) of every registry name a spec uses: the one list compile checks."""
    m, out = spec.method, []
    for block in ("grpo", "teacher"):
        b = getattr(m, block)
        if b is None:
            continue
        out += [(("method", "grpo", "rewards", i), "reward", r) for i, r in enumerate(b.rewards)] if block == "grpo" \
            else [(("method", "teacher", "reward"), "reward", b.reward)]
        out.append((("method", block, "extract"), "extractor", b.extract))
        if b.answer_transform:
            out.append((("method", block, "answer_transform"), "answer transform", b.answer_transform))
    for i, t in enumerate(spec.eval.target):
        out.append((("eval", "target", i, "extract"), "extractor", t.extract))
        if t.answer_transform:
            out.append((("eval", "target", i, "answer_transform"), "answer transform", t.answer_transform))
    return out
