"""Reward-model scoring: a sequence-classification model with one output (num_labels=1) scores each
checkpoint's answers to a prompt set; the cell reports the mean reward (seed 000 tracked MT-Bench
scores this way across fine-tuning).

    eval:
      reward: {model: models/my-reward-model, prompts: data/prompts.jsonl, max_new_tokens: 128}

A reward model with a chat template (Skywork, ArmoRM and most trained reward models are chat models)
reads the conversation it was trained to score, rendered through its own template: the evaluated
model's system prompt if one was given, the prompt as the user's turn, the answer as the assistant's.
A model without a template reads `prompt` newline `answer`, as before. The cell says which (`format`:
chat or raw); a raw model's cells keep their fingerprints.

Scores are cached by a hash of (prompt, answer) in one append-only file per reward model below
`<eval>/_cache/reward/`: checkpoints that give the same answer are scored once, and a sweep killed
midway loses at most the batch in flight (a torn last line is ignored when read back).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from tunebook.compiler.errors import SpecError, SpecIssue
from tunebook.compiler.schema import ModelSpec, RewardEval
from tunebook.files import dict_sha256
from tunebook.runtime.chat import prompt_messages, render
from tunebook.runtime.models import device, model_fingerprint, model_path
from tunebook.runtime.suites.base import Reference, Setup, stderr
from tunebook.runtime.suites.rows import answers, load_prompts


def _model_spec(spec: RewardEval) -> ModelSpec:
    return ModelSpec(base=spec.model, revision=spec.revision, trust_remote_code=spec.trust_remote_code)


def reward_model_fingerprint(root: Path, spec: RewardEval, template=None) -> str:
    """The reward model's weights and input length; with a chat template, the template too (it renders
    what the model reads, and a folder's weights digest does not cover it). A raw model's is what it was."""
    return dict_sha256([model_fingerprint(root, _model_spec(spec)), spec.max_length, *([template] if template else [])])


def load_reward_tokenizer(root: Path, spec: RewardEval):
    from transformers import AutoTokenizer

    path, rev = model_path(root, _model_spec(spec))
    try:
        return AutoTokenizer.from_pretrained(path, revision=rev, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as e:
        raise SpecError([SpecIssue("params.yaml", "eval.reward.model", f"cannot read the tokenizer of '{spec.model}': "
                                   f"{str(e).splitlines()[0]}")]) from None


def chat_template(tok):
    """The reward model's chat template, or None: a chat reward model (Skywork, ArmoRM, ...) is meant to read
    the conversation through it; a model without one reads `prompt` newline `answer`."""
    return getattr(tok, "chat_template", None) or None


def reward_text(tok, prompt: str, answer: str, system: str | None = None) -> str:
    """What the reward model reads: with a chat template, the conversation (the evaluated model's system
    prompt, the user's prompt, the assistant's answer) rendered through it; else the raw text."""
    if chat_template(tok):
        return render(tok, prompt_messages(prompt, system) + [{"role": "assistant", "content": answer}])
    return f"{prompt}\n{answer}"


def check_reward_model(root: Path, spec: RewardEval) -> None:
    """Before any compute: the reward model exists and has one output (its config says, cheaply)."""
    from transformers import AutoConfig

    path, rev = model_path(root, _model_spec(spec))
    try:
        cfg = AutoConfig.from_pretrained(path, revision=rev, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as e:
        raise SpecError([SpecIssue("params.yaml", "eval.reward.model", f"cannot read '{spec.model}': {str(e).splitlines()[0]}")]) from None
    if cfg.num_labels != 1:
        raise SpecError([SpecIssue("params.yaml", "eval.reward.model", f"{spec.model} has {cfg.num_labels} outputs; "
                                   "a reward model has one (num_labels=1)")])


class RewardScorer:
    def __init__(self, root: Path, spec: RewardEval, cache_dir: Path):
        import torch
        from transformers import AutoModelForSequenceClassification

        path, rev = model_path(root, _model_spec(spec))
        self.spec = spec
        check_reward_model(root, spec)
        # Weights the checkpoint lacks (a causal LM has no score head) are initialized from torch's RNG:
        # seeded, so two runs give the same numbers; named, so the log and the report can say so.
        torch.manual_seed(0)
        self.model, info = AutoModelForSequenceClassification.from_pretrained(
            path, revision=rev, trust_remote_code=spec.trust_remote_code, output_loading_info=True)
        self.model = self.model.to(device()).eval()
        self.untrained = sorted(info.get("missing_keys") or [])
        if self.untrained:
            print(f"[reward] warning: {spec.model} has no trained weights for {', '.join(self.untrained[:3])}"
                  f"{' …' if len(self.untrained) > 3 else ''}: they are random (seeded), so its rewards are noise. "
                  "Use a trained reward model (a sequence-classification checkpoint with one output).", flush=True)
        self.tok = load_reward_tokenizer(root, spec)
        self.template = chat_template(self.tok)
        self.format = "chat" if self.template else "raw"
        # the system prompt the evaluated model was asked with is part of the conversation a chat reward
        # model reads; raw text never carried it
        self.system = spec.system if self.template else None
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        # the classifier reads the last non-pad token, so it must know which id pads
        self.model.config.pad_token_id = self.tok.pad_token_id
        self.tok.padding_side, self.tok.truncation_side = "right", "left"  # an overlong input keeps its answer
        self.calls = 0  # forward passes, so tests can see the cache work
        self.cache_path = cache_dir / f"{reward_model_fingerprint(root, spec, self.template)[:32]}.jsonl"
        self.cache: dict[str, float] = {}
        if self.cache_path.exists():
            for line in self.cache_path.read_text().splitlines():
                try:
                    row = json.loads(line)
                    self.cache[row["key"]] = float(row["reward"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a line torn by a kill

    def key(self, prompt: str, answer: str) -> str:
        # the system prompt only when the model reads it, so the keys cached before it existed still hold
        return dict_sha256([prompt, answer, *([self.system] if self.system is not None else [])])

    def _text(self, prompt: str, answer: str) -> str:
        return reward_text(self.tok, prompt, answer, self.system)

    def score(self, prompts: list[str], answers: list[str]) -> list[float]:
        import torch

        todo = sorted({self.key(p, a): (p, a) for p, a in zip(prompts, answers) if self.key(p, a) not in self.cache}.items())
        bs = self.spec.batch_size
        limit = min(self.spec.max_length, getattr(self.model.config, "max_position_embeddings", None) or self.spec.max_length)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        for i in range(0, len(todo), bs):
            batch = todo[i : i + bs]
            enc = self.tok([self._text(p, a) for _, (p, a) in batch], return_tensors="pt", padding=True,
                           truncation=True, max_length=limit, add_special_tokens=not self.template)  # a template has its own
            with torch.no_grad():
                rewards = self.model(**enc.to(self.model.device)).logits[:, 0].float().tolist()
            self.calls += 1
            with self.cache_path.open("a") as f:
                for (k, _), r in zip(batch, rewards):
                    self.cache[k] = r
                    f.write(json.dumps({"key": k, "reward": r}) + "\n")
        return [self.cache[self.key(p, a)] for p, a in zip(prompts, answers)]


def eval_reward(scorer: RewardScorer, spec: RewardEval, prompts: list[str], answers: list[str], checkpoint: str,
                keep: int) -> dict:
    rewards = scorer.score(prompts, answers)
    n = len(rewards)
    mean = sum(rewards) / n
    metric = {"suite": "reward", "task": spec.name, "metric": "mean_reward", "checkpoint": checkpoint, "value": mean,
              "stderr": stderr(rewards), "n": n, "higher_is_better": True,
              "samples": rewards,
              "extra": {"model": spec.model, "revision": spec.revision, "max_new_tokens": spec.max_new_tokens,
                        "chat": bool(spec.chat), "system": spec.system, "decoding": {"mode": "greedy"},
                        "format": scorer.format}}  # how the reward model read them: chat (its template) or raw
    if scorer.untrained:
        metric["extra"]["untrained_weights"] = scorer.untrained
    # the best and the worst answers, which say more than random ones
    order = sorted(range(n), key=lambda i: rewards[i])
    picked = order[::-1][: (keep + 1) // 2] + order[: keep // 2]
    samples = [{"task": spec.name, "checkpoint": checkpoint, "prompt": prompts[i], "output": answers[i],
                "extracted": f"reward {rewards[i]:.4g}"} for i in dict.fromkeys(picked)]
    return {"metrics": [metric], "samples": samples}


class RewardSuite:
    """The `reward` cell: the reward model's mean score of the model's greedy answers to a prompt set.
    The scorer (a second model) loads at the first cell that needs it."""

    name: ClassVar[str] = "reward"
    on_base: ClassVar[bool] = True
    per_experiment: ClassVar[bool] = True  # computed by each experiment's eval stage, base included
    against_base: ClassVar[bool] = False

    def __init__(self, setup: Setup):
        self.setup, self.spec = setup, setup.ev.reward
        self.prompts: list[str] = []
        self.template = None  # the reward model's chat template, read in check()
        self.scorer: RewardScorer | None = None

    def cells(self) -> list[str]:
        return ["reward"] if self.spec else []

    def check(self) -> None:
        self.prompts = load_prompts(self.setup.root, self.spec, "eval.reward")
        check_reward_model(self.setup.root, self.spec)
        self.template = chat_template(load_reward_tokenizer(self.setup.root, self.spec))

    def inputs(self, cell: str) -> dict:
        # a raw reward model's inputs are exactly what they were before formats existed (its cells are
        # reused); a chat one's name the format and its template enters the model's fingerprint
        return {"settings": self.spec.model_dump(mode="json"), "prompts": dict_sha256(self.prompts),
                "reward_model": reward_model_fingerprint(self.setup.root, self.spec, self.template),
                **({"format": "chat"} if self.template else {})}

    def run(self, cell: str, model, tok, checkpoint: str, weights_fp: str, reference: Reference) -> dict:
        s = self.setup
        self.scorer = self.scorer or RewardScorer(s.root, self.spec, s.out / "_cache" / "reward")
        got = answers(s.out, model, tok, weights_fp, self.spec, self.prompts)
        return eval_reward(self.scorer, self.spec, self.prompts, got, checkpoint, s.keep)
