"""The record reads provenance from what the stages recorded (runtime/record.py through runtime/contracts.py):
the trainer's effective learning rate reaches the planned-vs-actual table and the config-drift rule (the
seed 000 bug class: a setting silently overridden), the device and threads are the train stage's (not the
machine rendering the report), and the model's commit is the one the train stage loaded (no hub call).
"""

from __future__ import annotations

import json

import pytest

from tests.unit.runtime.train_helpers import project, spec_text
from tunebook.reports.compute import compute, param_rows
from tunebook.reports.record import dump_record
from tunebook.reports.render import write_report
from tunebook.reports.rules import run_rule
from tunebook.runtime import models
from tunebook.runtime.contracts import ContractError
from tunebook.runtime.record import build_record

COMMIT = "c" * 40
WEIGHTS = "ab" * 32


def summary(**over) -> dict:
    """train/summary.json as the train stage writes it, for a 4-step run on a GPU with 3 threads."""
    s = {"method": "sft", "planned_steps": 4, "actual_steps": 4, "max_steps": None, "epoch_steps": 4, "epochs_run": 1.0,
         "dry_run": False, "resumed_from": None, "outputs": "new", "checkpoints": [{"name": "checkpoint-4", "step": 4}],
         "final": {"name": "final", "step": 4}, "train_loss": 0.5, "stopped_early": None, "watchdog": [],
         "discarded_checkpoints": [], "evaluated_during_training": False,
         "timings": {"training": 2.5, "evaluation": 0.0, "model_io": 0.5, "total": 3.0}, "trainable_params": 1000,
         "world_size": 1, "effective_batch": 8,
         "precision": {"device": "cuda", "weights_dtype": "float32", "trainable_dtype": "float32", "autocast": "no",
                       "gradient_checkpointing": False},
         "loss_tokens": {"trained": 10, "total": 40}, "shelf": [], "segments": [{"from": 0, "to": 4, "seconds": 2.5}],
         "training_args": {"learning_rate": 1e-4, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
                           "num_train_epochs": 1.0, "max_steps": -1, "lr_scheduler_type": "linear", "warmup_steps": 0.0,
                           "weight_decay": 0.0, "max_grad_norm": 1.0, "seed": 0, "bf16": False, "fp16": False,
                           "gradient_checkpointing": False},
         "model": {"base": "builtin:tiny", "revision": None, "commit": COMMIT, "weights_sha256": WEIGHTS},
         "threads": {"torch": 3, "env": {"TUNEBOOK_CPU_THREADS": "3", "OMP_NUM_THREADS": None}}}
    return {**s, **over}


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    """A compiled tiny spec planning lr 1e-4, its data stage run; the report stage must not reach the hub."""
    def hub(*a, **k):
        raise AssertionError("the report stage called the hub")

    monkeypatch.setattr(models, "resolved_revision", hub, raising=False)
    return project(tmp_path, spec_text(method={"lr": 1e-4, "epochs": 1}))


def write_summary(ctx, s: dict) -> None:
    path = ctx.run_dir / "train" / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(s))


def test_an_overridden_learning_rate_shows_as_drift_in_the_log(ctx):
    args = {**summary()["training_args"], "learning_rate": 5e-4}  # the trainer ran with another lr than planned
    write_summary(ctx, summary(training_args=args))
    record = build_record(ctx)
    assert (record.planned["method.lr"], record.actual["method.lr"]) == (1e-4, 5e-4)
    rows = {r.key: r for r in param_rows(record)}
    assert rows["method.lr"].state == "differs"
    # everything else the trainer held is what the spec planned: no false alarms
    for key in ("method.batch_size", "method.grad_accum", "method.epochs", "method.scheduler", "method.warmup_ratio",
                "method.weight_decay", "method.max_grad_norm", "method.seed"):
        assert rows[key].state == "same", (key, rows[key])
    assert "method.max_steps" not in rows  # -1 on the trainer, none in the spec: nothing to compare
    finding = run_rule("config_drift", record, compute(record))
    assert finding is not None and list(finding.evidence) == ["method.lr"]

    record_path = ctx.run_dir / "record.json"
    record_path.write_text(dump_record(record))
    log = write_report(record_path, ctx.root / "logs" / "exp.md").read_text()
    [lr_row] = [line for line in log.splitlines() if line.startswith("| method.lr |")]
    assert "❌" in lr_row, lr_row


def test_device_threads_and_model_come_from_the_train_stage(ctx):
    """The summary says cuda and 3 threads: the record says so on this CPU-only, one-thread machine."""
    write_summary(ctx, summary())
    record = build_record(ctx)
    env = record.environment
    assert (env["device"], env["torch_threads"], env["thread_settings"]) == ("cuda", 3, {"TUNEBOOK_CPU_THREADS": "3"})
    assert (record.model["resolved_revision"], record.model["sha256"]) == (COMMIT, WEIGHTS)
    assert record.actual["precision.device"] == "cuda"


def test_without_a_train_summary_the_device_is_the_eval_stages_or_unknown(ctx):
    """Never guessed on the machine that renders the report."""
    (ctx.run_dir / "eval").mkdir(parents=True)
    (ctx.run_dir / "eval" / "summary.json").write_text(json.dumps({"checkpoints": [], "torch_threads": 2}))
    env = build_record(ctx).environment
    assert (env["device"], env["torch_threads"]) == (None, 2)


def test_an_older_summary_without_provenance_still_builds_a_record(ctx):
    old = {k: v for k, v in summary().items() if k not in ("training_args", "model", "threads")}
    write_summary(ctx, old)
    record = build_record(ctx)
    assert "method.lr" not in record.actual and record.environment["device"] == "cuda"
    assert record.model["resolved_revision"] is None  # not resolved now, through the hub


def test_a_file_that_breaks_its_contract_is_named_with_its_field(ctx):
    args = {k: v for k, v in summary()["training_args"].items() if k != "learning_rate"}
    args["lr"] = 1e-4  # a renamed key
    write_summary(ctx, summary(training_args=args))
    with pytest.raises(ContractError) as e:
        build_record(ctx)
    assert "train/summary.json: not what the train stage writes" in str(e.value)
    assert "training_args.learning_rate: Field required" in str(e.value)
