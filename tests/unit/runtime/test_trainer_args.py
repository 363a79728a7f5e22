"""trainer_args: the spec decides precision and checkpointing, not trl's defaults (bf16 autocast and
gradient checkpointing on every device), for each trl config tunebook builds from it."""

from __future__ import annotations

import pytest

from tunebook.compiler.schema import MethodSpec


@pytest.mark.parametrize("config", ["SFTConfig", "DPOConfig", "GRPOConfig"])
def test_no_autocast_and_no_checkpointing_unless_asked(tmp_path, monkeypatch, config):
    import trl

    from tunebook.runtime.trainer_args import trainer_args

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    cfg = getattr(trl, config)(**trainer_args(MethodSpec(), tmp_path))
    assert (cfg.bf16, cfg.fp16, cfg.gradient_checkpointing, cfg.mixed_precision) == (False, False, False, "no")


def test_accelerate_launch_mixed_precision_still_applies(tmp_path, monkeypatch):
    """resources.mixed_precision compiles to `accelerate launch --mixed_precision bf16`, which reaches
    the trainer through the environment: turning trl's bf16 default off must not turn that off."""
    from trl import SFTConfig

    from tunebook.runtime.trainer_args import trainer_args

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert SFTConfig(**trainer_args(MethodSpec(), tmp_path)).mixed_precision == "bf16"


@pytest.mark.parametrize("where, on_cpu", [("cpu", True), ("mps", False), ("cuda", False)])
def test_training_runs_where_every_stage_runs(tmp_path, monkeypatch, where, on_cpu):
    """The trainer's device is runtime/models.py `device()`'s choice (CUDA, else Apple MPS, else CPU):
    before, a Mac trained on its CPU because only CUDA counted."""
    from tunebook.runtime import trainer_args as ta

    monkeypatch.setattr(ta, "device", lambda: where)
    assert ta.trainer_args(MethodSpec(), tmp_path)["use_cpu"] is on_cpu
