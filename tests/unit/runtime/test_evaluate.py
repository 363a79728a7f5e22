"""The eval stage on the real tiny model: target accuracy with extraction failures, sampling settings,
held-out loss, checkpoint sweeps that resume, adapter swapping, and bad input that fails before any
compute. The lm-eval suite has its own tests in test_general.py."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunebook.compiler.errors import SpecError
from tunebook.compiler.schema import EvalSpec, ModelSpec, TargetTask
from tunebook.runtime import evaluate
from tunebook.runtime.generation import generate
from tunebook.runtime.suites import heldout, target
from tunebook.runtime.context import experiment_context

from .eval_helpers import REPO, TINY, make_project


SUBTRACTION = {"name": "subtraction", "source": "data/tiny/subtraction_test.jsonl", "max_new_tokens": 4, "limit": 30}


@pytest.fixture(scope="module")
def tiny():
    from tunebook.runtime.models import load_model, load_tokenizer

    spec = ModelSpec(base="builtin:tiny")
    return load_model(REPO, spec).eval(), load_tokenizer(REPO, spec)


# --- target accuracy, extraction failures, sampling -------------------------------------------------


def test_target_accuracy_and_extraction_failures_on_svamp_sized_set(tiny):
    model, tok = tiny
    task = TargetTask(**SUBTRACTION)
    rows = target.load_rows(REPO, task)
    res = target.eval_target(model, tok, task, rows, "base", keep=4)
    m = res["metrics"][0]
    assert m["n"] == 30 and m["value"] == sum(m["samples"]) / 30
    assert 0.4 <= m["value"] <= 1.0  # the tiny model subtracts (~74 %)
    assert m["extra"]["decoding"] == {"mode": "greedy"}
    assert m["extra"]["extraction_failure_rate"] == m["extra"]["extraction_failures"] / 30
    assert len(res["samples"]) == 4 and {s["correct"] for s in res["samples"]} <= {True, False}

    # Seed 003's "X" predictions: a method that finds nothing is a counted failure beside accuracy.
    mcq = task.model_copy(update={"extract": "mcq_word_boundary"})
    res2 = target.eval_target(model, tok, mcq, rows, "base", keep=30)
    m2 = res2["metrics"][0]
    assert m2["value"] == 0.0
    assert m2["extra"]["extraction_failures"] == 30 and m2["extra"]["extraction_failure_rate"] == 1.0
    # greedy by default, so deterministic: the second run generated exactly the same outputs
    first = {s["prompt"]: s["output"] for s in res["samples"]}
    assert all(s["output"] == first[s["prompt"]] for s in res2["samples"] if s["prompt"] in first)


def test_sampling_is_seeded_recorded_and_scores_each_item_by_its_share(tiny):
    model, tok = tiny
    task = TargetTask(**{**SUBTRACTION, "limit": 6}, temperature=1.0, top_p=0.9, num_samples=3, seed=7)
    rows = target.load_rows(REPO, task)
    a = target.eval_target(model, tok, task, rows, "base", keep=0)["metrics"][0]
    b = target.eval_target(model, tok, task, rows, "base", keep=0)["metrics"][0]
    assert a["samples"] == b["samples"]
    assert set(a["samples"]) <= {0.0, 1 / 3, 2 / 3, 1.0}
    assert a["extra"]["decoding"] == {"mode": "sample", "temperature": 1.0, "top_p": 0.9, "num_samples": 3, "seed": 7}


def test_chat_prompts_go_through_the_template_and_nothing_else(tiny):
    import torch

    model, tok = tiny
    got = generate(model, tok, ["31-12=", "9-3="], 4, 2, chat=True)
    for prompt, answers in zip(["31-12=", "9-3="], got):
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])  # the template brings its own tokens
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        assert answers == [tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)]


def test_sampling_settings_without_temperature_and_reserved_names_are_refused():
    with pytest.raises(ValueError, match="temperature > 0"):
        TargetTask(name="t", source="x.jsonl", num_samples=4)
    with pytest.raises(ValueError, match="reserved"):
        TargetTask(name="judge", source="x.jsonl")


# --- held-out loss ----------------------------------------------------------------------------------


def test_loss_on_a_trained_on_row_drops_below_the_untrained_one(tiny):
    import copy

    import torch

    base, tok = tiny
    trained_row, other_row = {"prompt": "7-3=", "completion": "9"}, {"prompt": "8-2=", "completion": "1"}
    model = copy.deepcopy(base).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # the tokens eval_loss scores: prompt + completion + end of sequence
    ids = torch.tensor([tok(trained_row["prompt"] + trained_row["completion"])["input_ids"] + [tok.eos_token_id]])
    for _ in range(15):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    before = heldout.eval_loss(base, tok, [trained_row, other_row], 32, "base")["metrics"]
    after = heldout.eval_loss(model, tok, [trained_row, other_row], 32, "ckpt")["metrics"]
    assert after[0]["samples"][0] < before[0]["samples"][0]  # learned the row
    assert after[0]["samples"][0] < after[0]["samples"][1]  # and it is lower than a row it never saw
    assert before[1]["metric"] == "perplexity" and before[1]["value"] == pytest.approx(math.exp(before[0]["value"]))
    assert before[0]["higher_is_better"] is False and before[0]["n"] == 2


# --- sweeps -----------------------------------------------------------------------------------------


def test_select_checkpoints_all_every_k_final():
    s = {"checkpoints": [{"name": f"checkpoint-{i}", "step": i} for i in (2, 4, 6)], "final": {"name": "final", "step": 6}}
    names = lambda mode: [c["name"] for c in evaluate.select_checkpoints(s, mode)]  # noqa: E731
    assert names("all") == ["checkpoint-2", "checkpoint-4", "final"]
    assert names("final") == ["final"]
    assert names(EvalSpec(checkpoints={"every": 4}).checkpoints) == ["checkpoint-4", "final"]


def test_sweep_writes_a_cell_per_checkpoint_and_a_rerun_loads_and_computes_nothing(tmp_path, monkeypatch):
    root = make_project(tmp_path, {"target": [{**SUBTRACTION, "limit": 8}], "samples_per_task": 2})
    ctx = experiment_context(root, "exp")
    evaluate.run(ctx)
    out = root / "runs" / "exp" / "eval"
    cells = sorted(str(p.relative_to(out)) for p in out.glob("*/*.json"))
    assert cells == ["base/loss.json"] + [f"{c}/{s}.json" for c in ("checkpoint-2", "checkpoint-4", "final") for s in ("loss", "subtraction")]
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/*.json")}
    # distinct adapters give distinct held-out losses: the swap really changed the model
    losses = {c: json.loads((out / c / "loss.json").read_text())["metrics"][0]["value"] for c in ("base", "checkpoint-2", "final")}
    assert len(set(losses.values())) == 3

    loads = []
    monkeypatch.setattr(evaluate.Models, "load", lambda self, path, name: loads.append(name))
    monkeypatch.setattr(target, "eval_target", lambda *a, **k: pytest.fail("recomputed a finished cell"))
    evaluate.run(ctx)
    assert loads == []  # every cell of every checkpoint was finished: no checkpoint was even loaded
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.json")} == mtimes


def test_an_edited_chat_template_is_another_cell(tmp_path, monkeypatch):
    """The weights alone do not say what a model was asked: a chat-template edit in the model folder
    reruns the cells (they would show answers to prompts no longer asked), and undoing it brings the
    first results back from the shelf."""
    root = make_project(tmp_path, {"target": [{**SUBTRACTION, "limit": 4, "chat": True}], "loss": False}, steps=())
    ctx = experiment_context(root, "exp")
    evaluate.run(ctx)
    cell = root / "runs" / "exp" / "eval" / "final" / "subtraction.json"
    first = json.loads(cell.read_text())
    template = root / "models" / "tiny" / "chat_template.jinja"
    original = template.read_text()
    template.write_text("Q: " + original)  # every prompt now starts with "Q: "

    asked = []
    real = target.eval_target
    monkeypatch.setattr(target, "eval_target", lambda *a, **k: asked.append(1) or real(*a, **k))
    evaluate.run(ctx)
    assert asked and json.loads(cell.read_text())["fingerprint"] != first["fingerprint"]

    template.write_text(original)
    asked.clear()
    evaluate.run(ctx)
    assert asked == [] and json.loads(cell.read_text()) == first  # back from the shelf, not recomputed


def test_a_dry_run_after_the_real_run_shelves_its_cells_and_they_come_back(tmp_path, monkeypatch):
    """Seed 001's bug class: a 5-step dry run must not clobber the real run's evaluation, and the eval
    folder must never mix two runs' checkpoints (the record reads every cell in it)."""
    spec = {"target": [{**SUBTRACTION, "limit": 6}]}
    root = make_project(tmp_path / "p", spec, steps=(2, 4), final_step=6)
    ctx = experiment_context(root, "exp")
    evaluate.run(ctx)
    out = root / "runs" / "exp" / "eval"
    real = {p.relative_to(out): p.read_bytes() for p in out.glob("*/*.json")}

    # the dry run: other weights (seed), one checkpoint fewer, the same names for final/
    train = root / "runs" / "exp" / "train"
    shutil.move(train, tmp_path / "real-train")
    make_project(tmp_path / "dry", spec, steps=(2,), final_step=3, seed=7)
    shutil.copytree(tmp_path / "dry" / "runs" / "exp" / "train", train)
    evaluate.run(ctx)
    now = sorted(str(p.relative_to(out)) for p in out.glob("*/*.json"))
    assert now == ["base/loss.json", "checkpoint-2/loss.json", "checkpoint-2/subtraction.json", "final/loss.json", "final/subtraction.json"]
    assert (out / "final" / "subtraction.json").read_bytes() != real[Path("final/subtraction.json")]
    assert not (out / "checkpoint-4").exists()  # the real run's checkpoint is shelved, not in the record's way

    # the real run again: every cell comes back from the shelf, nothing is computed
    shutil.rmtree(train)
    shutil.move(tmp_path / "real-train", train)
    monkeypatch.setattr(target, "eval_target", lambda *a, **k: pytest.fail("recomputed a shelved cell"))
    monkeypatch.setattr(heldout, "eval_loss", lambda *a, **k: pytest.fail("recomputed a shelved cell"))
    evaluate.run(ctx)
    assert {p.relative_to(out): p.read_bytes() for p in out.glob("*/*.json")} == real


