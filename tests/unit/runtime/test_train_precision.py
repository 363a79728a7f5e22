"""Precision, activation checkpointing and the loss mask come from the spec, never from trl's defaults,
and the summary (so the record) says how the run really trained."""

from __future__ import annotations

import json

import pytest

from tests.unit.runtime.train_helpers import project, spec_text, train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cpu_run_is_float32_without_autocast_or_checkpointing_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    s = train(project(tmp_path, spec_text(method={"max_steps": 2})))
    assert s["precision"] == {"device": "cpu", "weights_dtype": "float32", "trainable_dtype": "float32",
                              "autocast": "no", "gradient_checkpointing": False}
    # prompt/completion rows: only the completion (and its eos) carries loss
    assert 0 < s["loss_tokens"]["trained"] < s["loss_tokens"]["total"]


def test_checkpointing_when_the_spec_asks(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    s = train(project(tmp_path, spec_text(method={"max_steps": 2, "gradient_checkpointing": True})))
    assert s["precision"]["gradient_checkpointing"] is True


def test_chat_rows_train_on_the_answers_only(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"{a}-{b}="}, {"role": "assistant", "content": str(a - b)}]}
            for a in range(20, 44) for b in range(0, 4)]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = train(project(tmp_path, spec_text(method={"max_steps": 2}, data={"train": [{"source": "chat.jsonl"}]})))
    # per row: the answer's digits and </s> are trained; the question and its newline are not
    answers = sum(len(str(a - b)) + 1 for a in range(20, 44) for b in range(0, 4))
    assert s["loss_tokens"]["trained"] == answers < s["loss_tokens"]["total"]


def test_trainer_args_take_checkpointing_from_the_spec(tmp_path):
    from trl import SFTConfig

    from tunebook.compiler.schema import MethodSpec
    from tunebook.runtime.trainer_args import trainer_args

    assert SFTConfig(**trainer_args(MethodSpec(gradient_checkpointing=True), tmp_path)).gradient_checkpointing is True
    assert SFTConfig(**trainer_args(MethodSpec(), tmp_path)).gradient_checkpointing is False


def test_a_local_model_folder_is_pinned_by_its_weights_hash(tmp_path):
    """The record carries the baseline's weights hash for a local folder as for a builtin model, so the
    log does not open with 'Inputs are not pinned' (a revision: means nothing for a folder)."""
    import shutil

    from tests.conftest import ROOT
    from tunebook.reports.rules import unpinned_inputs
    from tunebook.runtime.record import build_record

    shutil.copytree(ROOT / "models" / "tiny", tmp_path / "mine")
    ctx = project(tmp_path, spec_text(model={"base": "mine"}), run_data=False)
    base = tmp_path / "runs" / "_baselines" / ctx.params["baseline"]
    base.mkdir(parents=True)
    (base / "summary.json").write_text(json.dumps({"weights": "ab" * 32}))
    record = build_record(ctx)
    assert record.model["sha256"] == "ab" * 32
    assert unpinned_inputs(record, None) is None


def test_a_resumed_run_reports_figures_of_the_whole_run(tmp_path, monkeypatch):
    """Killed after checkpoint-2 and resumed: loss, token count and training seconds cover all 4 steps,
    equal to (loss, tokens) or in line with (seconds) the uninterrupted run's."""
    import shutil

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    ctx = project(tmp_path, spec_text(method={"max_steps": 4, "save_every": 2, "log_every": 1}))
    whole = train(ctx)
    out = ctx.run_dir / "train"
    tokens = {h["step"]: h["values"].get("num_tokens") for h in json.loads((out / "history.json").read_text())}
    assert len(whole["segments"]) == 1 and whole["segments"][0]["to"] == 4
    for gone in ("checkpoint-4", "final"):  # as if killed after the save at step 2
        shutil.rmtree(out / gone)
    (out / "summary.json").unlink()
    again = train(ctx)
    assert again["resumed_from"] == "checkpoint-2"
    assert [(sg["from"], sg["to"]) for sg in again["segments"]] == [(0, 2), (2, 4)]
    assert again["timings"]["training"] == round(sum(sg["seconds"] for sg in again["segments"]), 2)
    assert abs(again["train_loss"] - whole["train_loss"]) < 1e-5
    resumed = {h["step"]: h["values"].get("num_tokens") for h in json.loads((out / "history.json").read_text())}
    assert resumed == tokens and tokens[4] > tokens[2] > 0
