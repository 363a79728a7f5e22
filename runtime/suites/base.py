"""The `Suite` protocol every eval kind follows, and what a suite is built from (`Setup`).

A suite is one class per eval kind, built from the stage's `Setup` without touching the disk. The eval
and baseline stages (runtime/evaluate.py) then call, in this order:

    cells()                  # the cell names it produces; [] when the spec does not ask for it
    check()                  # read and check its inputs: everything that can fail does so before a model loads
    inputs(cell)             # the JSON-able inputs of a cell's fingerprint besides the weights
    run(cell, model, tok, checkpoint, weights_fp, reference) -> {"metrics": [...], ...}

The stage owns the rest: the fingerprint (weights + `inputs` + samples kept), the cell files, the
shelf, timings. Imports the spec model and reports/stats.py only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from tunebook.compiler.schema import EvalSpec, MethodSpec
from tunebook.reports.stats import BadNumber, stderr_of


@dataclass(frozen=True)
class Setup:
    """What the suites of one eval or baseline stage are built from: the project, the eval settings,
    the experiment's held-out rows and method (none for a baseline), and where the cells live."""

    root: Path
    ev: EvalSpec
    exp: str  # the stage's label in messages: "eval <exp>" or "baseline <key>"
    out: Path  # <out>/<checkpoint>/<cell>.json; the suites' caches below <out>/_cache/
    validation: list[dict] = field(default_factory=list)
    max_len: int = 512
    method: MethodSpec | None = None

    @property
    def keep(self) -> int:
        """Generated samples a cell keeps for the report."""
        return self.ev.samples_per_task


class Reference(Protocol):
    """The model a checkpoint is compared against, the base (runtime/evaluate.Models)."""

    base_fp: str

    def base_view(self) -> AbstractContextManager: ...


class Suite(Protocol):
    """One eval kind (see the module docstring for when each method is called)."""

    name: ClassVar[str]  # the registry key (runtime/suites/__init__.py)
    on_base: ClassVar[bool]  # False: the base model gets no cell (a judge of base vs base says nothing)
    per_experiment: ClassVar[bool]  # the base's cell depends on the experiment (held-out rows), so the
    # eval stage computes it beside the shared baseline stage's cells
    against_base: ClassVar[bool]  # the result depends on the base model's answers too: its weights go
    # into the fingerprint (the judge's reference)

    def __init__(self, setup: Setup) -> None: ...

    def cells(self) -> list[str]: ...

    def check(self) -> None: ...

    def inputs(self, cell: str) -> dict: ...

    def run(self, cell: str, model: Any, tok: Any, checkpoint: str, weights_fp: str, reference: Reference) -> dict: ...


def stderr(scores: Sequence[float]) -> float | None:
    """Standard error of the mean of per-item scores (reports/stats.py's), None below two items. A
    diverged model's non-finite score gives NaN, recorded as such (the report refuses it by name),
    not a crash of the sweep."""
    if len(scores) < 2:
        return None
    try:
        return stderr_of(scores)
    except BadNumber:
        return math.nan
