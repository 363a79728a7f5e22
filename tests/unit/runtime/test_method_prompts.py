"""GRPO and DPO build their own prompts from plain-text rows: they ask the way the spec's target tasks
ask (runtime/chat.py `prompts_as_targets`). With `eval.target[].chat` each prompt goes to trl as one user
turn, and trl's rendering of it is exactly the prompt the target task evaluates on (asserted on the
real model's ChatML template); without it, plain text as before. The trainers are replaced by a stub
that keeps what they were given: no model is loaded, no step is taken."""

from __future__ import annotations


import pytest

from tunebook.compiler.schema import Spec
from tunebook.runtime.chat import chat_prompt, prompts_as_targets
from tunebook.runtime.context import StageContext

from .real_helpers import GGUF, needs_real

ROWS = [{"prompt": "Tom has 12 apples and gets 30 more. How many apples does Tom have now?", "answer": "42",
         "chosen": "42", "rejected": "52"}]


def spec(method: dict, targets: list[dict]) -> Spec:
    return Spec.model_validate({"name": "x", "model": {"base": "builtin:tiny"}, "data": {"train": [{"source": "x.jsonl"}]},
                                "method": method, "eval": {"target": targets}})


def task(**kw) -> dict:
    return {"name": kw.pop("name", "arith"), "source": "t.jsonl", **kw}


def test_chat_only_when_every_target_task_asks_through_the_template():
    grpo = {"kind": "grpo", "batch_size": 8, "grpo": {"rewards": ["numeric_match"], "num_generations": 4}}
    assert prompts_as_targets(spec(grpo, [])) == (False, None)
    assert prompts_as_targets(spec(grpo, [task()])) == (False, None)  # verifiable rows alone ask raw
    assert prompts_as_targets(spec(grpo, [task(chat=True)])) == (True, None)
    assert prompts_as_targets(spec(grpo, [task(chat=True, system="Be brief.")])) == (True, "Be brief.")
    assert prompts_as_targets(spec(grpo, [task(chat=True), task(name="b", chat=False)])) == (False, None)
    assert prompts_as_targets(spec(grpo, [task(chat=True, system="A"), task(name="b", chat=True, system="B")])) == (True, None)


@pytest.fixture(scope="module")
def real_tok():
    from tunebook.runtime.convert import load_tokenizer_from_gguf

    return load_tokenizer_from_gguf(GGUF)


class _Watchdog:
    def observe_samples(self, texts):
        pass


@needs_real
@pytest.mark.parametrize("system", [None, "Answer with a number."])
def test_grpo_prompts_are_the_target_tasks_chat_prompts(monkeypatch, tmp_path, real_tok, system):
    from tunebook.runtime.methods import grpo

    method = {"kind": "grpo", "batch_size": 8, "grpo": {"rewards": ["numeric_match"], "num_generations": 4}}
    seen = {}
    monkeypatch.setattr(grpo, "DynamicsGRPOTrainer", lambda **kw: seen.update(kw) or "trainer")
    ctx = StageContext(root=tmp_path, name="x", spec=spec(method, [task(chat=True, system=system)]), params={})
    grpo.METHOD.build(ctx, tmp_path / "out", ROWS, model=None, tok=real_tok, callbacks=[], watchdog=_Watchdog())
    row = seen["train_dataset"][0]
    assert isinstance(row["prompt"], list) and row["prompt"][-1] == {"role": "user", "content": ROWS[0]["prompt"]}
    rendered = real_tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)  # what trl does
    assert rendered == chat_prompt(real_tok, ROWS[0]["prompt"], system)  # what the target task asks

    ctx = StageContext(root=tmp_path, name="x", spec=spec(method, [task()]), params={})
    grpo.METHOD.build(ctx, tmp_path / "out", ROWS, model=None, tok=real_tok, callbacks=[], watchdog=_Watchdog())
    assert seen["train_dataset"][0]["prompt"] == ROWS[0]["prompt"]  # raw, as before


@needs_real
def test_dpo_rows_are_conversational_when_the_target_task_asks_chat(monkeypatch, tmp_path, real_tok):
    from tunebook.runtime.methods import dpo

    seen = {}
    monkeypatch.setattr(dpo, "DPOTrainer", lambda **kw: seen.update(kw) or "trainer")
    ctx = StageContext(root=tmp_path, name="x", spec=spec({"kind": "dpo"}, [task(chat=True)]), params={})
    dpo.METHOD.build(ctx, tmp_path / "out", ROWS, model=None, tok=real_tok, callbacks=[], watchdog=None)
    row = seen["train_dataset"][0]
    assert row["chosen"] == [{"role": "assistant", "content": "42"}] and row["rejected"] == [{"role": "assistant", "content": "52"}]
    prompt = real_tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    assert prompt == chat_prompt(real_tok, ROWS[0]["prompt"])
    full = real_tok.apply_chat_template(row["prompt"] + row["chosen"], tokenize=False)
    assert full.startswith(prompt) and full[len(prompt):].rstrip() == "42<|im_end|>"  # the answer, then end of turn

    ctx = StageContext(root=tmp_path, name="x", spec=spec({"kind": "dpo"}, [task()]), params={})
    dpo.METHOD.build(ctx, tmp_path / "out", ROWS, model=None, tok=real_tok, callbacks=[], watchdog=None)
    assert seen["train_dataset"][0] == {k: ROWS[0][k] for k in ("prompt", "chosen", "rejected")}
