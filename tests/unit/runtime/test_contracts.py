"""The contracts of the files stages hand each other (runtime/contracts.py) accept exactly what the stages
write: a real data → train → baseline → eval run on the tiny model, every file validated by its model,
and written back through `Contract.write` to the same bytes. A renamed or missing key is an error naming
the file and the field, at the writer and at the reader.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.runtime.train_helpers import project, spec_text, train
from tunebook.reports.compute import param_rows
from tunebook.runtime import contracts as C
from tunebook.runtime.record import build_record

EVAL = {"target": [{"name": "subtraction", "source": "data/tiny/subtraction_test.jsonl", "max_new_tokens": 4, "limit": 6}],
        "general": None, "samples_per_task": 2}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, one_thread_module):
    """A project after `dvc repro`: data, 4 training steps (checkpoints 2 and 4), the baseline, eval."""
    from tunebook.runtime import evaluate
    from tunebook.runtime.context import read_params

    root = tmp_path_factory.mktemp("pipeline")
    ctx = project(root, spec_text(method={"max_steps": 4, "save_every": 2}, eval=EVAL))
    train(ctx)
    key = ctx.params["baseline"]
    evaluate.run_baseline(root, key, read_params(root))
    evaluate.run(ctx)
    return ctx


@pytest.fixture(scope="module")
def one_thread_module():
    """conftest's one_thread, for the whole module: the pipeline is built once."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _files(ctx) -> list[tuple[type, Path]]:
    run, base = ctx.run_dir, ctx.root / "runs" / "_baselines" / ctx.params["baseline"]
    cells = sorted(p for p in [*run.glob("eval/*/*.json"), *base.glob("*/*.json")] if not p.parent.name.startswith("_"))
    return [(C.DataManifest, ctx.data_dir / "manifest.json"), (C.DataTimings, run / "timings" / "data.json"),
            (C.TrainSummary, run / "train" / "summary.json"), (C.History, run / "train" / "history.json"),
            (C.EvalSummary, run / "eval" / "summary.json"), (C.EvalTimings, run / "timings" / "eval.json"),
            (C.BaselineSummary, base / "summary.json"), (C.EvalTimings, C.baseline_timings(ctx.root, ctx.params["baseline"])),
            *((C.EvalCell, p) for p in cells)]


def test_every_file_a_stage_writes_validates_against_its_contract(pipeline):
    files = _files(pipeline)
    assert {m for m, _ in files} >= {C.DataManifest, C.TrainSummary, C.History, C.EvalCell, C.EvalSummary, C.BaselineSummary}
    cells = [p for m, p in files if m is C.EvalCell]
    assert {p.stem for p in cells} >= {"subtraction", "loss"}, cells  # the target task and the held-out loss
    for model, path in files:
        assert model.read(path) is not None, path


def test_a_writer_writes_the_same_bytes_through_its_contract(pipeline, tmp_path):
    """`Contract.write` validates and writes the data unchanged: DVC hashes these files, and a stage
    that switches to its contract must not change a single output hash."""
    for model, path in _files(pipeline):
        if model is C.DataTimings:
            continue  # written by data.py with json.dumps (not hashed by DVC); json_text lays it out
        copy = tmp_path / path.name
        model.write(copy, json.loads(path.read_text()))
        assert copy.read_bytes() == path.read_bytes(), path


def test_the_train_summary_types_what_the_record_reads(pipeline):
    s = C.TrainSummary.read(pipeline.run_dir / "train" / "summary.json")
    assert (s.method, s.actual_steps, s.max_steps, s.final.name) == ("sft", 4, 4, "final")
    assert s.precision.device == "cpu" and s.timings.training > 0
    assert [c.name for c in C.EvalSummary.read(pipeline.run_dir / "eval" / "summary.json").checkpoints][-1] == "final"


