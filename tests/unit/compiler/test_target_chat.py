"""A target task asks the way the model was trained: through the chat template when the training data
is chat, unless it says otherwise. Resolved in the spec, so params.yaml and the baseline key show it."""

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
