"""Scale: `resources:` is a param of the train stage; the runtime starts its processes through
torch.distributed.run (ddp) or accelerate launch (fsdp, deepspeed), one process without a launcher."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tunebook.compiler.schema import ResourcesSpec
from tunebook.runtime.launch import launch_env, launch_words, run_locally

from .train_helpers import project, spec_text

pytestmark = pytest.mark.usefixtures("one_thread")


def train_stage(tmp_path, resources: dict | None) -> dict:
    extra = {"resources": resources} if resources else {}
    ctx = project(tmp_path, spec_text(method={"max_steps": 2}, **extra), run_data=False)
    return yaml.safe_load((ctx.root / "dvc.yaml").read_text())["stages"]["train-exp"]


def test_no_resources_runs_plainly(tmp_path):
    st = train_stage(tmp_path, None)
    assert st["cmd"] == "tunebook run train exp" and "exp.resources" not in st["params"]


def test_resources_are_a_param_not_a_command(tmp_path):
    """The launch is the runtime's (it differs between a laptop and a SLURM job); the processes set the
    global batch, so resources stay a param of the stage."""
    st = train_stage(tmp_path, {"gpus": 4, "strategy": "fsdp"})
    assert st["cmd"] == "tunebook run train exp" and "exp.resources" in st["params"]


@pytest.mark.parametrize("strategy, flags", [
    ("fsdp", ["--use_fsdp", "--fsdp_sharding_strategy=FULL_SHARD", "--fsdp_state_dict_type=FULL_STATE_DICT"]),
    ("deepspeed", ["--use_deepspeed", "--zero_stage=3"]),
])
def test_fsdp_and_deepspeed_launch_through_accelerate(strategy, flags):
    res = ResourcesSpec(gpus=4, strategy=strategy, mixed_precision="bf16", zero_stage=3)
    argv = launch_words(res, "python", "exp")
    assert argv[:3] == ["python", "-m", "accelerate.commands.launch"] and argv[-5:] == ["-m", "tunebook", "run", "train", "exp"]
    assert "--num_processes=4" in argv and "--mixed_precision=bf16" in argv and all(f in argv for f in flags)


def test_ddp_launches_through_torch_distributed_run():
    assert launch_words(ResourcesSpec(gpus=1), "python", "exp") is None  # one process: no launcher
    argv = launch_words(ResourcesSpec(gpus=2), "python", "exp")
    assert argv == ["python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tunebook", "run", "train", "exp"]
    assert launch_env(ResourcesSpec(gpus=2, mixed_precision="bf16"))["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_the_flags_are_ones_the_launchers_know():
    """Every flag we emit parses with accelerate's and torch.distributed.run's own argument parsers."""
    from accelerate.commands.launch import launch_command_parser
    from torch.distributed.run import get_args_parser

    parser = launch_command_parser()
    for strategy in ("fsdp", "deepspeed"):
        argv = launch_words(ResourcesSpec(gpus=2, strategy=strategy), "python", "exp")[3:]
        args = parser.parse_args(argv)
        assert args.num_processes == 2 and args.module and args.training_script == "tunebook"
    for res in (ResourcesSpec(gpus=2), ResourcesSpec(gpus=2, nodes=2)):
        argv = launch_words(res, "python", "exp")
        argv = argv[argv.index("torch.distributed.run") + 1:]
        args = get_args_parser().parse_args(argv)
        assert args.nproc_per_node == "2" and args.module and args.training_script == "tunebook"


def test_several_nodes_need_slurm(tmp_path):
    from tunebook.runtime.cluster import ClusterError

    with pytest.raises(ClusterError, match="needs a SLURM allocation"):
        run_locally(tmp_path, ResourcesSpec(gpus=2, nodes=2), "exp")


# The same global batch (8) as 1 x 8 and 2 x 4 on gloo, LoRA dropout off (each rank draws its own masks).
# Measured here: losses agree to ~1e-6 relative, adapter weights to ~7e-6 absolute (largest weight ~0.1):
# float sums split differently across two ranks, nothing else.
LOSS_RTOL, ADAPTER_ATOL = 1e-4, 1e-4


def _train_cli(tmp_path, cli_env, procs: int, anchor: dict | None = None):
    extra = {"resources": {"gpus": procs}} if procs > 1 else {}
    method = {"max_steps": 6, "log_every": 1, "save_every": 3, "batch_size": 8 // procs, "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}
    if anchor:
        method["anchor"] = anchor
    ctx = project(tmp_path, spec_text(method=method, **extra))
    res = subprocess.run([sys.executable, "-m", "tunebook", "run", "train", "exp"], cwd=tmp_path, env=cli_env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return ctx.run_dir / "train", res.stdout + res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("anchor", [None, {"type": "kl", "coef": 0.5}], ids=["sft", "kl-anchor"])
def test_two_gloo_processes_match_one_at_the_same_global_batch(tmp_path, cli_env, anchor):
    """With the KL anchor this caught two bugs: the anchored loss skipped Trainer's rescaling of a
    globally normalized loss (2 processes trained at half the task loss), and the anchor was a mean
    of per-rank means."""
    import json

    import torch
    from safetensors.torch import load_file

    one, _ = _train_cli(tmp_path / "one", cli_env, 1, anchor)
    two, log = _train_cli(tmp_path / "two", cli_env, 2, anchor)
    assert "torch.distributed.run --standalone --nproc_per_node=2" in log
    h1, h2 = (json.loads((d / "history.json").read_text()) for d in (one, two))
    l1 = [h["values"]["loss"] for h in h1 if "loss" in h["values"]]
    l2 = [h["values"]["loss"] for h in h2 if "loss" in h["values"]]
    assert len(l1) == len(l2) == 6
    torch.testing.assert_close(torch.tensor(l2), torch.tensor(l1), rtol=LOSS_RTOL, atol=0)
    a1, a2 = (load_file(d / "final" / "adapter_model.safetensors") for d in (one, two))
    assert a1.keys() == a2.keys()
    for k in a1:
        torch.testing.assert_close(a2[k], a1[k], rtol=0, atol=ADAPTER_ATOL)
    s2 = json.loads((two / "summary.json").read_text())
    assert s2["world_size"] == 2 and s2["effective_batch"] == 8  # the global batch is what is recorded
    assert sorted(p.name for p in two.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]  # rank 0 wrote once


def test_one_process_keeps_its_mixed_precision(tmp_path, monkeypatch):
    """One process runs without a launcher; `resources.mixed_precision` still reaches the trainer."""
    import os

    from tunebook.runtime import stages

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    ctx = project(tmp_path, spec_text(method={"max_steps": 1}, resources={"gpus": 1, "mixed_precision": "bf16"}), run_data=False)
    seen = {}
    monkeypatch.setattr("tunebook.runtime.train.run", lambda c: seen.update(mp=os.environ.get("ACCELERATE_MIXED_PRECISION")))
    monkeypatch.setattr(stages, "_cpu_threads", lambda kind: None)
    stages.run_stage(ctx.root, "train", "exp")
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert seen == {"mp": "bf16"}
