"""SFT: supervised fine-tuning through trl's SFTTrainer, optionally anchored to the base model.

    method:
      kind: sft
      packing: false
      anchor: {type: kl, coef: 0.03}   # optional: runtime/methods/anchor.py's AnchoredSFTTrainer

Rows are {prompt, completion} (loss on the completion only) or {messages} (loss on the assistant's
tokens only, spans read off the chat template by runtime/chat.py).

Imported by the train stage only (trl at module level).
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from tunebook.runtime.chat import assistant_tokens
from tunebook.runtime.context import StageContext
from tunebook.runtime.methods.anchor import AnchoredSFTTrainer
from tunebook.runtime.methods.base import Method
from tunebook.runtime.trainer_args import lora_config, trainer_args


def build_sft(ctx: StageContext, out: Path, rows: list[dict], model, tok, callbacks: list):
    """SFTTrainer (AnchoredSFTTrainer with `anchor:`) over the rows; shared by teacher-SFT."""
    m = ctx.spec.method
    cfg = SFTConfig(**trainer_args(m, out), max_length=m.max_seq_length, completion_only_loss=True, packing=m.packing)
    if rows and "messages" in rows[0]:  # chat rows: loss on the assistant's tokens only (runtime/chat.py)
        rows = [assistant_tokens(tok, r["messages"]) for r in rows]
    kw = dict(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
              peft_config=lora_config(m), callbacks=callbacks)
    if m.anchor is None:
        return SFTTrainer(**kw)
    reference = None if m.lora else AnchoredSFTTrainer.frozen_copy(model)  # copied before any update
    return AnchoredSFTTrainer(**kw, anchor=m.anchor, reference=reference)


class SFT(Method):
    kind = "sft"
    row_fields = (("prompt", "completion"), ("messages",))

    def build(self, ctx, out, rows, model, tok, callbacks, watchdog):
        return build_sft(ctx, out, rows, model, tok, callbacks)


METHOD = SFT()
