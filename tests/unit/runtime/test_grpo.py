"""GRPO on the tiny model: named rewards, KL to the reference, the dynamics it logs."""

from __future__ import annotations

import pytest

from .train_helpers import history, lora_b_norm, project, spec_text, train

pytestmark = pytest.mark.usefixtures("one_thread")

VERIFIABLE = {"train": [{"source": "data/tiny/subtraction_train.jsonl", "limit": 64, "format": "verifiable",
                         "fields": {"answer": "completion"}}]}


def grpo_method(**grpo) -> dict:
    return {"kind": "grpo", "lr": 1e-3, "max_steps": 4, "batch_size": 16, "log_every": 1,
            "grpo": {"rewards": ["numeric_match", "format"], "num_generations": 4, "temperature": 1.2,
                     "max_completion_length": 8, **grpo}}


def test_grpo_trains_and_logs_rewards_kl_clipping_entropy_and_ratio(tmp_path):
    ctx = project(tmp_path, spec_text(method=grpo_method(beta=0.04, num_iterations=2, loss_type="grpo"), data=VERIFIABLE))
    s = train(ctx)
    assert s["method"] == "grpo" and s["actual_steps"] == 4 and s["watchdog"] == []
    assert lora_b_norm(ctx.run_dir / "train" / "final") > 0
    logged = {k for h in history(ctx) for k in h["values"]}
    assert {"reward", "reward_std", "rewards/numeric_match/mean", "rewards/format/mean", "kl", "entropy",
            "clip_ratio/region_mean", "policy_ratio/mean", "policy_ratio/max", "logprobs/mean"} <= logged
    ratios = [h["values"]["policy_ratio/max"] for h in history(ctx) if "policy_ratio/max" in h["values"]]
    assert ratios[0] == 1.0 and max(ratios) > 1.0  # a reused batch (num_iterations 2) moves the ratio
    assert all(h["values"]["logprobs/mean"] < 0 for h in history(ctx) if "logprobs/mean" in h["values"])


def test_grpo_full_fine_tuning_with_default_beta_loads_no_reference(tmp_path):
    ctx = project(tmp_path, spec_text(method={**grpo_method(), "lora": None, "lr": 1e-4, "max_steps": 2}, data=VERIFIABLE))
    s = train(ctx)
    assert s["actual_steps"] == 2 and s["trainable_params"] > 500_000
    assert "kl" not in {k for h in history(ctx) for k in h["values"]}  # beta 0: no KL, no reference model


def test_grpo_needs_verifiable_rows(tmp_path):
    from tunebook.compiler.errors import SpecError

    data = {"train": [{"source": "data/tiny/subtraction_train.jsonl", "limit": 16}]}  # prompt/completion
    ctx = project(tmp_path, spec_text(method=grpo_method(), data=data))
    with pytest.raises(SpecError, match="kind grpo trains on \\{prompt, answer\\} rows.*format: verifiable"):
        train(ctx)


def test_grpo_batch_must_hold_whole_groups(tmp_path):
    from tunebook.compiler.errors import SpecError

    with pytest.raises(SpecError, match="must be a multiple of grpo.num_generations"):
        project(tmp_path, spec_text(method={**grpo_method(num_generations=3), "batch_size": 8}, data=VERIFIABLE))


def test_grpo_with_a_validation_split_scores_held_out_prompts_with_its_rewards(tmp_path):
    """Issue 12: held-out prompts are scored by the spec's reward functions, in total and one by one."""
    import json

    from tunebook.runtime import evaluate

    data = {**VERIFIABLE, "validation_split": 0.1}
    ctx = project(tmp_path, spec_text(method={**grpo_method(), "max_steps": 2}, data=data))
    train(ctx)
    evaluate.run(ctx)
    out = ctx.run_dir / "eval"
    for checkpoint in ("base", "final"):
        cell = json.loads((out / checkpoint / "verifiable.json").read_text())
        m = {x["metric"]: x for x in cell["metrics"]}
        assert set(m) == {"reward", "reward/numeric_match", "reward/format"}
        n = m["reward"]["n"]
        assert n == 6 and len(m["reward"]["samples"]) == n
        # the total is the weighted sum of the functions (weights 1), item by item
        assert m["reward"]["samples"] == [a + b for a, b in zip(m["reward/numeric_match"]["samples"], m["reward/format"]["samples"])]
        assert m["reward"]["extra"]["primary"] and not m["reward/format"]["extra"]["primary"]
        assert all(s["task"] == "validation" for s in cell["samples"])
