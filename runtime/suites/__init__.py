"""Eval suites: one class per eval kind behind one protocol (`Suite`, runtime/suites/base.py), as every
lm-eval task is one `Task`. The eval and baseline stages (runtime/evaluate.py) sweep (checkpoint, cell)
over the suites of this registry and know nothing of any kind.

| suite | module | cells |
| --- | --- | --- |
| target | target.py | one per target task, named after it: generate, extract, score |
| general | general.py | `general`: lm-eval tasks (forgetting) |
| heldout | heldout.py | `loss`, `preference` or `verifiable`, by the validation rows |
| reward | reward.py | `reward`: a reward model's mean score of greedy answers |
| judge | judge.py | `judge`: pairwise judges against the base model's answers |

The registry's order is the order of each checkpoint's cells. Suites import the spec, runtime's shared
rooms (models, generation, cells, sources) and reports/stats.py; never a stage module.
"""

from __future__ import annotations

from tunebook.runtime.registry import Registry
from tunebook.runtime.suites.general import GeneralSuite
from tunebook.runtime.suites.heldout import HeldoutSuite
from tunebook.runtime.suites.judge import JudgeSuite
from tunebook.runtime.suites.reward import RewardSuite
from tunebook.runtime.suites.target import TargetSuite


SUITES = Registry.of("eval suite", [TargetSuite, GeneralSuite, HeldoutSuite, RewardSuite, JudgeSuite], lambda s: s.name)
