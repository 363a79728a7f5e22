"""Specs and writers the compiler tests share (test modules never import each other)."""

from __future__ import annotations

from pathlib import Path

from tunebook.compiler import compile_specs, load_specs

MINIMAL = """\
name: exp
model: {base: builtin:tiny}
data:
  train:
    - source: data/train.jsonl
"""

EVAL = """\
eval:
  general: {tasks: [tiny_facts_color], include_path: data/tiny/tasks}
  target: [{name: sub, source: data/tiny/subtraction_test.jsonl}]
"""


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def pipeline(tmp_path: Path, *texts: str):
    paths = [write(tmp_path, f"s{i}.yaml", t) for i, t in enumerate(texts)]
    return compile_specs(load_specs(paths, tmp_path))