def test_baseline_stage_evaluates_the_base_model_once_into_shared_cells(tmp_path):
    from tunebook.reports.record import Metric, Sample

    root = make_project(tmp_path, {})
    ev = {"general": None, "target": [{**SUBTRACTION, "limit": 6}]}
    params = {"baselines": {"tiny-x": {"model": {"base": "builtin:tiny"}, "eval": ev}}}
    evaluate.run_baseline(root, "tiny-x", params)
    cell = json.loads((root / "runs" / "_baselines" / "tiny-x" / "base" / "subtraction.json").read_text())
    assert cell["checkpoint"] == "base" and cell["metrics"][0]["n"] == 6
    for m in cell["metrics"]:
        Metric.model_validate(m)  # cells feed the run record as they are
    for smp in cell["samples"]:
        Sample.model_validate(smp)
    with pytest.raises(SpecError, match="no such baseline"):
        evaluate.run_baseline(root, "tiny-y", params)


def test_baseline_paths_are_confined_like_an_experiments(tmp_path):
    """`dvc exp run -S baselines...` or a hand edit bypasses the compiler: the stage checks again."""
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"prompt": "1-1=", "answer": "0"}\n')
    root = tmp_path / "p"
    root.mkdir()
    ev = {"general": None, "target": [{**SUBTRACTION, "source": "../outside.jsonl"}]}
    params = {"baselines": {"tiny-x": {"model": {"base": "builtin:tiny"}, "eval": ev}}, "exp": {"baseline": "tiny-x"}}
    with pytest.raises(SpecError) as e:
        evaluate.run_baseline(root, "tiny-x", params)
    assert "baselines.tiny-x.eval.target.0.source" in str(e.value) and "outside the project" in str(e.value)
    assert not (root / "runs").exists()
    params["exp"]["allow_external_inputs"] = True  # an experiment sharing the baseline opts in
    with pytest.raises(FileNotFoundError, match="models/tiny"):  # past the path check, on to loading
        evaluate.run_baseline(root, "tiny-x", params)


