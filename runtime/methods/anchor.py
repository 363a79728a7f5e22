"""Anchor regularization for SFT: loss = task loss + coef(step) x divergence(policy, reference).

    method:
      anchor: {type: kl, coef: 0.03, start_step: 200, warmup_steps: 300, last_tokens: 128}

The reference is the model before fine-tuning: for LoRA the same network with its adapter disabled
(`peft`'s `disable_adapter()` gives exactly the base logits, no second copy in memory); for full
fine-tuning a frozen copy. The divergence is averaged over completion tokens only — restricted to
the last `last_tokens` completion tokens of each sequence when set (each packed row counts as its
own sequence).

trl 1.16's `SFTTrainer.compute_loss` runs a fused LM head whose outputs carry no logits, so the
anchored trainer does its own forward and computes the task loss from the same logits: one policy
forward plus one no-grad reference forward per step, each projecting through the LM head only the
positions that carry loss (`logits_where`). Before `start_step`
the anchor costs nothing: the parent's fused path runs.

Used by SFT and teacher-SFT (runtime/methods/sft.py); imported by the train stage only (torch and trl
at module level).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from trl import SFTTrainer

from tunebook.compiler.schema import AnchorSpec


def anchor_coef(a: AnchorSpec, step: int) -> float:
    """The effective coefficient at optimizer step `step`: 0 before start_step, then a linear ramp."""
    if step < a.start_step:
        return 0.0
    if a.warmup_steps == 0:
        return a.coef
    return a.coef * min(1.0, (step - a.start_step + 1) / a.warmup_steps)


def divergence(kind: str, logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Per-token divergence between policy log-probs `logp` and reference log-probs `logq` (..., vocab).

    kl: KL(q || p), forward (mass-covering: the policy must keep what the reference could say);
    kl_rev: KL(p || q), reverse (mode-seeking); js: Jensen-Shannon, symmetric and bounded by log 2.
    """
    if kind == "kl":
        return (logq.exp() * (logq - logp)).sum(-1)
    if kind == "kl_rev":
        return (logp.exp() * (logp - logq)).sum(-1)
    if kind == "js":
        logm = torch.logaddexp(logp, logq) - math.log(2.0)
        return 0.5 * ((logp.exp() * (logp - logm)).sum(-1) + (logq.exp() * (logq - logm)).sum(-1))
    raise ValueError(f"unknown anchor type '{kind}'")


def last_tokens_mask(mask: torch.Tensor, last_n: int | None, starts: torch.Tensor | None = None) -> torch.Tensor:
    """Keep only the last `last_n` True positions of each sequence in `mask` (batch, time).

    A sequence is a row, or with packing a stretch of a row that begins where `starts` is True.
    """
    if last_n is None:
        return mask
    b, t = mask.shape
    starts = torch.zeros_like(mask) if starts is None else starts.clone()
    starts[:, 0] = True  # every row begins a sequence
    seg = torch.cumsum(starts.long().flatten(), 0) - 1  # a global segment id per position
    m = mask.flatten().long()
    n_seg = int(seg.max()) + 1
    total = torch.zeros(n_seg, dtype=torch.long, device=mask.device).scatter_add_(0, seg, m)
    before = torch.cumsum(m, 0) - m  # selected positions before this one, in the flattened batch
    seg_start = torch.full((n_seg,), before.numel(), dtype=torch.long, device=mask.device).scatter_reduce_(0, seg, before, "amin")
    rank = before - seg_start[seg]  # 0-based index of this position among its sequence's selected ones
    keep = m.bool() & (rank >= total[seg] - last_n)
    return keep.view(b, t)


