"""Training methods, one module each, registered by their spec `method.kind`.

| kind | module | trainer | rows |
| --- | --- | --- | --- |
| `sft` | sft.py (+ anchor.py) | trl `SFTTrainer`, `AnchoredSFTTrainer` with `anchor:` | {prompt, completion} or {messages} |
| `grpo` | grpo.py | trl `GRPOTrainer` with named rewards (runtime/rewards.py) | {prompt, answer} |
| `dpo` | dpo.py | trl `DPOTrainer` | {prompt, chosen, rejected} |
| `teacher-sft` | teacher_sft.py | as `sft`, on what the teacher stage kept (runtime/teacher.py) | {prompt, completion} |

Each module defines a `Method` (base.py) and a `METHOD` instance: where its rows come from, their
shape, and `build(...) -> trainer` over the shared TrainingArguments (runtime/trainer_args.py). The
train stage (runtime/train.py) looks the spec's kind up in `METHODS` and never names a kind itself.

A new method is one module here, one entry in `METHODS` below, and its kind and settings block
in compiler/schema.py (`METHOD_BLOCKS` and a field on `MethodSpec`); tests/unit/runtime/
test_methods.py checks that the compiler and this registry list the same kinds.

Imported by the train stage only: the method modules import torch and trl at module level.
"""

from __future__ import annotations

from tunebook.runtime.methods import dpo, grpo, sft, teacher_sft
from tunebook.runtime.methods.base import Method
from tunebook.runtime.registry import Registry


METHODS = Registry.of("training method", [sft.METHOD, grpo.METHOD, dpo.METHOD, teacher_sft.METHOD], lambda m: m.kind)


def method_for(kind: str) -> Method:
    """The registered method of a kind (the spec was validated, so an unknown kind is a bug)."""
    if kind not in METHODS:
        raise KeyError(f"no training method '{kind}'; registered: {', '.join(METHODS)}")
    return METHODS[kind]