def test_adapter_swap_matches_loading_the_checkpoint_fresh(tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root = make_project(tmp_path, {})
    train = root / "runs" / "exp" / "train"
    models = evaluate.Models(root, ModelSpec(base="builtin:tiny"), lora=True)
    ids = models.tok("31-12=", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_logits = models.model(ids).logits
        models.load(train / "checkpoint-2", "checkpoint-2")
        models.load(train / "final", "final")
        swapped = models.model(ids).logits
        with models.base_view() as b:
            assert torch.allclose(b(ids).logits, base_logits)
        fresh = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(TINY), str(train / "final")).eval()(ids).logits
    assert torch.allclose(swapped, fresh, atol=1e-5) and not torch.allclose(swapped, base_logits)
    assert len(models.model.peft_config) == 1  # one adapter in memory, whatever the sweep's length

    # an adapter of another shape (r 8, not 4) cannot be copied in place: injected anew, still exact
    other = tmp_path / "r8"
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(5)
    get_peft_model(AutoModelForCausalLM.from_pretrained(TINY), LoraConfig(r=8, target_modules=["q_proj"],
                   init_lora_weights=False)).save_pretrained(other)
    models.load(other, "r8")
    with torch.no_grad():
        fresh = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(TINY), str(other)).eval()(ids).logits
        assert torch.allclose(models.model(ids).logits, fresh, atol=1e-5)
    assert list(models.model.peft_config) == ["r8"]


