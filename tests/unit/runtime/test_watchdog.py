"""The watchdog: each rule on synthetic logs (seed 003's numbers), then each failure induced for
real on the tiny model — the run stops, the diagnosis lands in summary.json with its step, and
final/ is the last good checkpoint."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from tunebook.compiler.schema import WatchdogSpec
from tunebook.runtime.watchdog import WatchdogCallback, check_loss, check_policy, check_samples, distinct_ratio

from .train_helpers import project, spec_text, train, weights

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = WatchdogSpec()


def rules(findings) -> list[str]:
    return [f.rule for f in findings]


def test_nonfinite_loss_or_grad_norm():
    assert rules(check_loss({"loss": math.nan}, [0.5], CFG, "sft")) == ["nonfinite_loss"]
    assert rules(check_loss({"loss": 0.4, "grad_norm": math.inf}, [0.5], CFG, "sft")) == ["nonfinite_loss"]
    assert check_loss({"loss": 0.4, "grad_norm": 3.0}, [0.5], CFG, "sft") == []


def test_loss_spike_against_the_recent_median():
    assert rules(check_loss({"loss": 57.2}, [0.207], CFG, "sft")) == ["loss_spike"]  # an absurd LR, one step in
    assert check_loss({"loss": 0.9}, [0.30, 0.25, 0.2], CFG, "sft") == []  # noisy, not a spike
    assert check_loss({"loss": 0.09}, [0.01], CFG, "sft") == []  # tiny losses: measured against a floor
    assert check_loss({"loss": 5.0}, [0.1], CFG, "grpo") == []  # an RL loss has no scale to spike against
    assert check_loss({"loss": 1.42}, [0.2025], CFG, "sft") == []  # a first-steps bump at a high LR that recovers
    found = check_loss({"loss": 12.0}, [1.0, 1.1, 0.9, 50.0, 1.0, 1.0], CFG, "dpo")
    assert rules(found) == ["loss_spike"] and found[0].evidence["median"] == 1.0  # last 5, median: one outlier ignored


def test_policy_ratio_and_logprob_collapse_from_seed_003():
    # ARC with PPO, batch 999: ratio 21.75, actor log-probs -41
    found = check_policy({"policy_ratio/max": 21.75, "logprobs/mean": -41.0}, CFG)
    assert rules(found) == ["policy_ratio", "logprob_collapse"]
    assert found[0].evidence["policy_ratio_max"] == 21.75
    assert check_policy({"policy_ratio/max": 1.17, "logprobs/mean": -1.875}, CFG) == []  # batch 99: healthy


def test_repetition_detector():
    assert distinct_ratio("4" * 30) < 0.05 and distinct_ratio("the color of zib is red.") > 0.9
    found = check_samples(["4444444444444444", "44444444444", "12-5=7 12-5=7 12-5=7 12-5=7", "19"], CFG)
    assert rules(found) == ["repetition"] and found[0].evidence["checked"] == 3
    assert check_samples(["19", "4", "23"], CFG) == []  # too short to judge
    assert check_samples(["the color of zib is red.", "4444444444", "zib lives in oslo."], CFG) == []  # 1 of 3


def test_callback_stops_and_cancels_the_save():
    cb = WatchdogCallback(CFG, "sft")
    state, control = SimpleNamespace(global_step=10), SimpleNamespace(should_training_stop=False, should_save=False)
    cb.on_train_begin(None, SimpleNamespace(global_step=0), control)
    cb.on_log(None, state, control, logs={"loss": 0.5})
    assert cb.trusted_step == 9 and not control.should_training_stop  # the loss at 10 was computed with step 9's weights
    state.global_step, control.should_save = 20, True
    cb.on_log(None, state, control, logs={"loss": math.nan})
    assert control.should_training_stop and not control.should_save
    assert cb.events == [{"step": 20, "rule": "nonfinite_loss", "message": cb.events[0]["message"], "evidence": {"loss": "nan"}}]
    assert cb.trusted_step == 9


def test_rl_samples_distrust_the_weights_that_made_them():
    cb = WatchdogCallback(CFG, "grpo")
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    cb.on_log(None, SimpleNamespace(global_step=9), control, logs={"loss": 0.0, "policy_ratio/max": 1.0})
    cb.observe_samples(["44444444"] * 4)  # drawn at the start of step 10 with the weights of step 9
    cb.on_step_end(None, SimpleNamespace(global_step=10), control)
    assert control.should_training_stop and cb.events[0]["rule"] == "repetition"
    assert cb.trusted_step == 8


def _summary(ctx):
    return json.loads((ctx.run_dir / "train" / "summary.json").read_text())


def test_absurd_learning_rate_nonfinite_loss(tmp_path):
    # float16 weights and lr 0.99 after a short warmup: the loss overflows to NaN within a few steps. Which
    # step depends on float16 rounding, so it is read, not pinned: without the warmup it was step 3 in a full
    # `make test` and step 2 (no good checkpoint left) with this module alone.
    method = {"lora": None, "lr": 0.99, "max_steps": 10, "warmup_ratio": 0.25, "log_every": 1, "save_every": 1,
              "max_grad_norm": 1e9, "watchdog": {"loss_spike": 1e6}}  # let the spike pass, to see the NaN rule
    ctx = project(tmp_path, spec_text(method=method, model={"base": "builtin:tiny", "dtype": "float16"}))
    s = train(ctx)
    wd = s["watchdog"]
    assert [e["rule"] for e in wd] == ["nonfinite_loss"]
    nan = wd[0]["step"]
    assert nan >= 3 and s["stopped_early"] == f"watchdog: nonfinite_loss at step {nan}" and s["actual_steps"] == nan
    # the NaN at step k came out of step k-1's weights: checkpoint-(k-1) is set aside, checkpoint-k never saved
    assert s["final"]["step"] == nan - 2 and s["discarded_checkpoints"] == [f"checkpoint-{nan - 1}"]
    assert [c["name"] for c in s["checkpoints"]] == [f"checkpoint-{i}" for i in range(1, nan - 1)]
    assert (ctx.run_dir / "train" / "discarded" / f"checkpoint-{nan - 1}").is_dir()
    final = weights(ctx.run_dir / "train" / "final")
    assert all(bool(t.isfinite().all()) for t in final.values())

    again = train(ctx)  # run again: the same seed would walk into the same NaN; nothing is redone
    assert again["final"]["step"] == nan - 2 and again["actual_steps"] == nan and again["outputs"] == "continued"
    assert [p.name for p in (ctx.run_dir / "train" / "discarded").iterdir()] == [f"checkpoint-{nan - 1}"]


def test_loss_spike_stops_and_keeps_last_good(tmp_path):
    # warmup to lr 0.99: steps 1-2 are fine, step 2's update blows the loss up (0.09 -> 7.8 at step 3)
    method = {"lora": None, "lr": 0.99, "max_steps": 10, "warmup_ratio": 0.25, "log_every": 1, "save_every": 1,
              "max_grad_norm": 1e9}
    ctx = project(tmp_path, spec_text(method=method))
    s = train(ctx)
    assert s["watchdog"][0]["rule"] == "loss_spike" and s["watchdog"][0]["step"] == 3
    assert s["final"]["step"] == 1 and s["actual_steps"] == 3 and s["discarded_checkpoints"] == ["checkpoint-2"]


def test_no_good_checkpoint_is_an_error_with_the_diagnosis_written(tmp_path):
    method = {"lora": None, "lr": 0.99, "max_steps": 10, "log_every": 1, "save_every": 1, "max_grad_norm": 1e9}
    ctx = project(tmp_path, spec_text(method=method))
    with pytest.raises(RuntimeError, match="watchdog: loss_spike at step 2.*no good model to keep"):
        train(ctx)
    s = json.loads((ctx.run_dir / "train" / "summary.json").read_text())
    assert s["final"] is None and s["watchdog"][0]["evidence"]["loss"] > 10


def test_sft_collapse_into_repetition(tmp_path):
    # completions that are all "4444...": greedy samples from training prompts collapse into them
    rows = tmp_path / "fours.jsonl"
    rows.parent.mkdir(parents=True, exist_ok=True)
    rows.write_text("".join(json.dumps({"prompt": f"{a}-{b}=", "completion": "4" * 24}) + "\n" for a in range(10, 30) for b in range(5)))
    method = {"lr": 5e-3, "max_steps": 30, "log_every": 1, "save_every": 2, "max_seq_length": 40,
              "watchdog": {"samples_every": 4, "max_new_tokens": 16}}
    ctx = project(tmp_path, spec_text(method=method, data={"train": [{"source": "fours.jsonl"}]}))
    s = train(ctx)
    ev = s["watchdog"][0]
    assert ev["rule"] == "repetition" and "4444" in ev["evidence"]["examples"][0]
    assert s["actual_steps"] == ev["step"] < 30
    assert s["final"]["step"] < ev["step"]  # the weights that produced the samples are not the result


def test_sft_collapse_into_repetition_on_chat_rows(tmp_path):
    """Chat rows: the watchdog continues each conversation up to its last assistant turn, through the
    chat template (seeds 000 and 004 train on chat data)."""
    rows = tmp_path / "fours.jsonl"
    rows.parent.mkdir(parents=True, exist_ok=True)
    rows.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"{a}-{b}="},
                                                     {"role": "assistant", "content": "4" * 24}]}) + "\n"
                            for a in range(10, 30) for b in range(5)))
    method = {"lr": 5e-3, "max_steps": 30, "log_every": 1, "save_every": 2, "max_seq_length": 48,
              "watchdog": {"samples_every": 4, "max_new_tokens": 16}}
    ctx = project(tmp_path, spec_text(method=method, data={"train": [{"source": "fours.jsonl", "format": "messages"}]}))
    s = train(ctx)
    ev = s["watchdog"][0]
    assert ev["rule"] == "repetition" and "4444" in ev["evidence"]["examples"][0]
    assert s["final"]["step"] < ev["step"]


def test_sampler_inputs_cut_chats_before_the_last_answer():
    from tunebook.runtime.models import load_tokenizer
    from tunebook.compiler.schema import ModelSpec
    from pathlib import Path
    from tunebook.runtime.watchdog import sampler_inputs

    tok = load_tokenizer(Path(__file__).resolve().parents[3], ModelSpec(base="builtin:tiny"))
    chat = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "12-5="},
                         {"role": "assistant", "content": "7"}]}
    ids = sampler_inputs([chat, {"prompt": "12-5="}, {"messages": [{"role": "assistant", "content": "x"}]}], tok)
    assert len(ids) == 2  # a chat that opens with the answer has nothing to continue from
    text = tok.decode(ids[0])
    assert "12-5=" in text and "be brief" in text and "7" not in text.split("12-5=")[-1]
    assert text == tok.apply_chat_template(chat["messages"][:2], tokenize=False, add_generation_prompt=True)


def test_grpo_policy_ratio_explodes(tmp_path):
    """Seed 003's failure, reproduced: a high LR with batches reused (num_iterations 2) pushes the
    ratio far outside 1 +- epsilon within a few steps."""
    data = {"train": [{"source": "data/tiny/subtraction_train.jsonl", "limit": 64, "format": "verifiable",
                       "fields": {"answer": "completion"}}]}
    method = {"kind": "grpo", "lr": 1e-2, "max_steps": 12, "batch_size": 16, "log_every": 1, "save_every": 1,
              "grpo": {"rewards": ["numeric_match", "format"], "num_generations": 4, "temperature": 1.2,
                       "max_completion_length": 8, "num_iterations": 2}}
    ctx = project(tmp_path, spec_text(method=method, data=data))
    s = train(ctx)
    ev = s["watchdog"][0]
    assert ev["rule"] == "policy_ratio" and ev["evidence"]["policy_ratio_max"] > 10
    assert s["final"]["step"] == ev["step"] - 2  # the ratio at step s judges the weights of step s-1


def test_grpo_reward_hacking_into_4444(tmp_path):
    from tunebook.runtime.rewards import REWARDS, reward

    @reward("count_fours")  # a reward that pays for repetition
    def count_fours(completion, answer, extract):
        return completion.count("4") / max(len(completion), 1)

    try:
        data = {"train": [{"source": "data/tiny/subtraction_train.jsonl", "limit": 64, "format": "verifiable",
                           "fields": {"answer": "completion"}}]}
        method = {"kind": "grpo", "lr": 2e-2, "max_steps": 30, "batch_size": 16, "log_every": 1, "save_every": 2,
                  "grpo": {"rewards": ["count_fours"], "num_generations": 4, "temperature": 1.2, "max_completion_length": 8}}
        ctx = project(tmp_path, spec_text(method=method, data=data))
        s = train(ctx)
    finally:
        del REWARDS["count_fours"]
    ev = s["watchdog"][0]
    assert ev["rule"] == "repetition" and ev["evidence"]["examples"][0].startswith("4444")
    assert s["final"]["step"] <= ev["step"] - 2  # samples of step s come from the weights of step s-1
