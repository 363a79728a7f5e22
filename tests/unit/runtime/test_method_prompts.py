"""GRPO and DPO build their own prompts from plain-text rows: `method.grpo.chat` / `method.dpo.chat`,
unset, are resolved at compile time to the way the spec's target tasks ask (compiler/schema.py
`ChatPrompts`), so they reach params.yaml and the train fingerprint. With chat each prompt goes to trl as one user
turn, and trl's rendering of it is exactly the prompt the target task evaluates on (asserted on the
real model's ChatML template); without it, plain text as before. The trainers are replaced by a stub
that keeps what they were given: no model is loaded, no step is taken."""

from __future__ import annotations


import pytest

from tunebook.compiler.schema import Spec
from tunebook.runtime.chat import chat_prompt
from tunebook.runtime.context import StageContext

from .real_helpers import GGUF, needs_real

ROWS = [{"prompt": "Tom has 12 apples and gets 30 more. How many apples does Tom have now?", "answer": "42",
         "chosen": "42", "rejected": "52"}]


def spec(method: dict, targets: list[dict]) -> Spec:
    return Spec.model_validate({"name": "x", "model": {"base": "builtin:tiny"}, "data": {"train": [{"source": "x.jsonl"}]},
                                "method": method, "eval": {"target": targets}})


def task(**kw) -> dict:
    return {"name": kw.pop("name", "arith"), "source": "t.jsonl", **kw}


def asked(method: dict, targets: list[dict], kind: str = "grpo") -> tuple[bool, str | None]:
    block = getattr(spec(method, targets).method, kind)
    return bool(block.chat), block.system


GRPO = {"kind": "grpo", "batch_size": 8, "grpo": {"rewards": ["numeric_match"], "num_generations": 4}}


def test_chat_only_when_every_target_task_asks_through_the_template():
    assert asked(GRPO, []) == (False, None)
    assert asked(GRPO, [task()]) == (False, None)  # verifiable rows alone ask raw
    assert asked(GRPO, [task(chat=True)]) == (True, None)
    assert asked(GRPO, [task(chat=True, system="Be brief.")]) == (True, "Be brief.")
    assert asked(GRPO, [task(chat=True), task(name="b", chat=False)]) == (False, None)
    assert asked(GRPO, [task(chat=True, system="A"), task(name="b", chat=True, system="B")]) == (True, None)
    assert asked({"kind": "dpo"}, [task(chat=True)], "dpo") == (True, None)  # no dpo block: one is written
    assert asked({"kind": "dpo"}, [task()], "dpo") == (False, None)


def test_the_method_block_says_so_itself_and_it_reaches_the_params():
    own = {**GRPO, "grpo": {**GRPO["grpo"], "chat": False}}
    assert asked(own, [task(chat=True)]) == (False, None)  # set on the block: as set
    own = {**GRPO, "grpo": {**GRPO["grpo"], "system": "Be brief."}}
    assert asked(own, [task()]) == (True, "Be brief.")  # a system prompt alone asks for chat
    with pytest.raises(ValueError, match="a system prompt needs chat: true"):
        spec({**GRPO, "grpo": {**GRPO["grpo"], "chat": False, "system": "x"}}, [])
    # what the train stage's params (and so its fingerprint) see: chat only when true, so raw specs keep their bytes
    raw = spec(GRPO, [task()]).method.model_dump(mode="json")["grpo"]
    assert "chat" not in raw and "system" not in raw
    chat = spec(GRPO, [task(chat=True, system="Be brief.")]).method.model_dump(mode="json")["grpo"]
    assert chat["chat"] is True and chat["system"] == "Be brief."


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
