"""What one stage hands another: a typed model per file, checked where it is written and where it is read.

| contract | file | written by | read by |
| --- | --- | --- | --- |
| `DataManifest` | `data/<exp>/manifest.json` | data | train (sha256), report |
| `TrainSummary` | `runs/<exp>/train/summary.json` | train | eval (checkpoints, final), report |
| `History` | `runs/<exp>/train/history.json` | train | report |
| `EvalCell` | `runs/<exp>/eval/<checkpoint>/<cell>.json`, `runs/_baselines/<key>/base/<cell>.json` | eval, baseline | eval (the cache), report |
| `EvalSummary` | `runs/<exp>/eval/summary.json` | eval | report |
| `BaselineSummary` | `runs/_baselines/<key>/summary.json` | baseline | report |
| `DataTimings`, `EvalTimings` | `runs/<exp>/timings/{data,eval}.json`, `runs/_baselines/<key>.timings.json` | data, eval, baseline | report |

A writer calls `Contract.write(path, data)`: the data as it will be on disk (a JSON round trip) is
validated, then written unchanged with `tunebook.files.write_json_atomic`, so a renamed or missing key
fails the stage that caused it and the file's bytes stay what they were (DVC hashes them). A reader
calls `Contract.read(path)`: the model, None when the file is missing, or a `ContractError` naming the
file and each field. Fields another stage needs are required where every writer writes them (a
required field may still be null); the rest are typed and optional, so files written before a field
existed still read. Models forbid unknown keys unless a comment says why a file carries more.

The metrics and samples of a cell are the record's own `Metric` and `Sample` (reports/record.py): they
go into the record unchanged, so they are checked by one definition. No torch here; imports tunebook.files
and reports.record only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from tunebook.files import json_text, read_json, write_json_atomic
from tunebook.reports.record import Metric, Sample, StepLog, WatchdogEvent


class ContractError(Exception):
    """A file one stage hands another does not hold what its contract says. The message names the
    file, each field and the stage that writes it."""


class FileContract:
    """`write` and `read` for a pydantic model that describes one file."""

    WRITER: ClassVar[str] = "?"  # the stage that writes the file, named in errors

    @classmethod
    def write(cls, path: Path, data: Any) -> Path:
        """Validate `data` as it will be on disk, then write it unchanged (atomically)."""
        cls.validated(json.loads(json_text(data)), path, writing=True)
        return write_json_atomic(path, data)

    @classmethod
    def read(cls, path: Path) -> Self | None:
        """The file as its model; None when it does not exist; ContractError when it is not valid."""
        path = Path(path)
        if not path.exists():
            return None
        raw = read_json(path, _UNREADABLE)
        if raw is _UNREADABLE:
            raise ContractError(f"{path}: not valid JSON; the {cls.WRITER} stage writes it whole (atomically), so it was "
                                f"changed afterwards: rerun the {cls.WRITER} stage")
        return cls.validated(raw, path)

    @classmethod
    def validated(cls, raw: Any, path: Path | str, writing: bool = False) -> Self:
        try:
            return cls.model_validate(raw)  # type: ignore[attr-defined]
        except ValidationError as e:
            what = (f"the {cls.WRITER} stage was about to write a file its readers would refuse" if writing else
                    f"not what the {cls.WRITER} stage writes")
            lines = [f"{path}: {what} ({cls.__name__} in runtime/contracts.py, {e.error_count()} problem(s)):"]
            for err in e.errors():
                loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
                lines.append(f"  {loc}: {err['msg']}")
            if not writing:
                lines.append(f"  written by another tunebook version, or edited? rerun the {cls.WRITER} stage")
            raise ContractError("\n".join(lines)) from None


_UNREADABLE = object()


class Contract(FileContract, BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------------
# data/<exp>/manifest.json (runtime/data.py, runtime/sources.py)


class ContaminationCheck(_Part):
    """Evaluation prompts found in the training data (runtime/shaping.py Contamination.check)."""

    source: str
    n: int
    exact: int
    normalized: int
    examples: list[str] = Field(default_factory=list)
    same_file: bool | None = Field(None, description="validation vs target: the two sets are one file")


class SourceEntry(_Part):
    """One source as read: where it came from, its hashes, and its rows at each step."""

    source: str
    type: Literal["hub", "folder", "file"] | None = None
    config: str | None = None
    split: str | None = None
    revision: str | None = None
    resolved_revision: str | None = None
    pin: str | None = None
    sha256: str | None = None
    sha256_of: Literal["rows", "file"] | None = None
    bytes: int | None = None
    dvc: dict[str, Any] | None = Field(None, description="its .dvc file or dvc.lock entry: file, path, md5, stage, matches")
    set: Literal["train", "validation"] | None = None
    format: str | None = None
    rows_in_source: int | None = None
    rows_read: int | None = None
    rows_valid: int | None = None
    rejected: int = 0
    rejections: dict[str, int] | None = None
    converted: int | None = None
    type_census: dict[str, dict[str, int]] | None = None
    planned_weight: float | None = None
    actual_weight: float | None = None
    rows_mixed: int | None = None
    rows_heldout: int | None = None
    rows_used: int | None = None


class HeldOutSplit(_Part):
    validation_split: float


class DataManifest(Contract):
    WRITER: ClassVar[str] = "data"

    sources: list[SourceEntry]
    planned_sample_ratio: float
    actual_sample_ratio: float
    limited: bool
    planned_train_rows: int
    train_rows: int
    validation_rows: int
    rejected_rows: int
    converted_rows: int
    type_census: dict[str, dict[str, int]]
    contamination: dict[str, ContaminationCheck]
    sha256: str
    files: dict[str, str] = Field(default_factory=dict)
    format: str | None = None
    policy: dict[str, Any] | None = None
    seed: int | None = None
    validation: SourceEntry | HeldOutSplit | None = None
    mixed_rows: int | None = None
    heldout_rows: int | None = None
    limit: int | None = None
    stratify: dict[str, Any] | None = None
    seconds: float | None = Field(None, description="older manifests: the stage's duration (now in timings/data.json)")


# ---------------------------------------------------------------------------------------------------
# runs/<exp>/train/summary.json and history.json (runtime/train.py)


class TrainCheckpoint(_Part):
    name: str
    step: int


class BestCheckpoint(TrainCheckpoint):
    score: float | None = None
    measured: str | None = None


class TrainTimings(_Part):
    training: float
    evaluation: float | None = None
    model_io: float | None = None
    total: float | None = None


class Precision(_Part):
    """How the run really trained, read off the trainer (runtime/trainer_args.actual_precision)."""

    device: str
    weights_dtype: str
    trainable_dtype: str | None = None
    autocast: str
    gradient_checkpointing: bool


class TrainingArgs(BaseModel):
    """The effective TrainingArguments, read off the trainer. transformers names these; a train stage
    may record more of them than the record reads, hence extra keys are kept."""

    model_config = ConfigDict(extra="allow")

    learning_rate: float
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    num_train_epochs: float
    max_steps: int = Field(description="-1: no cap, the epochs decide")
    lr_scheduler_type: str = Field(pattern=r"^[a-z_]+$", description="transformers' name ('linear'), not str() of its enum")
    warmup_steps: float = Field(description="transformers 5: below 1 a ratio of the total steps, else steps")
    weight_decay: float
    max_grad_norm: float
    seed: int
    bf16: bool | None = None
    fp16: bool | None = None
    gradient_checkpointing: bool | None = None
    activation_checkpointing: bool | None = Field(None, description="transformers >= 5.2x's name for it")


class ModelLoaded(_Part):
    """The model as the train stage loaded it: the commit a hub revision resolved to, the weights' hash."""

    base: str
    revision: str | None = None
    commit: str | None = None
    weights_sha256: str | None = None


