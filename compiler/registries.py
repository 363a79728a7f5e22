"""The runtime's registries by name (rewards, answer extractors), read from their source files.

An extension point is one file (docs/architecture.md): a reward is a function decorated with
`@reward("name")` in runtime/rewards.py, an extractor one with `@extractor("name")` in
runtime/extract.py. The compiler checks spec names against them without importing the runtime: the
files are parsed, not run, so `tunebook compile` never loads torch or the runtime's dependencies.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path


@functools.cache
def registry(module: str, decorator: str) -> tuple[str, ...]:
    """Names registered in tunebook.runtime.<module> with `@<decorator>("name")`, in file order."""
    spec = importlib.util.find_spec(f"tunebook.runtime.{module}")  # locates the file; runs none of it
    tree = ast.parse(Path(spec.origin).read_text())
    return tuple(d.args[0].value for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for d in node.decorator_list
                 if isinstance(d, ast.Call) and getattr(d.func, "id", None) == decorator
                 and d.args and isinstance(d.args[0], ast.Constant) and isinstance(d.args[0].value, str))


def rewards() -> tuple[str, ...]:
    return registry("rewards", "reward")


def extractors() -> tuple[str, ...]:
    return registry("extract", "extractor")
