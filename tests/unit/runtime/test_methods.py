"""Training methods behind one protocol (runtime/methods/): the compiler's table and the runtime's
registry list the same kinds, a kind registers once, the train stage names no kind, and each method's
rows: where they come from and what shape they must have."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tunebook.compiler.errors import SpecError
from tunebook.compiler.schema import METHOD_BLOCKS, MethodSpec, Spec
from tunebook.runtime.context import StageContext
from tunebook.runtime.methods import METHODS, method_for
from tunebook.runtime.registry import Registry
from tunebook.runtime.methods.sft import SFT


def ctx_for(tmp_path: Path, method: dict) -> StageContext:
    spec = Spec.model_validate({"name": "x", "model": {"base": "builtin:tiny"}, "data": {"train": [{"source": "x.jsonl"}]},
                                "method": method})
    return StageContext(root=tmp_path, name="x", spec=spec, params={})


def test_the_compiler_and_the_runtime_list_the_same_kinds():
    assert list(METHODS) == list(METHOD_BLOCKS)
    assert all(m.kind == k for k, m in METHODS.items())
    # the schema's `kind` choices are the table's
    assert MethodSpec.model_json_schema()["properties"]["kind"]["enum"] == list(METHOD_BLOCKS)


def test_a_kind_registers_once():
    with pytest.raises(ValueError, match="training method 'sft' is defined twice"):
        Registry.of("training method", [SFT(), SFT()], lambda m: m.kind)
    with pytest.raises(KeyError, match="no training method 'ppo'; registered: sft, grpo, dpo, teacher-sft"):
        method_for("ppo")


def test_the_train_stage_names_no_method_kind():
    """train.py looks the method up; a kind spelled out there is dispatch that belongs in runtime/methods/."""
    tree = ast.parse((ROOT / "runtime" / "train.py").read_text())
    named = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in METHODS]
    assert named == []


def test_each_block_belongs_to_the_kinds_the_table_gives_it():
    with pytest.raises(ValueError, match="`anchor:` is used only when kind is sft or teacher-sft"):
        MethodSpec.model_validate({"kind": "dpo", "anchor": {"coef": 0.1}})
    with pytest.raises(ValueError, match="kind teacher-sft needs a `teacher:` block, e.g. teacher:"):
        MethodSpec.model_validate({"kind": "teacher-sft"})
    with pytest.raises(ValueError, match="packing is for SFT kinds only"):
        MethodSpec.model_validate({"kind": "dpo", "packing": True})
    MethodSpec.model_validate({"kind": "teacher-sft", "teacher": {"base": "builtin:tiny"}, "anchor": {"coef": 0.1}, "packing": True})


def test_rows_come_from_the_data_stage_or_the_teacher(tmp_path):
    ctx = ctx_for(tmp_path, {"kind": "sft"})
    assert method_for("sft").rows_file(ctx) == tmp_path / "data" / "x" / "train.jsonl"
    assert method_for("dpo").rows_file(ctx) == tmp_path / "data" / "x" / "train.jsonl"
    assert method_for("teacher-sft").rows_file(ctx) == tmp_path / "runs" / "x" / "teacher" / "train.jsonl"
    assert method_for("teacher-sft").rows_stage == "teacher" and method_for("grpo").rows_stage == "data"


def test_rows_of_the_wrong_shape_are_refused_with_the_format_to_set(tmp_path):
    ctx, path = ctx_for(tmp_path, {"kind": "sft"}), tmp_path / "train.jsonl"
    chat = [{"messages": [{"role": "user", "content": "1+1="}, {"role": "assistant", "content": "2"}]}]
    method_for("sft").check_rows(ctx, chat, path)  # chat rows are SFT rows too
    method_for("sft").check_rows(ctx, [{"prompt": "1+1=", "completion": "2"}], path)
    with pytest.raises(SpecError, match=r"kind dpo trains on \{prompt, chosen, rejected\} rows; train.jsonl lacks chosen, rejected") as e:
        method_for("dpo").check_rows(ctx, [{"prompt": "1+1=", "completion": "2"}], path)
    assert "format: preference" in e.value.issues[0].hint
    with pytest.raises(SpecError, match="format: verifiable"):
        method_for("grpo").check_rows(ctx, chat, path)
    with pytest.raises(SpecError, match="the teacher kept no solutions"):
        method_for("teacher-sft").check_rows(ctx, [], path)
    with pytest.raises(SpecError, match="train.jsonl: no rows"):
        method_for("sft").check_rows(ctx, [], path)


def test_grpo_checks_its_reward_names_before_loading_a_model(tmp_path):
    ctx = ctx_for(tmp_path, {"kind": "grpo", "batch_size": 8, "grpo": {"rewards": ["numeric_matc"], "num_generations": 4}})
    with pytest.raises(SpecError, match="unknown reward 'numeric_matc'"):
        method_for("grpo").preflight(ctx)
    method_for("sft").preflight(ctx)  # nothing to check
