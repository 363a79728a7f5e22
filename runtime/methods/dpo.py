"""DPO: direct preference optimization through trl's DPOTrainer.

    method:
      kind: dpo
      dpo: {beta: 0.1, loss_type: sigmoid}

Rows are preferences: {prompt, chosen, rejected} (the data stage's `format: preference`). The
reference is the model before training: with LoRA trl disables the adapter, with full fine-tuning it
keeps a frozen copy. trl logs rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies
and the log-probs of both answers; they land in history.json and dvclive like every other metric.
With `dpo.chat` (unset: resolved at compile time to true when every target task asks through the
chat template, `eval.target[].chat`: compiler/schema.py `ChatPrompts`), a row goes to trl
conversational: the prompt as one user turn, each answer as the assistant's turn (trl renders them
with the template, end-of-turn token included); otherwise as plain text.

Imported by the train stage only (trl at module level).
"""

from __future__ import annotations

from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from tunebook.runtime.chat import prompt_messages
from tunebook.runtime.methods.base import Method
from tunebook.runtime.trainer_args import lora_config, trainer_args


class DPO(Method):
    kind = "dpo"
    row_fields = (("prompt", "chosen", "rejected"),)
    data_format = "preference"

    def build(self, ctx, out, rows, model, tok, callbacks, watchdog):
        m = ctx.spec.method
        cfg = DPOConfig(**trainer_args(m, out), beta=m.dpo.beta, loss_type=[m.dpo.loss_type], max_length=m.max_seq_length)
        if m.dpo.chat:
            rows = [{"prompt": prompt_messages(r["prompt"], m.dpo.system), "chosen": [{"role": "assistant", "content": r["chosen"]}],
                     "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]
        data = Dataset.from_list([{k: r[k] for k in self.row_fields[0]} for r in rows])
        return DPOTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok,
                          peft_config=lora_config(m), callbacks=callbacks)


METHOD = DPO()
