"""Held-out evaluation on `data.validation`, by the shape of its rows: what each method's user looks at.

    data:
      validation: {source: data/prefs_val.jsonl}    # or validation_split: 0.1

| rows | cell (suite) | metrics |
| --- | --- | --- |
| {prompt, completion} or {messages} (SFT) | `loss` | loss, perplexity (completion tokens only) |
| {prompt, chosen, rejected} (DPO) | `preference` | accuracy, margin of the implicit reward |
| {prompt, answer} (GRPO, teacher-SFT) | `verifiable` | reward (the spec's reward functions), one per function |

DPO's implicit reward of an answer is beta * (log pi(answer) - log pi_ref(answer)), log-probs summed
over the answer's tokens as trl's DPOTrainer computes them (prompt tokenized alone and with the answer
plus EOS; the answer starts where they diverge). The reference is the model before training: the
adapter disabled for LoRA, the base model for full fine-tuning. A pair counts 1 when the chosen answer
gets the larger reward, 0 when the rejected one does, and 0.5 on a tie, so the base model (its own
reference: every margin is 0) scores 0.5, chance. GRPO's held-out reward is one greedy completion per
prompt, scored by the spec's reward functions and summed with their weights, as trl sums them for
the advantage. Every metric carries n and per-item scores, so the reports' paired statistics apply.

The loss is what training puts loss on: completion tokens after the prompt (plus EOS), or the
assistant's turns of `messages` rows (runtime/chat.py); early stopping on loss measures it the same
way (runtime/train.py). Torch is imported inside the functions.
"""

from __future__ import annotations

import math
from typing import ClassVar

from tunebook.files import dict_sha256
from tunebook.runtime.chat import assistant_tokens
from tunebook.runtime.extract import EXTRACTORS
from tunebook.runtime.generation import generate
from tunebook.runtime import plugins
from tunebook.runtime.rewards import bind
from tunebook.runtime.suites.base import Reference, Setup, stderr

CELLS = ("loss", "preference", "verifiable")


def cell_for(rows: list[dict]) -> str | None:
    """The held-out cell these validation rows can feed, or None when there are none."""
    if not rows:
        return None
    first = rows[0]
    if "chosen" in first and "rejected" in first:
        return "preference"
    if "completion" in first or "messages" in first:
        return "loss"
    if "answer" in first:
        return "verifiable"
    return None


def _mean_se(xs: list[float]) -> tuple[float, float | None]:
    return sum(xs) / len(xs), stderr(xs)


# ---------------------------------------------------------------------------------------------------
# SFT: loss and perplexity


