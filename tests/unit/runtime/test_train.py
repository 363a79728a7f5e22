"""The train stage on the tiny model: LoRA and full SFT, packing, dry runs that never overwrite a full
run, kill-and-resume, early stopping. Every run is a few steps; each test asserts the weights moved.

The helpers (`project`, `train`, `weights`) live in train_helpers.py, shared with the other
test_train-family files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from .train_helpers import history, lora_b_norm, project, spec_text, train, weights

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lora_sft_trains_logs_and_marks_dry_run(tmp_path):
    ctx = project(tmp_path, spec_text(method={"max_steps": 6, "save_every": 3}))
    s = train(ctx)
    out = ctx.run_dir / "train"
    assert lora_b_norm(out / "final") > 0
    assert s["actual_steps"] == s["planned_steps"] == 6 and s["dry_run"] is True
    assert [c["name"] for c in s["checkpoints"]] == ["checkpoint-3", "checkpoint-6"]
    for folder in ("checkpoint-3", "final"):  # no machine path, no hash-seed order: same files in any checkout
        adapter = json.loads((out / folder / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == "builtin:tiny", adapter["base_model_name_or_path"]
        assert adapter["target_modules"] == sorted(adapter["target_modules"])
    assert set(s["timings"]) >= {"training", "evaluation", "model_io"} and s["timings"]["training"] > 0
    steps = [h["step"] for h in history(ctx) if "loss" in h["values"]]
    assert steps == [2, 4, 6]
    # dvclive: one .tsv per metric with the optimizer step as x, where dvc.yaml's top-level plot looks
    tsv = (out / "dvclive" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()
    assert tsv[0].split("\t")[0] == "step" and [int(r.split("\t")[0]) for r in tsv[1:]] == [2, 4, 6]


def test_full_fine_tuning_changes_the_base_weights(tmp_path):
    ctx = project(tmp_path, spec_text(method={"lora": None, "lr": 1e-3, "max_steps": 3, "log_every": 1}))
    s = train(ctx)
    before, after = weights(tmp_path / "models" / "tiny"), weights(ctx.run_dir / "train" / "final")
    changed = [k for k in before if k in after and not (before[k] == after[k]).all()]
    assert len(changed) > len(before) // 2
    assert s["trainable_params"] > 500_000  # all of the ~0.8M parameters train


def test_packing_and_options_reach_the_trainer(tmp_path):
    ctx = project(tmp_path, spec_text(method={"packing": True, "max_steps": 3, "grad_accum": 2, "scheduler": "cosine",
                                              "warmup_ratio": 0.3, "weight_decay": 0.01, "max_grad_norm": 0.5}))
    train(ctx)
    state = json.loads((ctx.run_dir / "train" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == state["max_steps"] == 3 and state["train_batch_size"] == 8
    assert lora_b_norm(ctx.run_dir / "train" / "final") > 0


def test_a_dry_run_never_overwrites_a_full_run(tmp_path):
    """Seed 002: a 5-step dry run overwrote the real run, and the dry run's model was evaluated."""
    full_text = spec_text(method={"epochs": 1, "log_every": 4})  # 96 rows / batch 8 = 12 steps
    ctx = project(tmp_path, full_text)
    full = train(ctx)
    out = ctx.run_dir / "train"
    full_weights = weights(out / "final")
    assert full["dry_run"] is False and full["actual_steps"] == 12

    dry_ctx = project(tmp_path, spec_text(method={"epochs": 1, "log_every": 4, "max_steps": 2}), run_data=False)
    dry = train(dry_ctx)
    assert dry["dry_run"] is True and dry["actual_steps"] == 2 and dry["outputs"] == "new"
    assert dry["shelf"] == [{"path": dry["shelf"][0]["path"], "dry_run": False, "actual_steps": 12, "complete": True}]
    shelved = tmp_path / dry["shelf"][0]["path"]
    kept = weights(shelved / "final")
    assert kept.keys() == full_weights.keys() and all((kept[k] == full_weights[k]).all() for k in kept)

    again = train(project(tmp_path, full_text, run_data=False))  # the full params come back: nothing retrains
    assert again["outputs"] == "restored" and again["dry_run"] is False and again["actual_steps"] == 12
    assert again["resumed_from"] == "checkpoint-12"
    restored = weights(out / "final")
    assert all((restored[k] == full_weights[k]).all() for k in full_weights)
    assert [s["dry_run"] for s in again["shelf"]] == [True]  # the dry run is kept aside in turn

    dry_again = train(dry_ctx)  # and the dry run comes back as it was: 2 steps, not one more per return
    assert dry_again["outputs"] == "restored" and dry_again["actual_steps"] == 2
    assert [c["name"] for c in dry_again["checkpoints"]] == ["checkpoint-2"] and (out / "final").is_dir()


