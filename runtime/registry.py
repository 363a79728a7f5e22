"""A registry by name: rewards, answer extractors and answer transforms (functions, registered with a
decorator), and training methods and eval suites (`Registry.of`): one duplicate check for all.

    REWARDS = Registry("reward")
    reward = REWARDS.register          # @reward("exact_match") def exact_match(...): ...

A name is defined once. A second definition under a taken name is refused, naming both places, so a
plugin (runtime/plugins.py) can add names but never silently replace a built-in or another plugin's;
importing the same definition again (the same module and function) is not a second definition. An
unknown name is a SpecError listing the known ones with a did-you-mean, not a bare KeyError.

Pure Python; imports only compiler/errors.py.
"""

from __future__ import annotations

import os
from typing import Callable

from tunebook.compiler.errors import SpecError, SpecIssue, did_you_mean


def where(fn: Callable) -> str:
    """'file:line (function)' of a definition, the file relative to the working directory when inside it."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return repr(fn)
    path = code.co_filename
    rel = os.path.relpath(path) if os.path.isabs(path) else path
    return f"{path if rel.startswith('..') else rel}:{code.co_firstlineno} ({fn.__qualname__})"


class Registry(dict):
    """name -> function, for one kind of extension ('reward', 'extractor', 'answer transform')."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str):
        """The decorator: `@<registry>.register("name")` keeps the function under `name`, unchanged."""

        def deco(fn: Callable) -> Callable:
            old = self.get(name)
            if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
                raise ValueError(f"{self.kind} '{name}' is defined twice: at {where(fn)} and at {where(old)}; "
                                 "a name is defined once (a plugin adds names, it cannot replace one): rename one of them")
            self[name] = fn
            return fn

        return deco

    def __missing__(self, name):
        raise SpecError([SpecIssue("params.yaml", "", f"unknown {self.kind} '{name}'; available: {', '.join(sorted(self))}",
                                   hint=did_you_mean(name, self) or "a plugin that defines it is listed under the spec's `plugins:` (docs/plugins.md)")])

    @classmethod
    def of(cls, kind: str, items, name: Callable) -> "Registry":
        """A registry of ready-made things (training methods, eval suites) under `name(item)`, in the
        given order; a name taken twice is refused, naming both."""
        reg = cls(kind)
        for item in items:
            key = name(item)
            if key in reg:
                raise ValueError(f"{kind} '{key}' is defined twice: {_label(reg[key])} and {_label(item)}")
            reg[key] = item
        return reg

    def check(self, names: list[str], key: str) -> None:
        """Unknown names are spec errors at `key` (a params.yaml key path), raised before any model loads."""
        issues = [SpecIssue("params.yaml", key, f"unknown {self.kind} '{n}'; available: {', '.join(sorted(self))}",
                            hint=did_you_mean(n, self)) for n in names if n not in self]
        if issues:
            raise SpecError(issues)


def _label(item) -> str:
    cls = item if isinstance(item, type) else type(item)
    return f"{cls.__module__}.{cls.__qualname__}"