def eval_loss(model, tok, rows: list[dict], max_len: int, checkpoint: str, batch_size: int = 32) -> dict:
    """Mean completion-token loss per row (prompt tokens masked) and perplexity."""
    import torch

    tok.padding_side = "right"
    per_row = []
    for i in range(0, len(rows), batch_size):
        batch = rows[i : i + batch_size]
        ids, labels = [], []
        for r in batch:
            if "messages" in r:  # the tokens training puts loss on: the assistant's turns (runtime/chat.py)
                enc = assistant_tokens(tok, r["messages"])
                full = enc["input_ids"][:max_len]
                ids.append(full)
                labels.append([t if m else -100 for t, m in zip(full, enc["assistant_masks"])])
                continue
            p_ids = tok(r["prompt"])["input_ids"]
            full = tok(r["prompt"] + r["completion"])["input_ids"] + [tok.eos_token_id]
            full = full[:max_len]
            lab = [-100] * min(len(p_ids), len(full)) + full[len(p_ids):]
            ids.append(full)
            labels.append(lab)
        width = max(len(x) for x in ids)
        inp = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in ids], device=model.device)
        lab = torch.tensor([x + [-100] * (width - len(x)) for x in labels], device=model.device)
        att = (torch.arange(width)[None, :] < torch.tensor([len(x) for x in ids])[:, None]).long().to(model.device)
        with torch.no_grad():
            logits = model(input_ids=inp, attention_mask=att).logits[:, :-1].float()
        tgt = lab[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-100, reduction="none")
        mask = (tgt != -100).float()
        per_row += ((nll * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist()
    n = len(per_row)
    mean, se = _mean_se(per_row)
    return {"metrics": [
        {"suite": "loss", "task": "validation", "metric": "loss", "checkpoint": checkpoint, "value": mean,
         "stderr": se, "n": n, "higher_is_better": False, "samples": per_row},
        {"suite": "loss", "task": "validation", "metric": "perplexity", "checkpoint": checkpoint,
         "value": math.exp(mean), "stderr": math.exp(mean) * se if se is not None else None, "n": n,
         "higher_is_better": False},
    ]}


# ---------------------------------------------------------------------------------------------------
# DPO: preference accuracy and reward margin


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _pair_ids(tok, row: dict, max_len: int) -> list[tuple[list[int], int]]:
    """(token ids, where the answer starts) for chosen and rejected, tokenized as trl's DPOTrainer does."""
    prompt = tok(row["prompt"])["input_ids"]
    full = [tok(row["prompt"] + row[k] + (tok.eos_token or ""))["input_ids"] for k in ("chosen", "rejected")]
    start = min(_common_prefix(prompt, f) for f in full)
    return [(f[:max_len], min(start, max_len)) for f in full]


def _answer_logps(model, tok, seqs: list[tuple[list[int], int]], batch_size: int) -> list[float]:
    """Sum of the log-probs of each sequence's tokens from its answer start on."""
    import torch

    out: list[float] = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for i in range(0, len(seqs), batch_size):
        batch = seqs[i : i + batch_size]
        width = max(len(ids) for ids, _ in batch)
        inp = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch], device=model.device)
        att = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch], device=model.device)
        with torch.no_grad():
            logits = model(input_ids=inp, attention_mask=att).logits[:, :-1].float()
        logps = torch.log_softmax(logits, dim=-1).gather(2, inp[:, 1:, None]).squeeze(2)
        for j, (ids, start) in enumerate(batch):
            out.append(float(logps[j, max(start, 1) - 1 : len(ids) - 1].sum()))
    return out


def eval_preference(model, reference, tok, rows: list[dict], beta: float, max_len: int, checkpoint: str,
                    batch_size: int = 32) -> dict:
    """Preference accuracy and mean reward margin of `model` against `reference` on held-out pairs.

    `reference` is a context manager yielding the reference model (Models.base_view)."""
    tok.padding_side = "right"
    seqs = [s for r in rows for s in _pair_ids(tok, r, max_len)]  # chosen, rejected, chosen, ...
    policy = _answer_logps(model, tok, seqs, batch_size)
    with reference() as ref_model:  # with LoRA the same object, its adapter disabled
        ref = _answer_logps(ref_model, tok, seqs, batch_size)
    rewards = [beta * (p - q) for p, q in zip(policy, ref)]
    chosen, rejected = rewards[0::2], rewards[1::2]
    margins = [c - r for c, r in zip(chosen, rejected)]
    wins = [1.0 if m > 0 else 0.0 if m < 0 else 0.5 for m in margins]
    n = len(rows)
    acc, acc_se = _mean_se(wins)
    margin, margin_se = _mean_se(margins)
    extra = {"beta": beta, "reference": "the model before training (adapter disabled for LoRA)",
             "chosen_reward": sum(chosen) / n, "rejected_reward": sum(rejected) / n, "ties": sum(w == 0.5 for w in wins)}
    common = {"suite": "preference", "task": "validation", "checkpoint": checkpoint, "n": n, "higher_is_better": True}
    return {"metrics": [
        {**common, "metric": "accuracy", "value": acc, "stderr": acc_se, "samples": wins, "extra": extra},
        {**common, "metric": "margin", "value": margin, "stderr": margin_se, "samples": margins, "extra": {"beta": beta}},
    ]}


# ---------------------------------------------------------------------------------------------------
# GRPO (and teacher-SFT): the training rewards on held-out prompts


def reward_settings(method) -> dict:
    """The rewards a method trains with, as the held-out cell uses them (and fingerprints them)."""
    if method is not None and method.grpo is not None:
        g = method.grpo
        return {"rewards": list(g.rewards), "weights": list(g.reward_weights or [1.0] * len(g.rewards)),
                "extract": g.extract, "max_new_tokens": g.max_completion_length, **_transform(g)}
    if method is not None and method.teacher is not None:
        t = method.teacher
        return {"rewards": [t.reward], "weights": [1.0], "extract": t.extract, "max_new_tokens": t.max_new_tokens, **_transform(t)}
    return {"rewards": ["numeric_match"], "weights": [1.0], "extract": "first_number", "max_new_tokens": 32}


