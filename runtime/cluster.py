"""Where heavy stages run: the project's `cluster.yaml` (beside dvc.yaml), read when a stage starts.

    # cluster.yaml -- not a parameter of any result: editing it never reruns a stage
    slurm:                       # defaults for every stage listed under `stages:`
      partition: gpu
      account: my-lab
      qos: normal
      time: "16:00:00"           # SLURM's --time; the stage resubmits itself after a walltime warning
      cpus_per_task: 8
      mem: 64G
      sbatch: ["--constraint=a100"]   # any other sbatch flag, verbatim
      signal_lead_s: 300         # --signal=B:USR1@300: seconds before the walltime to checkpoint
      max_attempts: 5            # submissions per stage run (a no-progress attempt stops earlier)
    stages:                      # stage kinds that run as SLURM jobs, each with its overrides
      train: {time: "16:00:00", gpus_per_node: 4}
      eval: {time: "02:00:00", gpus_per_node: 1, array: 4}   # 4 tasks, each every 4th checkpoint
      baseline: {time: "02:00:00", gpus_per_node: 1}
    # data, teacher, pretrain and report are not listed: they run where `dvc repro` runs

A stage kind not listed under `stages:` runs locally; `TUNEBOOK_LOCAL=1` runs every stage locally
whatever the file says (a laptop checkout of a cluster project). The number of training processes is
the spec's `resources:` (it sets the effective batch, so it is a parameter); the train job's nodes and
GPUs follow it unless the file says otherwise.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CLUSTER_FILE = "cluster.yaml"
KINDS = ("pretrain", "data", "teacher", "train", "baseline", "eval", "report")
_TIME = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")


class ClusterError(RuntimeError):
    """A cluster setting or a SLURM job that stops the stage; the message says what to do."""

    exit_code = 1


class JobRequest(BaseModel):
    """One stage's sbatch request; `stages.<kind>` overrides any of these for that kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = Field("01:00:00", description="SLURM --time: minutes, MM:SS, HH:MM:SS or D-HH:MM:SS")
    nodes: int | None = Field(None, gt=0, description="train: the spec's resources.nodes unless set")
    gpus_per_node: int | None = Field(None, ge=0, description="train: the spec's resources.gpus unless set; 0 on a CPU cluster")
    cpus_per_task: int | None = Field(None, gt=0)
    mem: str | None = Field(None, description="SLURM --mem, e.g. 64G")
    sbatch: list[str] = Field(default_factory=list, description="further sbatch flags, verbatim, e.g. --constraint=a100")
    signal_lead_s: int = Field(120, ge=10, description="the walltime warning comes this many seconds before the end")
    max_attempts: int = Field(5, gt=0, description="submissions before the stage gives up")
    poll_s: float = Field(1.0, gt=0, description="how often the job's state is asked for")
    array: int | None = Field(None, gt=1, description="eval only: a job array of this many tasks, each evaluating every "
                                                       "n-th checkpoint; one last plain job gathers the cells")

    @field_validator("time")
    @classmethod
    def _time(cls, v: str) -> str:
        if not _TIME.match(v):
            raise ValueError(f"time {v!r}: use minutes, MM:SS, HH:MM:SS or D-HH:MM:SS as SLURM's --time does")
        return v

    @field_validator("sbatch")
    @classmethod
    def _flags(cls, v: list[str]) -> list[str]:
        bad = [f for f in v if not f.startswith("--") or "\n" in f]
        if bad:
            raise ValueError(f"sbatch flags must each be one `--flag[=value]`: {bad}")
        return v


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scheduler: Literal["slurm"] = "slurm"
    slurm: dict = Field(default_factory=dict, description="JobRequest defaults")
    stages: dict[str, dict | None] = Field(default_factory=dict, description="kind -> overrides of the defaults")

    @field_validator("stages")
    @classmethod
    def _kinds(cls, v: dict) -> dict:
        unknown = [k for k in v if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown stage kind(s) {unknown}; stage kinds are {', '.join(KINDS)}")
        return v

    def request(self, kind: str) -> JobRequest | None:
        """The merged request for a stage kind, or None when that kind runs locally."""
        if kind not in self.stages:
            return None
        req = JobRequest.model_validate({**self.slurm, **(self.stages[kind] or {})})
        if req.array and kind != "eval":
            raise ValueError(f"stages.{kind}.array: only the eval stage fans out as a job array (one task per "
                             f"n-th checkpoint)")
        return req


def load(root: Path) -> ClusterConfig | None:
    path = root / CLUSTER_FILE
    if not path.exists():
        return None
    try:
        cfg = ClusterConfig.model_validate(yaml.safe_load(path.read_text()) or {})
        for kind in cfg.stages:
            cfg.request(kind)  # every override validated now, not when that stage first runs
        return cfg
    except (yaml.YAMLError, ValidationError, ValueError) as e:
        raise ClusterError(f"{path.name}: {e}") from None


def job_request(root: Path, kind: str) -> JobRequest | None:
    """What this stage kind asks SLURM for, or None to run it here."""
    if os.environ.get("TUNEBOOK_LOCAL") == "1" or os.environ.get("TUNEBOOK_JOB") == "1":
        return None  # asked to stay local, or already inside the job
    cfg = load(root)
    return cfg.request(kind) if cfg else None