def test_a_missing_key_fails_at_the_writer_naming_file_and_field(pipeline, tmp_path):
    summary = json.loads((pipeline.run_dir / "train" / "summary.json").read_text())
    summary["precision"]["dev"] = summary["precision"].pop("device")  # a rename in one stage
    with pytest.raises(C.ContractError) as e:
        C.TrainSummary.write(tmp_path / "summary.json", summary)
    msg = str(e.value)
    assert "summary.json" in msg and "the train stage was about to write" in msg
    assert "precision.device: Field required" in msg and "precision.dev: Extra inputs are not permitted" in msg
    assert not (tmp_path / "summary.json").exists()  # nothing half-right is left for the next stage


def test_a_renamed_key_fails_at_the_reader_naming_file_and_field(tmp_path):
    cell = {"fingerprint": "f", "checkpoint": "final", "cell": "subtraction",
            "metrics": [{"suite": "target", "task": "subtraction", "metric": "accuracy", "checkpoint": "final", "val": 0.5}]}
    path = tmp_path / "final" / "subtraction.json"
    path.parent.mkdir()
    path.write_text(json.dumps(cell))
    with pytest.raises(C.ContractError) as e:
        C.EvalCell.read(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: not what the eval stage writes (EvalCell")
    assert "metrics.0.value: Field required" in msg and "metrics.0.val: Extra inputs are not permitted" in msg
    assert "rerun the eval stage" in msg


def test_a_missing_file_is_none_and_a_broken_one_an_error(tmp_path):
    assert C.TrainSummary.read(tmp_path / "summary.json") is None
    (tmp_path / "summary.json").write_text('{"method": "sft", ')
    with pytest.raises(C.ContractError, match="summary.json: not valid JSON"):
        C.TrainSummary.read(tmp_path / "summary.json")


def test_provenance_is_optional_and_typed_when_there():
    """Summaries from before the train stage recorded its arguments, model and threads still read; when
    it does, the scheduler must be transformers' name, not str() of its enum."""
    base = {"method": "sft", "planned_steps": 4, "actual_steps": 4, "max_steps": None, "epochs_run": 1.0, "dry_run": False,
            "stopped_early": None, "checkpoints": [], "final": {"name": "final", "step": 4}, "watchdog": [],
            "evaluated_during_training": False, "timings": {"training": 1.0}, "trainable_params": 10, "world_size": 1,
            "effective_batch": 8, "precision": {"device": "cpu", "weights_dtype": "float32", "autocast": "no",
                                                "gradient_checkpointing": False}, "loss_tokens": None}
    assert C.TrainSummary.validated(base, "s").training_args is None
    args = {"learning_rate": 1e-4, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "num_train_epochs": 1.0,
            "max_steps": -1, "lr_scheduler_type": "linear", "warmup_steps": 0.0, "weight_decay": 0.0, "max_grad_norm": 1.0,
            "seed": 0, "bf16": False, "fp16": False, "gradient_checkpointing": False, "optim": "adamw_torch"}
    full = {**base, "training_args": args, "threads": {"torch": 1, "env": {"TUNEBOOK_CPU_THREADS": "1"}},
            "model": {"base": "builtin:tiny", "revision": None, "commit": None, "weights_sha256": "ab" * 32}}
    s = C.TrainSummary.validated(full, "s")
    assert (s.training_args.learning_rate, s.threads.torch, s.model.weights_sha256) == (1e-4, 1, "ab" * 32)
    with pytest.raises(C.ContractError, match="training_args.lr_scheduler_type"):
        C.TrainSummary.validated({**full, "training_args": {**args, "lr_scheduler_type": "SchedulerType.LINEAR"}}, "s")


def test_the_record_of_a_real_run_reads_its_provenance_without_false_drift(pipeline):
    """The trainer's effective arguments, read back through the contract, match a spec that was followed."""
    record = build_record(pipeline)
    assert record.actual["method.lr"] == record.planned["method.lr"] == 5e-3
    assert (record.actual["method.max_steps"], record.environment["device"], record.environment["torch_threads"]) == (4, "cpu", 1)
    assert record.model["sha256"] and len(record.metrics) >= 4
    assert [r.key for r in param_rows(record) if r.state == "differs"] == []
