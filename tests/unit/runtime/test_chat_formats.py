"""Chat formatting wherever the runtime asks a model or scores text (issue 15): the judge's prompt, the
teacher's prompt, the reward model's input and a prompt set's answers, asserted token by token on
SmolLM2's real ChatML template (and the tiny model's minimal one): through the template, after the system
prompt when one is given, and the raw text when chat is off. No weights of the real model are loaded:
the causal LMs are stand-ins that record what they were fed; the reward model is a seeded 1-layer
classifier over the real vocabulary."""

from __future__ import annotations

import pytest

from tunebook.compiler.errors import SpecError
from tunebook.compiler.schema import JudgeModel, RewardEval, TeacherSpec

from .eval_helpers import TINY
from .real_helpers import GGUF, needs_real


@pytest.fixture(scope="module")
def real_tok():
    from tunebook.runtime.convert import load_tokenizer_from_gguf

    return load_tokenizer_from_gguf(GGUF)


class Recorder:
    """A causal LM stand-in: records each prompt's unpadded ids and answers `reply` to every one."""

    def __init__(self, tok, reply: str):
        import torch

        self.tok, self.reply, self.seen, self.device = tok, reply, [], torch.device("cpu")

    def generate(self, input_ids, attention_mask, max_new_tokens, num_return_sequences=1, **kw):
        import torch

        self.seen += [row[m.bool()].tolist() for row, m in zip(input_ids, attention_mask)]
        answer = torch.tensor(self.tok.encode(self.reply, add_special_tokens=False))
        rows = input_ids.repeat_interleave(num_return_sequences, dim=0)
        return torch.cat([rows, answer.expand(len(rows), -1)], dim=1)


def template_ids(tok, messages: list[dict], generation_prompt: bool = True) -> list[int]:
    """The ids the tokenizer's own apply_chat_template gives: the reference every test compares against."""
    enc = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
    return list(enc["input_ids"] if hasattr(enc, "keys") else enc)


def pieces(tok, ids: list[int]) -> list[str]:
    return [tok.decode([i]) for i in ids]


def chatml(*turns: tuple[str, str], open_assistant: bool = True) -> str:
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
    return text + ("<|im_start|>assistant\n" if open_assistant else "")


DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
QUESTION = "Which response answers 2+2 better?\nResponse A: 4\nResponse B: 5\nVerdict:"


# --- the judge ----------------------------------------------------------------------------------------


@needs_real
def test_hf_judge_prompt_is_one_user_turn_through_its_template_with_the_system_prompt(real_tok):
    from tunebook.runtime.suites.judge import HFJudge

    spec = JudgeModel(name="j", model="builtin:tiny", system="You are a strict judge.")
    j = HFJudge(None, spec, model=Recorder(real_tok, "A<|im_end|>"), tok=real_tok)
    assert (j.chat, j.format) == (True, "chat")
    assert j.ask(QUESTION) == "A"
    want = template_ids(real_tok, [{"role": "system", "content": "You are a strict judge."}, {"role": "user", "content": QUESTION}])
    assert pieces(real_tok, j.model.seen[0]) == pieces(real_tok, want) and j.model.seen == [want]
    assert real_tok.decode(j.model.seen[0]) == chatml(("system", "You are a strict judge."), ("user", QUESTION))

    # no system prompt: the template's own default one
    j = HFJudge(None, JudgeModel(name="j", model="builtin:tiny"), model=Recorder(real_tok, "B"), tok=real_tok)
    j.ask(QUESTION)
    assert j.model.seen == [template_ids(real_tok, [{"role": "user", "content": QUESTION}])]
    assert real_tok.decode(j.model.seen[0]) == chatml(("system", DEFAULT_SYSTEM), ("user", QUESTION))


@needs_real
def test_hf_judge_with_chat_off_reads_the_raw_prompt(real_tok):
    from tunebook.runtime.suites.judge import HFJudge

    j = HFJudge(None, JudgeModel(name="j", model="builtin:tiny", chat=False), model=Recorder(real_tok, "A"), tok=real_tok)
    j.ask(QUESTION)
    assert (j.format, j.model.seen) == ("raw", [real_tok(QUESTION)["input_ids"]])
    assert "<|im_start|>" not in real_tok.decode(j.model.seen[0])