# --- bad input fails before any compute ---------------------------------------------------------------


def test_missing_checkpoint_or_adapter_fails_before_any_cell(tmp_path):
    root = make_project(tmp_path, {"target": [{**SUBTRACTION, "limit": 4}]})
    ctx = experiment_context(root, "exp")
    train = root / "runs" / "exp" / "train"
    (train / "checkpoint-4" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="checkpoint-4 has no LoRA adapter"):
        evaluate.run(ctx)
    shutil.rmtree(train / "checkpoint-4")
    with pytest.raises(FileNotFoundError, match="checkpoint-4 is missing: rerun `dvc repro train-exp`"):
        evaluate.run(ctx)
    assert not list((root / "runs" / "exp").glob("eval/*/*.json"))


def test_empty_prompt_file_and_missing_fields_are_spec_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text('{"prompt": "hi"}\n{"prompt": "  "}\n')
    (tmp_path / "q.jsonl").write_text('{"question": "hi"}\n')
    judge = {"judges": [{"name": "j", "model": "builtin:tiny"}]}
    for prompts, field, msg in [("empty.jsonl", "prompt", "has no rows"), ("blank.jsonl", "prompt", r"empty prompt in row\(s\) \[2\]"),
                                ("nope.jsonl", "prompt", "does not exist"), ("q.jsonl", "prompt", "no field 'prompt'")]:
        ev = EvalSpec(judge={**judge, "prompts": prompts, "prompt_field": field})
        with pytest.raises(SpecError, match=msg):
            evaluate.Evaluator(tmp_path, ev, tmp_path / "out", "t")


# --- the kill-and-resume sweep through the real CLI -------------------------------------------------------


@pytest.mark.slow
def test_sweep_killed_midway_resumes_without_recomputing_finished_cells(tmp_path, cli_env):
    root = make_project(tmp_path, {"general": {"tasks": ["tiny_facts_color"], "include_path": "data/tiny/tasks", "limit": 40},
                                   "target": [{**SUBTRACTION, "limit": 20}]}, steps=(2, 4, 6, 8), final_step=10)
    out = root / "runs" / "exp" / "eval"
    cmd = [sys.executable, "-m", "tunebook", "run", "eval", "exp"]
    proc = subprocess.Popen(cmd, cwd=root, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list(out.glob("checkpoint-*/*.json")):
        time.sleep(0.05)
    assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("*/*.json")}
    assert finished and len(finished) < 1 + 5 * 3  # killed midway

    done = subprocess.run(cmd, cwd=root, env=cli_env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    for p, mtime in finished.items():
        assert p.stat().st_mtime_ns == mtime, f"{p} was recomputed"
    cells = {str(p.relative_to(out)) for p in out.glob("*/*.json")}
    expected = {"base/loss.json"} | {f"{c}/{s}.json" for c in ("checkpoint-2", "checkpoint-4", "checkpoint-6", "checkpoint-8", "final")
                                     for s in ("general", "subtraction", "loss")}
    assert cells == expected
    assert "(cached)" in done.stderr


def test_held_out_loss_on_chat_rows():
    """transformers 5 returns a BatchEncoding from apply_chat_template unless told not to; chat
    validation data used to crash the loss cell (found by the seed studies in smoke mode)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunebook.runtime.suites.heldout import eval_loss

    tok, model = AutoTokenizer.from_pretrained(TINY), AutoModelForCausalLM.from_pretrained(TINY).eval()
    rows = [{"messages": [{"role": "user", "content": f"{a}-{b}="}, {"role": "assistant", "content": str(a - b)}]}
            for a, b in [(12, 5), (30, 7), (9, 9)]]
    [loss, ppl] = eval_loss(model, tok, rows, 32, "base")["metrics"]
    assert loss["n"] == 3 and loss["value"] > 0 and len(loss["samples"]) == 3
    assert abs(ppl["value"] - math.exp(loss["value"])) < 1e-6