def _global_count(n: int, device) -> int | None:
    """`n` summed over the ranks when several processes train (DDP averages their gradients), else None."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    t = torch.tensor([n], device=device)
    dist.all_reduce(t)
    return int(t.item())


def logits_where(model, inputs: dict, where: torch.Tensor, head) -> torch.Tensor:
    """Next-token logits at the positions where `where` (batch, time - 1) is True, as (n, vocab): the
    backbone runs once and the LM head `head` projects only those positions. A 49k-word head over every
    position of a batch costs more than the divergence it feeds, and its (batch, time, vocab) logits
    are most of the step's memory on a large vocabulary.

    Every call checks the shortcut against the model's own logits at the last position (`logits_to_keep=1`):
    a model whose logits are more than `head(last hidden state)` (softcapping, a logit scale) gets its
    full logits instead, from a second forward, and is told so once."""
    out = model(**inputs, output_hidden_states=True, logits_to_keep=1)
    hidden = out.hidden_states[-1]
    if torch.allclose(head(hidden[:, -1]).float(), out.logits[:, -1].float(), rtol=1e-4, atol=1e-4):
        return head(hidden[:, :-1][where])
    if not getattr(logits_where, "warned", False):
        logits_where.warned = True
        print("[train] the model's logits are not its LM head's projection of the last hidden state: the anchor "
              "computes full logits (slower, same result)", flush=True)
    return model(**inputs).logits[:, :-1][where]


class AnchoredSFTTrainer(SFTTrainer):
    """SFTTrainer plus an anchor term. `reference` is a frozen model for full fine-tuning; None means
    "the adapter-disabled policy" (LoRA)."""

    def __init__(self, *args, anchor: AnchorSpec, reference=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.anchor = anchor
        self.reference = reference
        if reference is not None:
            self.reference = reference.to(self.args.device).eval().requires_grad_(False)

    @staticmethod
    def frozen_copy(model):
        return copy.deepcopy(model).eval().requires_grad_(False)

    def _reference_logits(self, model, inputs: dict, where: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.reference is not None:
                return logits_where(self.reference, inputs, where, self.reference.get_output_embeddings())
            unwrapped = self.accelerator.unwrap_model(model)
            with unwrapped.disable_adapter():
                return logits_where(model, inputs, where, unwrapped.get_output_embeddings())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        coef = anchor_coef(self.anchor, self.state.global_step) if model.training else 0.0
        if coef == 0.0:
            if model.training:
                self._metrics["train"]["anchor_coef"].append(0.0)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        labels = inputs["labels"]
        fwd = {k: v for k, v in inputs.items() if k != "labels"}
        fwd["use_cache"] = False
        targets = labels[:, 1:]
        mask = targets != -100
        n_tokens = mask.sum() if num_items_in_batch is None else num_items_in_batch
        sel_logits = logits_where(model, fwd, mask, self.accelerator.unwrap_model(model).get_output_embeddings()).float()
        nll = F.cross_entropy(sel_logits, targets[mask], reduction="sum")
        task = nll / torch.as_tensor(n_tokens, device=nll.device).clamp(min=1)
        if self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            # as Trainer.compute_loss does: n_tokens counts every rank's tokens and DDP averages the
            # gradients over ranks, so each rank's share is scaled back up (without it, 2 processes
            # trained at half the task loss; tests/unit/runtime/test_launch.py)
            task = task * (self.accelerator.num_processes // self.get_tp_size())

        pos = fwd.get("position_ids")
        starts = (pos[:, 1:] == 0) if pos is not None and "attention_mask" not in fwd else None  # packed rows
        keep = last_tokens_mask(mask, self.anchor.last_tokens, starts)  # a subset of mask
        logp = F.log_softmax(sel_logits[keep[mask]], -1)
        logq = F.log_softmax(self._reference_logits(model, fwd, keep).float(), -1)
        per_token = divergence(self.anchor.type, logp, logq)
        anchor = per_token.mean() if per_token.numel() else sel_logits.sum() * 0.0
        kept = _global_count(per_token.numel(), sel_logits.device)
        if kept is not None:  # several processes: the mean over every rank's anchored tokens, not a mean of means
            world = self.accelerator.num_processes
            anchor_loss = per_token.sum() * world / max(kept, 1) if per_token.numel() else sel_logits.sum() * 0.0
        else:
            anchor_loss = anchor
        # The task loss is already normalized over the whole accumulated batch; the anchor is a mean
        # per micro-batch, so average it over the accumulation steps the same way.
        scaled_for_ga = num_items_in_batch is not None and self.model_accepts_loss_kwargs
        ga = self.current_gradient_accumulation_steps if scaled_for_ga else 1
        loss = task + coef * anchor_loss / ga

        with torch.no_grad():
            probs = F.softmax(sel_logits, -1)
            entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()
            accuracy = (sel_logits.argmax(-1) == targets[mask]).float().mean()
        m = self._metrics["train"]
        m["anchor"].append(anchor.item())
        m["anchor_coef"].append(coef)
        m["task_loss"].append(nll.item() / max(int(mask.sum()), 1))
        m["entropy"].append(entropy.item())
        m["mean_token_accuracy"].append(accuracy.item())
        if return_outputs:  # the full logits, for whoever asks (trl's prediction_step when not loss-only)
            with torch.no_grad():
                return loss, {"logits": model(**fwd).logits}
        return loss
