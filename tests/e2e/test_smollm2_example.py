"""examples/smollm2: the real-model project shipped beside the quickstart. Its committed pipeline is the
compiled one (fast); in the slow tier, the real base model scores well above chance on the general-
knowledge tasks the project measures forgetting on, and knows no arithmetic word problems yet.
The slow tests need `pip install 'tunebook[real]'` and skip, saying so, without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.unit.runtime.real_helpers import CFG, NAME, needs_real

EXAMPLE = ROOT / "examples" / "smollm2"


def test_committed_pipeline_is_current():
    from tunebook.compiler import compile_specs, load_specs, write_pipeline
    from tunebook.compiler.load import discover

    loaded = load_specs(discover(EXAMPLE / "specs"), EXAMPLE)
    specs = {ls.spec.name: ls.spec for ls in loaded}
    # the embedded model, or (GRPO after the SFT warm-up) arith-chat's adapter merged into it
    assert {s.model.base for s in specs.values()} == {f"builtin:{NAME}", "runs/arith-chat/train/final"}
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
    from tunebook.runtime.suites.general import eval_general, task_manager

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(real_model)
    model = AutoModelForCausalLM.from_pretrained(real_model, dtype=torch.float32).eval()
    general = GeneralEval(tasks=["smol_capitals", "smol_facts"], include_path="tasks", batch_size=16)
    res = eval_general(model, tok, general, task_manager(EXAMPLE, general), "base")
    acc = {m["task"]: m["value"] for m in res["metrics"] if m["metric"] == "acc"}
    assert set(acc) == {"smol_capitals", "smol_facts"}
    assert all(v >= 0.6 for v in acc.values()), acc  # chance is 0.25


@pytest.mark.slow
@pytest.mark.e2e
@needs_real
def test_a_small_version_runs_end_to_end_offline(tmp_path, cli_env):
    """The example as a user runs it, made small: convert the model, baseline, 2 chat steps, eval,
    report. The record says what really trained (assistant tokens only, float32, no checkpointing) and
    that the target task was asked through the chat template."""
    import shutil
    import subprocess

    import yaml

    from tests.conftest import tunebook_cmd

    root = tmp_path / "smol"
    for part in ("data", "tasks", "specs"):
        shutil.copytree(EXAMPLE / part, root / part)
    (root / "specs" / "arith-completion.yaml").unlink()
    spec = yaml.safe_load((root / "specs" / "arith-chat.yaml").read_text())
    spec["data"]["sample_ratio"] = 0.05  # 20 rows
    spec["method"].update(max_steps=2, log_every=1)
    spec["eval"]["general"]["limit"] = 10
    spec["eval"]["target"][0]["limit"] = 6
    (root / "specs" / "arith-chat.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**cli_env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

    def sh(*args):
        res = subprocess.run(list(args), cwd=root, env=env, capture_output=True, text=True, timeout=1200)
        assert res.returncode == 0, f"{args}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        return res.stdout

    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    sh(*tunebook_cmd(), "compile")
    out = sh("dvc", "repro")
    assert "pretrain-smollm2-135m-instruct" in out
    rec = json.loads((root / "runs" / "arith-chat" / "record.json").read_text())
    assert rec["environment"]["builtin_build"]["gguf_sha256"] == CFG["sha256"]
    actual = rec["actual"]
    assert (actual["precision.weights_dtype"], actual["precision.autocast"], actual["method.gradient_checkpointing"]) == ("float32", "no", False)
    assert actual["loss_tokens"]["trained"] < 0.15 * actual["loss_tokens"]["total"]  # answers only, not the template
    target = [m for m in rec["metrics"] if m["suite"] == "target"]
    assert target and all(m["extra"]["chat"] for m in target) and {m["checkpoint"] for m in target} == {"base", "final"}
    base = {m["task"]: m["value"] for m in rec["metrics"] if m["suite"] == "general" and m["checkpoint"] == "base" and m["metric"] == "acc"}
    assert set(base) == {"smol_capitals", "smol_facts"}  # on 10 items each: above chance is the test above's, on all
