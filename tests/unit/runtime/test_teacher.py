"""Teacher-SFT: the teacher stage samples, verifies and records its pass rate; train fine-tunes on
what it kept; the compiled pipeline caches generation as its own stage."""

from __future__ import annotations

import json

import pytest
import yaml

from tunebook.compiler.schema import TeacherSpec
from tunebook.runtime.teacher import select

from .train_helpers import lora_b_norm, project, spec_text, train

pytestmark = pytest.mark.usefixtures("one_thread")

VERIFIABLE = {"train": [{"source": "data/tiny/subtraction_train.jsonl", "limit": 24, "format": "verifiable",
                         "fields": {"answer": "completion"}}]}
TEACHER = {"base": "builtin:tiny", "num_samples": 3, "temperature": 1.0, "max_new_tokens": 4, "keep_per_prompt": 2}


def test_rejection_sampling_keeps_distinct_verified_solutions():
    rows = [{"prompt": "9-4=", "answer": "5"}, {"prompt": "7-7=", "answer": "0"}]
    samples = [["5", " 5", "6", "5</s>"], ["1", "2", "3", "4"]]
    kept, log = select(rows, samples, TeacherSpec(base="x", keep_per_prompt=3))
    assert kept == [{"prompt": "9-4=", "completion": "5"}, {"prompt": "9-4=", "completion": "5</s>"}]  # " 5" is "5" again
    assert [s["kept"] for s in log] == [True, False, False, True, False, False, False, False]
    assert sum(s["reward"] for s in log) == 3.0


def test_teacher_stage_then_sft_on_its_solutions(tmp_path):
    from tunebook.runtime import teacher

    method = {"kind": "teacher-sft", "max_steps": 3, "log_every": 1, "teacher": TEACHER}
    ctx = project(tmp_path, spec_text(method=method, data=VERIFIABLE))
    teacher.run(ctx)
    out = ctx.run_dir / "teacher"
    m = json.loads((out / "manifest.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").open()]
    kept = [json.loads(line) for line in (out / "train.jsonl").open()]
    assert m["prompts"] == 24 and m["samples"] == len(samples) == 72
    assert m["passed"] == sum(s["reward"] >= 1 for s in samples) and m["pass_rate"] == round(m["passed"] / 72, 6)
    assert 0 < m["kept_rows"] == len(kept) <= 48 and m["prompts_with_a_pass"] <= 24
    answers = {s["prompt"]: s["answer"] for s in samples}
    assert all(row["completion"].strip().startswith(answers[row["prompt"]]) for row in kept)  # verified, every one

    s = train(ctx)
    assert s["method"] == "teacher-sft" and s["teacher"]["pass_rate"] == m["pass_rate"]
    assert lora_b_norm(ctx.run_dir / "train" / "final") > 0


def test_teacher_generation_is_its_own_cached_stage(tmp_path):
    method = {"kind": "teacher-sft", "teacher": TEACHER}
    ctx = project(tmp_path, spec_text(method=method, data=VERIFIABLE), run_data=False)
    stages = yaml.safe_load((ctx.root / "dvc.yaml").read_text())["stages"]
    t = stages["teacher-exp"]
    assert t["cmd"] == "tunebook run teacher exp" and t["params"] == ["exp.method.teacher"]
    assert t["outs"] == ["runs/exp/teacher"] and "models/tiny" in t["deps"]
    assert "runs/exp/teacher" in stages["train-exp"]["deps"]
    names = list(stages)
    assert names.index("data-exp") < names.index("teacher-exp") < names.index("train-exp")


def test_teacher_stage_with_chat_asks_through_the_template_and_writes_plain_rows(tmp_path, monkeypatch):
    """teacher.chat: every prompt reaches the teacher as one user turn after the system prompt, rendered by
    its template; the kept rows are the training rows' own prompts with the completions ({prompt,
    completion}, what train-<exp> reads), and the manifest says how the teacher was asked."""
    from transformers import AutoTokenizer

    from tunebook.runtime import generation, teacher
    from tunebook.runtime.chat import chat_prompt

    data = {"train": [{**VERIFIABLE["train"][0], "limit": 4}]}
    method = {"kind": "teacher-sft", "teacher": {**TEACHER, "chat": True, "system": "Subtract."}}
    ctx = project(tmp_path, spec_text(method=method, data=data))
    assert yaml.safe_load((ctx.root / "params.yaml").read_text())["exp"]["method"]["teacher"]["system"] == "Subtract."
    rows = [json.loads(line) for line in (ctx.data_dir / "train.jsonl").open()]
    seen = []

    def answer_right(model, tok, ids, max_new_tokens, batch_size, *, num_samples=1, **kw):
        seen.extend(ids)  # the teacher answers every prompt correctly, so every prompt keeps a row
        return [[rows[len(seen) - len(ids) + i]["answer"]] * num_samples for i in range(len(ids))]

    monkeypatch.setattr(generation, "generate_ids", answer_right)
    teacher.run(ctx)
    tok = AutoTokenizer.from_pretrained(ctx.root / "models" / "tiny")
    assert seen == [tok(chat_prompt(tok, r["prompt"], "Subtract."), add_special_tokens=False)["input_ids"] for r in rows]
    assert tok.decode(seen[0]) == f"Subtract.\n{rows[0]['prompt']}\n"  # the tiny template: each turn and a newline
    out = ctx.run_dir / "teacher"
    kept = [json.loads(line) for line in (out / "train.jsonl").open()]
    assert kept == [{"prompt": r["prompt"], "completion": r["answer"]} for r in rows]
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "chat" and m["teacher"]["chat"] is True and m["teacher"]["system"] == "Subtract."


def test_teacher_chat_follows_the_training_format_and_hides_false():
    """Unset, the teacher asks as the student trains (raw for teacher-SFT's verifiable rows); false is left
    out of params.yaml so a spec from before the field compiles to the same bytes."""
    t = TeacherSpec(base="builtin:tiny", chat=False)
    assert "chat" not in t.model_dump(mode="json") and "system" not in t.model_dump(mode="json")
    assert TeacherSpec(base="builtin:tiny", chat=True).model_dump(mode="json")["chat"] is True
    with pytest.raises(ValueError, match="system prompt needs chat"):
        TeacherSpec(base="builtin:tiny", chat=False, system="x")
