"""The run record: the one contract between `runtime` (which writes it) and `reports` (which reads it).

`runs/<exp>/record.json` is a versioned JSON document validated by these pydantic models. A record
written by hand for an old experiment (just numbers, no per-sample scores) is valid too: everything
beyond `experiment` and `metrics` is optional, and a missing piece renders as a status, not a crash.
`tunebook schema --record` exports the JSON Schema; docs/record.md explains each field.

Invariants the reports rely on:
- every metric carries its direction (`higher_is_better`), `n` and `stderr` when known;
- the baseline is the checkpoint named "base"; the final checkpoint is flagged `is_final`;
- `samples` (per-item scores, 0/1 or real) line up by index between checkpoints of one task, which is
  what makes paired statistics possible.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = "1"


def _finite(v: float | None) -> float | None:
    if v is not None and not math.isfinite(v):
        raise ValueError(f"not a finite number ({v})")
    return v


def _stderr(v: float | None) -> float | None:
    if v is not None and not (math.isfinite(v) and v >= 0):
        raise ValueError(f"a standard error is a finite number >= 0 (got {v})")
    return v


def _count(v: int | None) -> int | None:
    if v is not None and v < 1:
        raise ValueError(f"n counts the items measured: at least 1 (got {v})")
    return v


# Numbers every measured value, change and error must be: one check each, whichever model holds them.
Finite = Annotated[float, AfterValidator(_finite)]
StdErr = Annotated[float | None, AfterValidator(_stderr)]
Count = Annotated[int | None, AfterValidator(_count)]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Metric(_M):
    """One number measured on one checkpoint."""

    suite: str = Field(description="'general' (forgetting suite), 'target', 'loss', 'judge', ...")
    task: str = Field(description="benchmark or task name, e.g. 'arc_easy' or 'subtraction'")
    metric: str = Field(description="e.g. 'acc', 'acc_norm', 'accuracy', 'loss', 'win_rate'")
    checkpoint: str = Field(description="'base' for the baseline, else a checkpoint name like 'checkpoint-100'")
    step: int | None = None
    value: Finite
    stderr: StdErr = None
    n: Count = None
    higher_is_better: bool = True
    samples: list[float] | None = Field(default=None, description="per-item scores, aligned across checkpoints")
    sample_ids: list[str] | None = Field(default=None, description="an id per sample: pairs items by id when "
                                         "a checkpoint lost or gained some")
    reference_value: Finite | None = Field(default=None, description="a value the run is measured against: a "
                                          "paper's claim, the previous best run")
    reference_source: str | None = Field(default=None, description="where reference_value comes from")
    extra: dict[str, Any] = Field(default_factory=dict, description="e.g. extraction_failures, ci_low/ci_high")

    @field_validator("samples")
    @classmethod
    def _samples(cls, v: list[float] | None) -> list[float] | None:
        if v and not math.isfinite(sum(v)):  # a NaN or inf anywhere makes the sum non-finite (fast path)
            for i, x in enumerate(v):
                if not math.isfinite(x):
                    raise ValueError(f"item {i} is not a finite number ({x})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Metric:
        if self.samples is not None and self.n is None:
            self.n = len(self.samples)  # n comes from the items when they are there
        if self.sample_ids is not None:
            if self.samples is None or len(self.sample_ids) != len(self.samples):
                raise ValueError("sample_ids: one id per sample is needed")
            if len(set(self.sample_ids)) != len(self.sample_ids):
                raise ValueError("sample_ids: ids must be unique")
        if self.extra.get("reference") == "base" and not 0 <= self.value <= 1:
            raise ValueError(f"value: a win rate against the base is a proportion in [0, 1] (got {self.value:g}; "
                             f"a percentage? write {self.value / 100:g})")
        return self


class ChangeMember(_M):
    task: str
    delta: Finite


class Change(_M):
    """A result known only as a change against the base (an old log's "-2.1 points on ARC"), or an
    aggregate over several benchmarks, with its worst member when the log named one."""

    suite: str = "general"
    task: str = Field(description="the benchmark, or a name for the aggregate ('general average')")
    metric: str
    checkpoint: str = "final"
    delta: Finite = Field(description="final - base in the metric's units (or a share of the base when relative)")
    stderr: StdErr = None
    n: Count = None
    higher_is_better: bool = True
    relative: bool = Field(False, description="delta is a share of the baseline: -0.05 is 5 % worse")
    proportion: bool = Field(False, description="the metric is a 0–1 proportion, so absolute thresholds apply")
    members: list[str] = Field(default_factory=list, description="the benchmarks an aggregate averages")
    worst: ChangeMember | None = None


class Checkpoint(_M):
    name: str
    step: int
    is_final: bool = False
    path: str | None = None
    sha256: str | None = None


class SourceManifest(_M):
    source: str
    revision: str | None = None
    resolved_revision: str | None = None
    sha256: str | None = None
    split: str | None = None
    rows_read: int | None = None
    rows_used: int | None = None
    planned_weight: float | None = None
    actual_weight: float | None = None
    rejected: int = 0
    pin: str | None = Field(None, description="hub sources: 'pinned in spec' (a commit) or 'not pinned in spec'")
    dvc: dict[str, Any] | None = Field(None, description="a DVC-tracked local file: its .dvc file, md5 and whether the file matches it")


class DataManifest(_M):
    sources: list[SourceManifest] = Field(default_factory=list)
    planned_sample_ratio: float | None = None
    actual_sample_ratio: float | None = None
    train_rows: int | None = None
    validation_rows: int | None = None
    rejected_rows: int = 0
    converted_rows: int = Field(0, description="rows kept after a value was converted to the expected type (standardize)")
    quarantine: str | None = None
    type_census: dict[str, dict[str, int]] = Field(default_factory=dict)
    contamination: dict[str, Any] = Field(default_factory=dict)
    sha256: str | None = None


class StepLog(_M):
    step: int
    values: dict[str, float]


class WatchdogEvent(_M):
    step: int
    rule: str
    message: str
    evidence: dict[str, Any] = Field(default_factory=dict)


class Training(_M):
    method: str | None = None
    planned_steps: int | None = None
    actual_steps: int | None = None
    max_steps: int | None = None
    dry_run: bool = False
    stopped_early: str | None = None
    history: list[StepLog] = Field(default_factory=list)
    watchdog: list[WatchdogEvent] = Field(default_factory=list)
    evaluated_during_training: bool | None = Field(None, description="None: not recorded (unknown, not false)")


class Sample(_M):
    task: str
    checkpoint: str
    prompt: str | None = Field(None, description="may be absent for an old log that kept only the outputs")
    output: str
    target: str | None = None
    extracted: str | None = None
    correct: bool | None = None


class Record(_M):
    schema_version: str = SCHEMA_VERSION
    experiment: str
    title: str | None = None
    status: Literal["completed", "dry_run", "failed", "running", "imported"] = "completed"
    started: str | None = None
    finished: str | None = None
    spec_file: str | None = None
    spec_sha256: str | None = None
    model: dict[str, Any] = Field(default_factory=dict, description="base, revision, resolved_revision, params")
    planned: dict[str, Any] = Field(default_factory=dict, description="flattened params from the spec")
    actual: dict[str, Any] = Field(default_factory=dict, description="flattened params as they ran")
    expect: dict[str, Any] = Field(default_factory=dict)
    data: DataManifest | None = None
    training: Training | None = None
    checkpoints: list[Checkpoint] = Field(default_factory=list)
    metrics: list[Metric] = Field(default_factory=list)
    changes: list[Change] = Field(default_factory=list, description="results known only as a change against the base")
    samples: list[Sample] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict, description="seconds: data, training, evaluation, model_io")
    environment: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)

    @field_validator("expect")
    @classmethod
    def _thresholds(cls, v: dict[str, Any]) -> dict[str, Any]:
        from tunebook.reports.status import check_expect  # status reads nothing from here: no cycle at run time

        check_expect(v)
        return v

    @model_validator(mode="after")
    def _no_silent_merge(self) -> Record:
        seen: dict[tuple, int] = {}
        for i, m in enumerate(self.metrics):
            key = (m.suite, m.task, m.metric, m.checkpoint, m.n)
            if key in seen:
                raise ValueError(
                    f"metrics.{i}: {m.suite}/{m.task}/{m.metric} at {m.checkpoint} is also metrics.{seen[key]}, with the "
                    f"same n ({m.n}); give each its n (a subset and its full set are kept apart by n) or keep one")
            seen[key] = i
        return self


class RecordError(Exception):
    """A record file that cannot be read; the message names the file and the fields. Raised by
    reports/intake.py, which reads every record (`load_record`)."""


def dump_record(record: Record) -> str:
    """Deterministic JSON: same record, same bytes."""
    return json.dumps(record.model_dump(mode="json", exclude_none=True), indent=1, sort_keys=True, ensure_ascii=False) + "\n"