def _transform(block) -> dict:
    """The answer transform, when the spec sets one (unset: the settings, and so fingerprints, as before)."""
    return {"answer_transform": block.answer_transform} if block.answer_transform else {}


def eval_verifiable(model, tok, rows: list[dict], settings: dict, checkpoint: str, keep: int, batch_size: int = 32) -> dict:
    """Mean reward of one greedy completion per held-out prompt, in total and per reward function."""
    extract = EXTRACTORS[settings["extract"]]
    prompts = [str(r["prompt"]) for r in rows]
    outputs = [o[0] for o in generate(model, tok, prompts, settings["max_new_tokens"], batch_size)]
    fns = {name: bind(name, settings["extract"], settings.get("answer_transform")) for name in settings["rewards"]}
    per_fn = {name: [fn(o, r["answer"], prompt=p) for o, r, p in zip(outputs, rows, prompts)] for name, fn in fns.items()}
    total = [sum(w * per_fn[name][i] for name, w in zip(settings["rewards"], settings["weights"])) for i in range(len(rows))]
    n, best = len(rows), sum(settings["weights"])
    common = {"suite": "verifiable", "task": "validation", "checkpoint": checkpoint, "n": n, "higher_is_better": True}
    mean, se = _mean_se(total)
    metrics = [{**common, "metric": "reward", "value": mean, "stderr": se, "samples": total,
                "extra": {"primary": True, "rewards": settings["rewards"], "weights": settings["weights"],
                          "decoding": {"mode": "greedy"}, "max_new_tokens": settings["max_new_tokens"]}}]
    for name, scores in per_fn.items():
        mean, se = _mean_se(scores)
        metrics.append({**common, "metric": f"reward/{name}", "value": mean, "stderr": se, "samples": scores,
                        "extra": {"primary": False}})
    samples = [{"task": "validation", "checkpoint": checkpoint, "prompt": p, "output": o, "target": str(r["answer"]),
                "extracted": extract(o), "correct": t >= best} for p, o, r, t in zip(prompts, outputs, rows, total)]
    right = [s for s in samples if s["correct"]][: (keep + 1) // 2]
    wrong = [s for s in samples if not s["correct"]][: keep // 2]
    return {"metrics": metrics, "samples": right + wrong}


# ---------------------------------------------------------------------------------------------------
# the suite


class HeldoutSuite:
    """One cell on `data.validation`, chosen by its rows (the table above); none without rows."""

    name: ClassVar[str] = "heldout"
    on_base: ClassVar[bool] = True
    per_experiment: ClassVar[bool] = True  # the base's cell depends on this experiment's rows
    against_base: ClassVar[bool] = False

    def __init__(self, setup: Setup):
        self.setup = setup
        self.cell = cell_for(setup.validation)

    def cells(self) -> list[str]:
        return [self.cell] if self.cell else []

    def check(self) -> None:
        pass  # the rows were read and checked by the data stage

    def _beta(self) -> float:
        method = self.setup.method
        return method.dpo.beta if method is not None and method.dpo is not None else 0.1

    def inputs(self, cell: str) -> dict:
        rows, max_len = dict_sha256(self.setup.validation), self.setup.max_len
        if cell == "loss":
            return {"loss": True, "max_len": max_len, "rows": rows}
        if cell == "preference":
            return {"preference": self._beta(), "max_len": max_len, "rows": rows}
        s = reward_settings(self.setup.method)  # a plugin's reward or extractor: its file's sha256 too
        return {"verifiable": s, "rows": rows, **plugins.code(s["rewards"], s["extract"], s.get("answer_transform"))}

    def run(self, cell: str, model, tok, checkpoint: str, weights_fp: str, reference: Reference) -> dict:
        s = self.setup
        if cell == "loss":
            return eval_loss(model, tok, s.validation, s.max_len, checkpoint)
        if cell == "preference":
            return eval_preference(model, reference.base_view, tok, s.validation, self._beta(), s.max_len, checkpoint)
        return eval_verifiable(model, tok, s.validation, reward_settings(s.method), checkpoint, s.keep)
