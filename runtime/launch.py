"""How the train stage's processes start: torch's own launchers, never one of ours.

    resources: {gpus: 4}                     # python -m torch.distributed.run --standalone --nproc_per_node=4
    resources: {gpus: 4, nodes: 2}           # srun, one torch.distributed.run per node, c10d rendezvous
    resources: {gpus: 8, strategy: fsdp}     # python -m accelerate.commands.launch --use_fsdp ...

`ddp` goes through `python -m torch.distributed.run` (the CPU torch wheel installs no `torchrun`
script; on CPU the ranks talk gloo), `fsdp` and `deepspeed` through `accelerate launch`, whose flags
configure them. One process on one node needs no launcher: the stage runs in its own process. On
several nodes, rank, world size and the master address come from SLURM's environment (the job's first
node is the rendezvous host), so `nodes > 1` needs a SLURM job (cluster.yaml); the batch script
tunebook renders holds the launch line (runtime/slurm.py). Launched ranks see `TUNEBOOK_LAUNCHED=1`
and run the stage itself; Hugging Face's Trainer and accelerate take rank and world size from the
launcher's environment, and only rank 0 writes files (runtime/train.py).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tunebook.runtime.cluster import ClusterError

MASTER_PORT = "29500"


def needs_launcher(res) -> bool:
    return res is not None and (res.gpus > 1 or getattr(res, "nodes", 1) > 1 or res.strategy != "ddp")


def launch_env(res) -> dict[str, str]:
    """What the launched ranks read besides the launcher's own variables: the mixed precision
    (TrainingArguments reads ACCELERATE_MIXED_PRECISION, as under `accelerate launch`)."""
    env = {"TUNEBOOK_LAUNCHED": "1"}
    if res is not None and res.mixed_precision != "no":
        env["ACCELERATE_MIXED_PRECISION"] = res.mixed_precision
    return env


def _accelerate_flags(res, nodes: int) -> list[str]:
    flags = [f"--num_processes={res.gpus * nodes}", f"--num_machines={nodes}", f"--mixed_precision={res.mixed_precision}",
             "--dynamo_backend=no"]
    if res.strategy == "fsdp":
        # full state dicts: checkpoints stay plain Hugging Face folders that the eval stage loads
        flags += ["--use_fsdp", "--fsdp_sharding_strategy=FULL_SHARD", "--fsdp_auto_wrap_policy=TRANSFORMER_BASED_WRAP",
                  "--fsdp_state_dict_type=FULL_STATE_DICT"]
    elif res.strategy == "deepspeed":
        flags += ["--use_deepspeed", f"--zero_stage={res.zero_stage}"]
    elif res.gpus * nodes > 1:
        flags.append("--multi_gpu")
    return flags


def launch_words(res, python: str, name: str) -> list[str] | None:
    """The launch as shell words (`$VAR`s expand in the batch script), or None for one plain process.
    On several nodes the words start with `srun`: one launcher per node."""
    if not needs_launcher(res):
        return None
    nodes = getattr(res, "nodes", 1)
    stage = ["-m", "tunebook", "run", "train", name]
    if res.strategy == "ddp":
        if nodes == 1:
            return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={res.gpus}", *stage]
        # c10d rendezvous at the first node: every node runs the same line, no per-node rank to pass
        return ["srun", f"--nodes={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                python, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--nproc_per_node={res.gpus}",
                "--rdzv_backend=c10d", "--rdzv_endpoint=$MASTER_ADDR:$MASTER_PORT", "--rdzv_id=$SLURM_JOB_ID", *stage]
    words = [python, "-m", "accelerate.commands.launch", *_accelerate_flags(res, nodes)]
    if nodes == 1:
        return words + stage
    inner = shlex.join(words) + ' --machine_rank="$SLURM_NODEID" --main_process_ip="$MASTER_ADDR" ' \
        '--main_process_port="$MASTER_PORT" ' + shlex.join(stage)
    return ["srun", f"--nodes={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "bash", "-c", inner]


def shell_line(words: list[str]) -> str:
    """Words to one shell line: `$VAR` words in double quotes (they expand), the rest quoted plainly."""
    return " ".join(f'"{w}"' if "$" in w and not re.search(r"[\s\"'\\`]", w) else shlex.quote(w) for w in words)


def run_locally(root: Path, res, name: str) -> int:
    """Run the train stage under its launcher on this machine (no SLURM): one node only."""
    if getattr(res, "nodes", 1) > 1:
        raise ClusterError(f"resources.nodes: {res.nodes} needs a SLURM allocation: list `train` under `stages:` in "
                           f"cluster.yaml (docs/cluster.md), or set nodes: 1 to train on this machine")
    words = launch_words(res, sys.executable, name)
    print(f"[launch] {shlex.join(words)}", flush=True)
    return subprocess.run(words, cwd=root, env={**os.environ, **launch_env(res)}).returncode