def test_hf_judge_chat_follows_its_tokenizer_unless_set():
    from transformers import AutoTokenizer

    from tunebook.runtime.suites.judge import HFJudge, judge_chat

    tiny = AutoTokenizer.from_pretrained(TINY)
    plain = AutoTokenizer.from_pretrained(TINY)
    plain.chat_template = None
    assert judge_chat(JudgeModel(name="j", model="m"), tiny) is True  # judges are instruct models
    assert judge_chat(JudgeModel(name="j", model="m"), plain) is False  # a base model is prompted raw
    assert judge_chat(JudgeModel(name="j", model="m", chat=False), tiny) is False
    # the tiny template: each turn's text and a newline; no generation prompt of its own
    j = HFJudge(None, JudgeModel(name="j", model="builtin:tiny", system="Judge."), model=Recorder(tiny, "A"), tok=tiny)
    j.ask("Q?")
    assert j.model.seen == [tiny("Judge.\nQ?\n", add_special_tokens=False)["input_ids"]]
    with pytest.raises(SpecError, match="has none"):
        HFJudge(None, JudgeModel(name="j", model="builtin:tiny", system="Judge."), model=Recorder(plain, "A"), tok=plain)


def test_judge_chat_settings_are_checked_in_the_spec():
    with pytest.raises(ValueError, match="chat is for kind hf"):
        JudgeModel(name="j", kind="openai", model="m", url="http://127.0.0.1:1/v1", chat=True)
    with pytest.raises(ValueError, match="system prompt needs chat"):
        JudgeModel(name="j", model="m", chat=False, system="x")
    # unset stays unset (it follows the judge's tokenizer at run time) and is left out of the identity,
    # so the verdicts cached before `chat` existed are still found
    from tunebook.runtime.suites.judge import judge_identity

    assert "chat" not in judge_identity(JudgeModel(name="j", model="m"))
    assert judge_identity(JudgeModel(name="j", model="m", chat=False))["chat"] is False


# --- the teacher --------------------------------------------------------------------------------------


@needs_real
def test_teacher_asks_through_its_template_and_keeps_plain_prompt_completion_rows(real_tok):
    from tunebook.runtime import teacher

    t = TeacherSpec(base="builtin:tiny", chat=True, system="Answer with a number.", num_samples=2, temperature=0.7)
    lm = Recorder(real_tok, "5<|im_end|>")
    samples = teacher.generate(lm, real_tok, ["9-4=", "7-7="], t, seed=0)
    want = [template_ids(real_tok, [{"role": "system", "content": "Answer with a number."}, {"role": "user", "content": p}])
            for p in ("9-4=", "7-7=")]
    assert [pieces(real_tok, x) for x in lm.seen] == [pieces(real_tok, x) for x in want] and lm.seen == want
    assert real_tok.decode(lm.seen[0]) == chatml(("system", "Answer with a number."), ("user", "9-4="))
    assert samples == [["5", "5"], ["5", "5"]]
    kept, _ = teacher.select([{"prompt": "9-4=", "answer": "5"}, {"prompt": "7-7=", "answer": "0"}], samples, t)
    assert kept == [{"prompt": "9-4=", "completion": "5"}]  # the row's own prompt, not the rendered template

    raw = Recorder(real_tok, "5")
    teacher.generate(raw, real_tok, ["9-4="], TeacherSpec(base="builtin:tiny", chat=False, num_samples=1), seed=0)
    assert raw.seen == [real_tok("9-4=")["input_ids"]]


# --- the reward model -----------------------------------------------------------------------------------


