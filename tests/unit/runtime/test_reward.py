"""Reward-model scoring with a tiny seeded LlamaForSequenceClassification (num_labels=1) built from the
tiny model's tokenizer: correct pooling under padding, the (prompt, answer) cache, the metric, and the
reward cell in a sweep."""

from __future__ import annotations

import json
import shutil

import pytest

from tunebook.compiler.errors import SpecError
from tunebook.compiler.schema import EvalSpec, RewardEval
from tunebook.runtime import evaluate
from tunebook.runtime.suites.reward import RewardScorer, eval_reward
from tunebook.runtime.context import experiment_context

from .eval_helpers import TINY, make_project


def build_rm(path, num_labels: int = 1, seed: int = 0):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(TINY)
    cfg = LlamaConfig.from_pretrained(TINY, num_labels=num_labels, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    LlamaForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def rm(tmp_path_factory):
    return build_rm(tmp_path_factory.mktemp("rm"))


PROMPTS = ["31-12=", "9-3=", "40-8=", "9-3="]
ANSWERS = ["19", "6", "thirty-two, I think, after some careful thought", "6"]


def test_rewards_match_a_single_unpadded_forward_and_are_cached(rm, tmp_path):
    import torch

    spec = RewardEval(model=str(rm), prompts="p.jsonl", batch_size=4)
    scorer = RewardScorer(tmp_path, spec, tmp_path / "cache")
    rewards = scorer.score(PROMPTS, ANSWERS)
    assert scorer.calls == 1 and rewards[1] == rewards[3]  # the repeated pair is scored once
    with torch.no_grad():  # one at a time, no padding: batching must not move the pooled token
        one = [scorer.model(**scorer.tok(scorer._text(p, a), return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
               for p, a in zip(PROMPTS, ANSWERS)]
    assert rewards == pytest.approx(one, abs=1e-5)
    assert len(set(rewards[:3])) == 3

    assert scorer.score(PROMPTS, ANSWERS) == rewards and scorer.calls == 1  # in memory
    with scorer.cache_path.open("a") as f:
        f.write('{"key": "torn')  # a line cut by a kill
    fresh = RewardScorer(tmp_path, spec, tmp_path / "cache")
    assert fresh.score(PROMPTS, ANSWERS) == pytest.approx(rewards) and fresh.calls == 0  # from the file


def test_reward_metric(rm, tmp_path):
    spec = RewardEval(name="mtbench", model=str(rm), prompts="p.jsonl")
    res = eval_reward(RewardScorer(tmp_path, spec, tmp_path), spec, PROMPTS, ANSWERS, "final", keep=2)
    m = res["metrics"][0]
    assert (m["suite"], m["task"], m["metric"], m["n"]) == ("reward", "mtbench", "mean_reward", 4)
    assert m["value"] == pytest.approx(sum(m["samples"]) / 4) and m["stderr"] > 0
    best = max(range(4), key=lambda i: m["samples"][i])
    assert res["samples"][0]["output"] == ANSWERS[best] and len(res["samples"]) == 2


def test_a_model_without_a_trained_head_is_named_and_seeded(tmp_path, capsys):
    """A causal LM saved with one label (what smoke mode does with the tiny model) loads as a reward
    model with a random score head: the log warns, the metric names the weights, two loads agree."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(TINY)
    lm.config.num_labels = 1
    lm.save_pretrained(tmp_path / "lm")
    AutoTokenizer.from_pretrained(TINY).save_pretrained(tmp_path / "lm")
    spec = RewardEval(model=str(tmp_path / "lm"), prompts="p.jsonl")
    first = eval_reward(RewardScorer(tmp_path, spec, tmp_path / "a"), spec, PROMPTS, ANSWERS, "final", keep=2)
    again = eval_reward(RewardScorer(tmp_path, spec, tmp_path / "b"), spec, PROMPTS, ANSWERS, "final", keep=2)
    assert first["metrics"][0]["samples"] == again["metrics"][0]["samples"]  # seeded: the same noise
    assert "score.weight" in first["metrics"][0]["extra"]["untrained_weights"]
    assert "rewards are noise" in capsys.readouterr().out


def test_a_trained_reward_model_has_no_untrained_weights(rm, tmp_path):
    spec = RewardEval(model=str(rm), prompts="p.jsonl")
    assert RewardScorer(tmp_path, spec, tmp_path).untrained == []


def test_a_classifier_with_several_outputs_or_no_model_is_refused_before_any_compute(tmp_path):
    build_rm(tmp_path / "clf", num_labels=2)
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    with pytest.raises(SpecError, match="num_labels=1"):
        evaluate.Evaluator(tmp_path, EvalSpec(reward={"model": "clf", "prompts": "p.jsonl"}), tmp_path / "out", "t")
    with pytest.raises(SpecError, match="cannot read 'nowhere'"):
        evaluate.Evaluator(tmp_path, EvalSpec(reward={"model": "nowhere", "prompts": "p.jsonl"}), tmp_path / "out", "t")


def test_reward_cells_for_base_and_every_checkpoint(rm, tmp_path, monkeypatch):
    root = make_project(tmp_path, {"loss": False, "reward": {"model": "models/rm", "prompts": "prompts.jsonl", "max_new_tokens": 4}})
    shutil.copytree(rm, root / "models" / "rm")  # inputs live inside the project
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:3]))
    ctx = experiment_context(root, "exp")
    evaluate.run(ctx)
    out = root / "runs" / "exp" / "eval"
    cells = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/reward.json")}
    assert set(cells) == {"base", "checkpoint-2", "checkpoint-4", "final"}
    m = cells["final"]["metrics"][0]
    assert m["n"] == 3 and m["extra"]["model"] == "models/rm"
    assert m["extra"]["format"] == "chat"  # the tiny tokenizer has a chat template
    from tunebook.reports.record import Metric, Sample

    Metric.model_validate(m)  # the run record takes the cell as it is
    assert all(Sample.model_validate(smp) for smp in cells["final"]["samples"])
    assert len(list((out / "_cache" / "generations").glob("*.json"))) == 4  # one answer set per model
    monkeypatch.setattr(RewardScorer, "score", lambda *a: pytest.fail("rescored a finished cell"))
    evaluate.run(ctx)


def test_a_raw_reward_cell_keeps_its_fingerprint_and_a_chat_one_names_its_format(rm, tmp_path):
    """A reward model without a chat template reads raw text as before and its cell's inputs are exactly
    the earlier ones (so its cells are reused); one with a template names the format, and the template
    enters the reward model's fingerprint (a folder's digest covers only its weights)."""
    from transformers import AutoTokenizer

    from tunebook.files import dict_sha256
    from tunebook.runtime.models import model_fingerprint
    from tunebook.runtime.suites.base import Setup
    from tunebook.runtime.suites.reward import RewardSuite, _model_spec

    plain = tmp_path / "plain"
    shutil.copytree(rm, plain)
    (plain / "chat_template.jinja").unlink()
    assert not AutoTokenizer.from_pretrained(plain).chat_template
    (tmp_path / "p.jsonl").write_text('{"prompt": "9-3="}\n')

    def inputs(model: str) -> tuple[dict, RewardEval]:
        ev = EvalSpec(reward={"model": model, "prompts": "p.jsonl", "chat": False})
        suite = RewardSuite(Setup(tmp_path, ev, "t", tmp_path / "out"))
        suite.check()
        return suite.inputs("reward"), ev.reward

    got, spec = inputs(str(plain))
    assert got == {"settings": spec.model_dump(mode="json"), "prompts": dict_sha256(["9-3="]),
                   "reward_model": dict_sha256([model_fingerprint(tmp_path, _model_spec(spec)), spec.max_length])}
    assert "system" not in got["settings"]  # unset, left out: the settings are the earlier ones
    chat, spec = inputs(str(rm))
    assert chat["format"] == "chat" and chat["reward_model"] != dict_sha256([model_fingerprint(tmp_path, _model_spec(spec)), spec.max_length])
    assert chat["prompts"] == got["prompts"] and chat["settings"] == spec.model_dump(mode="json")
