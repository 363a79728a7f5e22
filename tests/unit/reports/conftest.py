"""Builders for small records, and the two fixture records (tests/fixtures/records)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunebook.reports.compute import Computed, compute
from tunebook.reports.intake import load_record
from tunebook.reports.record import Record
from tunebook.reports.rules import Finding, run_rule

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "records"


def metric(task: str, checkpoint: str, value: float, suite: str = "general", **kw) -> dict:
    return {"suite": suite, "task": task, "metric": kw.pop("metric", "acc"), "checkpoint": checkpoint,
            "value": value, **kw}


def binary(n: int, right: int, flip: int = 0) -> tuple[list[float], list[float]]:
    """Aligned 0/1 scores: `right` of n correct, then `flip` of those turned wrong."""
    old = [1.0] * right + [0.0] * (n - right)
    new = [0.0] * flip + old[flip:]
    return old, new


def make(**fields) -> Record:
    return Record.model_validate({"experiment": "exp", **fields})


def check(name: str, record: Record) -> tuple[Finding | None, Computed]:
    computed = compute(record)
    return run_rule(name, record, computed), computed


@pytest.fixture(scope="session")
def quickstart() -> Record:
    return load_record(FIXTURES / "quickstart_like.json")


@pytest.fixture(scope="session")
def seed000() -> Record:
    return load_record(FIXTURES / "seed000_exp2.json")
