"""The suite registry (runtime/suites/): one suite per name, and every cell name the compiler reserves
for a suite is one a suite produces."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunebook.compiler.schema import RESERVED_CELLS, EvalSpec
from tunebook.runtime.registry import Registry
from tunebook.runtime.suites import SUITES
from tunebook.runtime.suites.base import Setup
from tunebook.runtime.suites.judge import JudgeSuite
from tunebook.runtime.suites.reward import RewardSuite


def test_registry_refuses_a_second_suite_of_one_name():
    class Other(RewardSuite):
        name = "judge"

    with pytest.raises(ValueError, match="eval suite 'judge' is defined twice"):
        Registry.of("eval suite", [JudgeSuite, Other], lambda s: s.name)
    assert list(Registry.of("eval suite", [RewardSuite, JudgeSuite], lambda s: s.name)) == ["reward", "judge"]


def test_the_reserved_cell_names_are_the_suites_cells():
    ev = EvalSpec(general={"tasks": ["x"]}, reward={"model": "rm", "prompts": "p.jsonl"},
                  judge={"prompts": "p.jsonl", "judges": [{"name": "j", "model": "builtin:tiny"}]},
                  target=[{"name": "sums", "source": "s.jsonl"}])
    shapes = [[{"prompt": "p", "completion": "c"}], [{"prompt": "p", "chosen": "a", "rejected": "b"}], [{"prompt": "p", "answer": "1"}]]
    cells = {c for rows in shapes for cls in SUITES.values() for c in cls(Setup(Path("."), ev, "t", Path("out"), rows)).cells()}
    assert cells - {"sums"} == set(RESERVED_CELLS)
