"""Scale: `resources:` compiles the train stage to `accelerate launch` with the strategy's flags;
one process on CPU runs through the very same command."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunebook.compiler.compile import launch_prefix
from tunebook.compiler.schema import ResourcesSpec

from .test_train import one_thread, project, spec_text  # noqa: F401 - fixture


def train_stage(tmp_path, resources: dict | None) -> dict:
    extra = {"resources": resources} if resources else {}
    ctx = project(tmp_path, spec_text(method={"max_steps": 2}, **extra), run_data=False)
    return yaml.safe_load((ctx.root / "dvc.yaml").read_text())["stages"]["train-exp"]


def test_no_resources_runs_plainly(tmp_path):
    st = train_stage(tmp_path, None)
    assert st["cmd"] == "tunebook run train exp" and "exp.resources" not in st["params"]


@pytest.mark.parametrize("strategy, flags", [
    ("ddp", ["--multi_gpu"]),
    ("fsdp", ["--use_fsdp", "--fsdp_sharding_strategy", "FULL_SHARD", "--fsdp_state_dict_type", "FULL_STATE_DICT"]),
    ("deepspeed", ["--use_deepspeed", "--zero_stage", "3"]),
])
def test_resources_compile_to_accelerate_launch(tmp_path, strategy, flags):
    st = train_stage(tmp_path, {"gpus": 4, "strategy": strategy, "mixed_precision": "bf16", "zero_stage": 3})
    argv = shlex.split(st["cmd"])
    assert argv[:2] == ["accelerate", "launch"] and argv[-5:] == ["-m", "tunebook", "run", "train", "exp"]
    assert argv[argv.index("--num_processes") + 1] == "4" and argv[argv.index("--mixed_precision") + 1] == "bf16"
    assert all(f in argv for f in flags)
    assert "exp.resources" in st["params"]  # more GPUs, a bigger effective batch: retrain


def test_the_flags_are_ones_accelerate_knows():
    """Every flag we emit parses with accelerate's own launch argument parser."""
    from accelerate.commands.launch import launch_command_parser

    parser = launch_command_parser()
    for strategy in ("ddp", "fsdp", "deepspeed"):
        argv = shlex.split(launch_prefix(ResourcesSpec(gpus=2, strategy=strategy)))[2:] + ["tunebook", "run", "train", "exp"]
        args = parser.parse_args(argv)
        assert args.num_processes == 2 and args.module and args.training_script == "tunebook"


@pytest.mark.slow
def test_one_process_on_cpu_through_accelerate_launch(tmp_path, cli_env):
    ctx = project(tmp_path, spec_text(method={"max_steps": 2, "log_every": 1}, resources={"gpus": 1}))
    cmd = yaml.safe_load((ctx.root / "dvc.yaml").read_text())["stages"]["train-exp"]["cmd"]
    argv = shlex.split(cmd)
    argv[0] = str(Path(sys.executable).with_name("accelerate"))  # this venv's
    res = subprocess.run(argv, cwd=tmp_path, env={**cli_env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = (ctx.run_dir / "train" / "summary.json").read_text()
    assert '"actual_steps": 2' in summary
