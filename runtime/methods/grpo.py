"""GRPO: online RL with verifiable rewards, through trl's GRPOTrainer.

    method:
      kind: grpo
      batch_size: 16                  # completions per step (prompts x num_generations)
      grpo: {rewards: [numeric_match, format], num_generations: 8, temperature: 1.0,
             max_completion_length: 8, beta: 0.0, loss_type: dapo, epsilon: 0.2}

Rows are verifiable: {prompt, answer}; each named reward (runtime/rewards.py) scores a completion
against the row's answer; `reward_funcs` is the one place the named rewards become trl reward
functions. With `grpo.chat` (unset: resolved at compile time to true when every target task asks
through the chat template, `eval.target[].chat`: compiler/schema.py `ChatPrompts`), each prompt goes
to trl as one user turn (a conversational prompt: trl renders it with the template's
generation prompt, as evaluation does); otherwise as plain text. trl logs the reward (mean, std, per
function), the KL to the reference (beta > 0), the clip ratios and the entropy; `DynamicsGRPOTrainer`
adds what seed 003 needed to see its collapse coming — the policy ratio (mean and max over completion
tokens) and the mean log-prob of the sampled tokens — and the first reward hands every batch of
completions to the watchdog.

Imported by the train stage only (torch and trl at module level).
"""

from __future__ import annotations

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from tunebook.compiler.schema import GRPOSpec
from tunebook.runtime import plugins
from tunebook.runtime.chat import prompt_messages
from tunebook.runtime.context import StageContext
from tunebook.runtime.methods.base import Method
from tunebook.runtime.rewards import check_names, for_trl
from tunebook.runtime.trainer_args import lora_config, trainer_args


class DynamicsGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that also logs `policy_ratio/mean`, `policy_ratio/max` and `logprobs/mean`.

    The ratio is pi_theta / pi_old per completion token. With num_iterations 1 (trl's default) each
    batch is used for one update, so the ratio is exactly 1 and clipping never binds; it moves only
    when a batch is reused (num_iterations > 1).
    """

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        self._last_logps = out[0]
        return out

    def _compute_loss(self, model, inputs):
        loss = super()._compute_loss(model, inputs)  # its first act computes the policy's log-probs
        with torch.no_grad():
            logps = self._last_logps.detach()
            mask = inputs["completion_mask"].bool()
            old = inputs.get("old_per_token_logps")
            ratio = torch.exp(logps - old) if old is not None else torch.ones_like(logps)
            if mask.any():
                mode = "train" if self.model.training else "eval"
                self._metrics[mode]["policy_ratio/mean"].append(ratio[mask].mean().item())
                self._metrics[mode]["policy_ratio/max"].append(ratio[mask].max().item())
                self._metrics[mode]["logprobs/mean"].append(logps[mask].mean().item())
        return loss


def reward_funcs(g: GRPOSpec, watchdog) -> list:
    """The spec's named rewards as trl reward functions, in order (their weights are `g.reward_weights`).
    The first one also hands every sampled batch to the watchdog (repetition, collapse)."""
    return [for_trl(name, g.extract, watchdog.observe_samples if i == 0 else None, g.answer_transform) for i, name in enumerate(g.rewards)]


class GRPO(Method):
    kind = "grpo"
    row_fields = (("prompt", "answer"),)
    data_format = "verifiable"
    samples_itself = True  # the watchdog sees the completions GRPO samples anyway

    def preflight(self, ctx: StageContext) -> None:
        plugins.load(ctx.root, ctx.spec.plugins)  # the project's rewards (docs/plugins.md), before names are looked up
        check_names(ctx.spec.method.grpo.rewards, f"{ctx.name}.method.grpo.rewards")

    def build(self, ctx, out, rows, model, tok, callbacks, watchdog):
        m, g = ctx.spec.method, ctx.spec.method.grpo
        cfg = GRPOConfig(
            **trainer_args(m, out),
            num_generations=g.num_generations,
            temperature=g.temperature,
            max_completion_length=g.max_completion_length,
            beta=g.beta,
            loss_type=g.loss_type,
            epsilon=g.epsilon,
            epsilon_high=g.epsilon_high,
            num_iterations=g.num_iterations,
            reward_weights=g.reward_weights,
            use_vllm=False,
            log_completions=False,
        )
        data = Dataset.from_list([{"prompt": prompt_messages(r["prompt"], g.system) if g.chat else r["prompt"], "answer": str(r["answer"])}
                                  for r in rows])
        return DynamicsGRPOTrainer(model=model, reward_funcs=reward_funcs(g, watchdog), args=cfg, train_dataset=data,
                                   processing_class=tok, peft_config=lora_config(m), callbacks=callbacks)


METHOD = GRPO()