def build_classifier(path, tok):
    """A seeded 1-layer LlamaForSequenceClassification (num_labels=1) over `tok`'s vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256, num_labels=1,
                      pad_token_id=pad)
    torch.manual_seed(0)
    LlamaForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


class Spy:
    """Wraps the reward model: records each scored row's unpadded ids."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, input_ids, attention_mask, **kw):
        self.seen += [row[m.bool()].tolist() for row, m in zip(input_ids, attention_mask)]
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kw)


@needs_real
def test_chat_reward_model_reads_the_conversation_through_its_template(real_tok, tmp_path):
    from tunebook.runtime.suites.reward import RewardScorer, eval_reward

    rm = build_classifier(tmp_path / "rm", real_tok)
    spec = RewardEval(model=str(rm), prompts="p.jsonl", chat=True, system="Be brief.")
    scorer = RewardScorer(tmp_path, spec, tmp_path / "cache")
    scorer.model = Spy(scorer.model)
    prompts, answers = ["What is 2+2?", "Name a colour."], ["4", "Blue, or perhaps a deep green."]
    out = eval_reward(scorer, spec, prompts, answers, "final", keep=2)
    want = {p: template_ids(real_tok, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": p},
                                       {"role": "assistant", "content": a}], generation_prompt=False)
            for p, a in zip(prompts, answers)}
    # padded batch (sorted by cache key), compared row by row, token by token
    got = {real_tok.decode(ids).split("user\n")[1].split("<|im_end|>")[0]: ids for ids in scorer.model.seen}
    assert {p: pieces(real_tok, ids) for p, ids in got.items()} == {p: pieces(real_tok, ids) for p, ids in want.items()}
    assert got == want
    assert real_tok.decode(want["What is 2+2?"]) == chatml(("system", "Be brief."), ("user", "What is 2+2?"), ("assistant", "4"),
                                                            open_assistant=False)
    assert scorer.format == "chat" and out["metrics"][0]["extra"]["format"] == "chat"
    assert out["metrics"][0]["extra"]["system"] == "Be brief."


def test_reward_model_without_a_template_reads_raw_text(tmp_path):
    from transformers import AutoTokenizer

    from tunebook.runtime.suites.reward import RewardScorer, eval_reward

    tok = AutoTokenizer.from_pretrained(TINY)
    tok.chat_template = None
    rm = build_classifier(tmp_path / "rm", tok)
    assert not AutoTokenizer.from_pretrained(rm).chat_template
    spec = RewardEval(model=str(rm), prompts="p.jsonl", chat=True, system="Be brief.")
    scorer = RewardScorer(tmp_path, spec, tmp_path / "cache")
    scorer.model = Spy(scorer.model)
    out = eval_reward(scorer, spec, ["31-12="], ["19"], "final", keep=1)
    assert scorer.model.seen == [tok("31-12=\n19")["input_ids"]]  # the tokenizer's own bos, no system prompt
    assert scorer.format == "raw" and out["metrics"][0]["extra"]["format"] == "raw"


# --- a prompt set's answers (what the reward model and the judges read) ------------------------------------


@needs_real
def test_prompt_set_answers_are_asked_as_the_model_was_trained(real_tok, tmp_path):
    from tunebook.files import dict_sha256
    from tunebook.runtime.suites.rows import answers

    lm = Recorder(real_tok, "4<|im_end|>")
    ps = RewardEval(model="m", prompts="p.jsonl", chat=True, system="Be brief.", max_new_tokens=4)
    assert answers(tmp_path, lm, real_tok, "w", ps, ["What is 2+2?"]) == ["4"]
    assert lm.seen == [template_ids(real_tok, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}])]

    raw = Recorder(real_tok, "4")
    ps = RewardEval(model="m", prompts="p.jsonl", chat=False, max_new_tokens=4)
    answers(tmp_path, raw, real_tok, "w", ps, ["What is 2+2?"])
    assert raw.seen == [real_tok("What is 2+2?")["input_ids"]]
    # without a system prompt the answers' cache key is what it was before system prompts existed
    key = dict_sha256(["w", {"chat": False, "max_new_tokens": 4}, ["What is 2+2?"]])[:32]
    assert (tmp_path / "_cache" / "generations" / f"{key}.json").is_file()
