"""A target task, the reward and judge prompt sets and the teacher ask the way the model was trained:
through the chat template when the training data is chat, unless they say otherwise. Resolved in the
spec, so params.yaml and the baseline key show it."""

from __future__ import annotations

import pytest

from tunebook.compiler.schema import Spec


def spec(fmt: str | None = None, **task) -> Spec:
    src = {"source": "train.jsonl", **({"format": fmt} if fmt else {})}
    return Spec.model_validate({"name": "x", "model": {"base": "builtin:tiny"}, "data": {"train": [src]},
                                "eval": {"target": [{"name": "t", "source": "test.jsonl", **task}]}})


def test_chat_follows_the_training_format():
    assert spec("messages").eval.target[0].chat is True
    assert spec("prompt_completion").eval.target[0].chat is False
    assert spec().eval.target[0].chat is False


def test_explicit_chat_and_system_win():
    assert spec("messages", chat=False).eval.target[0].chat is False
    t = spec(system="Answer with a number.").eval.target[0]
    assert (t.chat, t.system) == (True, "Answer with a number.")
    with pytest.raises(ValueError, match="system prompt needs chat"):
        spec(chat=False, system="x")


def test_resolved_value_is_stable_when_validated_again():
    s = spec("messages")
    again = Spec.model_validate({"name": "x", **s.model_dump(mode="json", exclude={"name"})})
    assert again == s


def full(fmt: str | None = None, reward: dict | None = None, judge: dict | None = None, teacher: dict | None = None) -> Spec:
    src = {"source": "train.jsonl", **({"format": fmt} if fmt else {})}
    ev = {**({"reward": {"model": "rm", "prompts": "p.jsonl", **reward}} if reward is not None else {}),
          **({"judge": {"prompts": "p.jsonl", "judges": [{"name": "j", "model": "builtin:tiny"}], **judge}} if judge is not None else {})}
    method = {"kind": "teacher-sft", "teacher": {"base": "builtin:tiny", **teacher}} if teacher is not None else {}
    return Spec.model_validate({"name": "x", "model": {"base": "builtin:tiny"}, "data": {"train": [src]},
                                **({"eval": ev} if ev else {}), **({"method": method} if method else {})})


@pytest.mark.parametrize("fmt, chat", [("messages", True), ("prompt_completion", False), ("verifiable", False), (None, False)])
def test_reward_judge_and_teacher_ask_as_the_model_was_trained(fmt, chat):
    s = full(fmt, reward={}, judge={}, teacher={})
    assert (s.eval.reward.chat, s.eval.judge.chat, s.method.teacher.chat) == (chat, chat, chat)
    assert s.eval.judge.judges[0].chat is None  # a judge's own chat follows its tokenizer, at run time


def test_prompt_set_and_teacher_explicit_chat_and_system_win():
    s = full("messages", reward={"chat": False}, judge={"chat": False}, teacher={"chat": False})
    assert (s.eval.reward.chat, s.eval.judge.chat, s.method.teacher.chat) == (False, False, False)
    s = full(reward={"system": "Be brief."}, judge={"system": "Be brief."}, teacher={"system": "Solve it."})
    assert (s.eval.reward.chat, s.eval.judge.chat, s.method.teacher.chat) == (True, True, True)
    assert (s.eval.reward.system, s.method.teacher.system) == ("Be brief.", "Solve it.")
    for part in ({"reward": {"chat": False, "system": "x"}}, {"judge": {"chat": False, "system": "x"}},
                 {"teacher": {"chat": False, "system": "x"}}):
        with pytest.raises(ValueError, match="system prompt needs chat"):
            full(**part)


def test_resolved_values_show_in_the_dump_and_unset_system_stays_out():
    """params.yaml shows a prompt set's resolved chat (false, as before the field could be unset); an unset
    system prompt and a teacher's false chat are left out, so earlier specs compile to the same bytes."""
    raw = full(reward={}, judge={}, teacher={}).model_dump(mode="json")
    assert raw["eval"]["reward"]["chat"] is False and raw["eval"]["judge"]["chat"] is False
    assert "system" not in raw["eval"]["reward"] and "system" not in raw["eval"]["judge"]
    assert not {"chat", "system"} & set(raw["method"]["teacher"]) and not {"chat", "system"} & set(raw["eval"]["judge"]["judges"][0])
    chat = full("messages", reward={}, judge={}, teacher={}).model_dump(mode="json")
    assert chat["eval"]["reward"]["chat"] and chat["eval"]["judge"]["chat"] and chat["method"]["teacher"]["chat"]
    for s in (full(reward={}, judge={}, teacher={}), full("messages", reward={"system": "S"}, judge={}, teacher={"system": "T"})):
        assert Spec.model_validate({"name": "x", **s.model_dump(mode="json", exclude={"name"})}) == s