class Threads(_Part):
    torch: int
    env: dict[str, str | None] = Field(default_factory=dict, description="thread settings by name; null: not set")


class LossTokens(_Part):
    trained: int
    total: int


class Segment(BaseModel):
    # runtime/train.Segments writes "from", a Python keyword
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: int = Field(alias="from")
    to: int
    seconds: float


class ShelvedRun(_Part):
    path: str
    dry_run: bool | None = None
    actual_steps: int | None = None
    complete: bool


class TrainSummary(Contract):
    WRITER: ClassVar[str] = "train"

    method: str
    planned_steps: int
    actual_steps: int
    max_steps: int | None
    epochs_run: float
    dry_run: bool
    stopped_early: str | None
    checkpoints: list[TrainCheckpoint]
    final: TrainCheckpoint | None
    watchdog: list[WatchdogEvent]
    evaluated_during_training: bool
    timings: TrainTimings
    trainable_params: int
    world_size: int
    effective_batch: int
    precision: Precision
    loss_tokens: LossTokens | None
    epoch_steps: int | None = None
    resumed_from: str | None = None
    outputs: str | None = None
    train_loss: float | None = None
    discarded_checkpoints: list[str] = Field(default_factory=list)
    shelf: list[ShelvedRun] = Field(default_factory=list)
    segments: list[Segment] = Field(default_factory=list)
    best_checkpoint: BestCheckpoint | None = None
    teacher: dict[str, Any] | None = Field(None, description="teacher-sft: runs/<exp>/teacher/manifest.json as it was")
    # provenance, recorded where it happens (older summaries lack it)
    training_args: TrainingArgs | None = None
    model: ModelLoaded | None = None
    threads: Threads | None = None


class History(FileContract, RootModel[list[StepLog]]):
    """Every logged step: {step, values: {name: number}}, rewritten at each log."""

    WRITER: ClassVar[str] = "train"


# ---------------------------------------------------------------------------------------------------
# eval and baseline stages (runtime/evaluate.py, runtime/suites/)


class EvalCell(Contract):
    """One (checkpoint, suite) result. Each suite adds what describes it (lm_eval's versions and
    warnings, the judges' identities), hence extra keys are kept."""

    model_config = ConfigDict(extra="allow")
    WRITER: ClassVar[str] = "eval"

    fingerprint: str
    checkpoint: str
    cell: str
    metrics: list[Metric]
    samples: list[Sample] = Field(default_factory=list)


class EvalTimings(Contract):
    WRITER: ClassVar[str] = "eval"

    evaluation: float
    model_io: float
    cells: dict[str, float] = Field(default_factory=dict, description="seconds per '<checkpoint>/<cell>' computed")


class EvalCheckpoint(_Part):
    name: str
    step: int
    is_final: bool = False
    weights_sha256: str


class EvalSummary(Contract):
    WRITER: ClassVar[str] = "eval"

    checkpoints: list[EvalCheckpoint]
    torch_threads: int | None = None
    device: str | None = None
    timings: EvalTimings | None = Field(None, description="older summaries: durations (now in timings/eval.json)")


class BaselineSummary(Contract):
    WRITER: ClassVar[str] = "baseline"

    weights: str = Field(description="the base model's fingerprint (runtime/models.model_fingerprint)")
    model: dict[str, Any] | None = Field(None, description="the baseline's model params")
    timings: EvalTimings | None = Field(None, description="older summaries: durations (now in <key>.timings.json)")


class DataTimings(Contract):
    WRITER: ClassVar[str] = "data"

    data: float


def baseline_timings(root: Path, key: str) -> Path:
    """Where the baseline stage's durations go: beside its DVC output, not in it."""
    return Path(root) / "runs" / "_baselines" / f"{key}.timings.json"