def test_a_finished_run_is_not_trained_again(tmp_path, capsys):
    """transformers 5, resumed at a max_steps it already reached, runs one more step per call."""
    ctx = project(tmp_path, spec_text(method={"max_steps": 3, "log_every": 1}))
    first = train(ctx)
    out = ctx.run_dir / "train"
    before = weights(out / "final")
    capsys.readouterr()
    again = train(ctx)
    assert "this run already finished: 3 steps" in capsys.readouterr().out
    assert again["actual_steps"] == first["actual_steps"] == 3 and again["outputs"] == "continued"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    after = weights(out / "final")
    assert all((after[k] == before[k]).all() for k in before)
    assert [h["step"] for h in history(ctx)] == [h["step"] for h in json.loads((out / "history.json").read_text())]

    (out / "final" / "adapter_model.safetensors").write_bytes(b"cut short")  # a final/ that is not whole
    repaired = train(ctx)
    assert repaired["final"]["step"] == 3 and weights(out / "final").keys() == before.keys()
    assert repaired["actual_steps"] == 3 and repaired["train_loss"] == pytest.approx(first["train_loss"], rel=1e-3)


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_steps(tmp_path, cli_env):
    ctx = project(tmp_path, spec_text(method={"epochs": 2, "batch_size": 4, "save_every": 5, "log_every": 5}))
    out = ctx.run_dir / "train"
    env = {**cli_env, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tunebook", "-C", str(tmp_path), "run", "train", "exp"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "checkpoint-10" / "trainer_state.json").exists():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed:\n" + proc.stdout.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists())
    assert 10 <= killed_at < 48 and not (out / "summary.json").exists()

    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resuming from checkpoint-" in res.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["actual_steps"] == s["planned_steps"] == 48  # 96 rows / 4 per step x 2 epochs
    resumed = int(s["resumed_from"].split("-")[1])
    assert resumed >= killed_at - 5  # at most the checkpoint being written when killed is lost
    logged = [h["step"] for h in history(ctx) if "loss" in h["values"]]
    assert logged == list(range(5, 49, 5))  # every logged step exactly once: none lost, none redone
    state = json.loads((out / f"checkpoint-{s['final']['step']}" / "trainer_state.json").read_text())
    assert state["global_step"] == 48


def test_early_stopping_keeps_the_best_checkpoint(tmp_path):
    # min_delta larger than any change: no measurement after the first counts as better, so the run
    # stops after `patience` more measurements and delivers the first one's checkpoint.
    es = {"on": "loss", "every": 2, "patience": 2, "min_delta": 100.0, "limit": 16}
    ctx = project(tmp_path, spec_text(method={"epochs": 1, "early_stopping": es}))
    s = train(ctx)
    assert s["actual_steps"] == 6 < s["planned_steps"] == 12
    assert s["best_checkpoint"]["name"] == "checkpoint-2" and s["final"]["step"] == 2
    assert s["stopped_early"].startswith("early stopping: held-out loss") and s["evaluated_during_training"] is True
    assert s["timings"]["evaluation"] > 0
    scores = [h["values"]["early_stopping/score"] for h in history(ctx) if "early_stopping/score" in h["values"]]
    assert len(scores) == 3
    best = weights(ctx.run_dir / "train" / "checkpoint-2")
    final = weights(ctx.run_dir / "train" / "final")
    assert all((final[k] == best[k]).all() for k in best if "lora" in k)


@pytest.mark.slow
def test_early_stopping_on_the_general_suite(tmp_path):
    ev = {"general": {"tasks": ["tiny_facts_color"], "include_path": "data/tiny/tasks"}}
    es = {"on": "general", "every": 3, "patience": 5, "limit": 20}
    ctx = project(tmp_path, spec_text(method={"max_steps": 6, "early_stopping": es}, eval=ev))
    s = train(ctx)
    scores = [h for h in history(ctx) if "early_stopping/score" in h["values"]]
    assert [h["step"] for h in scores] == [3, 6]
    assert all(0 <= h["values"]["early_stopping/score"] <= 1 for h in scores)
    assert s["best_checkpoint"]["measured"].startswith("general acc (tiny_facts_color, limit 20)")
    assert s["final"]["step"] == s["best_checkpoint"]["step"] and s["stopped_early"] is None


def test_dvclive_writes_its_files_in_a_git_repo_with_no_commit(tmp_path, monkeypatch):
    """dvclive's repository hook raised "Empty git repo" there, and ran `dvc init` in a git repo
    without DVC: tunebook's logger writes the metric files and touches nothing else."""
    import subprocess

    from tunebook.runtime.train import files_only_live

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    live = files_only_live(tmp_path / "run" / "dvclive")
    live.step = 3
    live.log_metric("loss", 0.5)
    live.make_summary()
    assert (tmp_path / "run/dvclive/plots/metrics/loss.tsv").read_text().splitlines()[1].startswith("3\t")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".git", "run"]  # no .dvc, no dvc.yaml


def test_max_steps_is_a_run_length_and_marks_only_a_run_it_cut_short(tmp_path):
    """Issue 12: any max_steps marked the run a dry run (❌ in the log); in HF trainers it is how one sets
    the run length. 16 rows at batch 8 are 2 steps an epoch: max_steps 4 runs two epochs, not a dry run."""
    data = {"train": [{"source": "data/tiny/subtraction_train.jsonl", "limit": 16}]}
    ctx = project(tmp_path, spec_text(method={"max_steps": 4, "epochs": 1}, data=data))
    s = train(ctx)
    assert s["actual_steps"] == 4 and s["epoch_steps"] == 2 and s["epochs_run"] == 2.0
    assert s["dry_run"] is False
    short = project(tmp_path, spec_text(method={"max_steps": 1, "epochs": 2}, data=data), run_data=False)
    s = train(short)
    assert s["epoch_steps"] == 4 and s["epochs_run"] == 0.5 and s["dry_run"] is True
