"""A stage as a SLURM job: render the batch script, `sbatch` it, stream its log, wait, resubmit after a
walltime warning until done. SLURM schedules; tunebook only submits and watches.

    tunebook run train <exp>       # with `train` listed in cluster.yaml: runs as SLURM job(s)

DVC runs the stage command as always and hashes the outputs when it returns; the job runs the same
`tunebook run <kind> <name>` inside the allocation (`TUNEBOOK_JOB=1` keeps it from submitting again).
Every attempt (job id, node, start, end, state, exit code, why it ended, progress before and after) is
written to `runs/.jobs/<stage>/attempts.json`, read by the report stage into the record, and each job's
log is `runs/.jobs/<stage>/<jobid>.log`. Ctrl-C (or a SIGTERM from DVC) cancels the job with `scancel`.

Resubmission: an attempt that got the walltime warning (or ended TIMEOUT) and moved the stage on
(training: a later checkpoint; evaluation: more finished cells) is followed by a fresh submission (a
requeued job keeps its id, but SLURM 22.05 holds it ~2 minutes; a new one starts at once), at most
`max_attempts` in all. An attempt that made no progress stops the stage with what to change.
Accounting may be off (`sacct` then knows nothing): the job's state comes from `scontrol show job`,
with `sacct` as the fallback once slurmctld has forgotten the job.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tunebook.runtime.cluster import ClusterError, JobRequest
from tunebook.runtime.launch import MASTER_PORT, launch_env, launch_words, shell_line
from tunebook.files import write_json_atomic

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
            "DEADLINE", "REVOKED", "SPECIAL_EXIT"}
WHY = {  # what a user does about each way a job can end badly
    "OUT_OF_MEMORY": "the job ran out of memory: raise `mem` for this stage in cluster.yaml (or lower the batch size)",
    "NODE_FAIL": "its node failed: rerun `dvc repro`; finished checkpoints and cells are kept",
    "CANCELLED": "it was cancelled (scancel, an administrator, or a time limit before it started)",
    "BOOT_FAIL": "its node did not boot: rerun `dvc repro`",
    "PREEMPTED": "it was preempted: rerun `dvc repro`, or ask for a QOS without preemption",
    "FAILED": "the stage failed inside the job: its log above says why",
}


def jobs_dir(root: Path, stage: str) -> Path:
    return root / "runs" / ".jobs" / stage


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Attempt:
    attempt: int
    job_id: str | None = None
    submitted: str | None = None
    node: str | None = None
    start: str | None = None
    end: str | None = None
    state: str | None = None
    exit_code: int | None = None
    walltime_warned: bool = False
    reason: str | None = None  # why it ended, in words
    progress_before: int = 0  # training: checkpoint step; evaluation: finished cells
    progress_after: int = 0
    log: str | None = None


@dataclass
class JobInfo:
    state: str = "UNKNOWN"
    exit_code: int | None = None
    signal: int | None = None
    node: str | None = None
    start: str | None = None
    end: str | None = None
    reason: str | None = None
    raw: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# the batch script


def job_shape(kind: str, req: JobRequest, res) -> tuple[int, int]:
    """(nodes, gpus per node): train follows the spec's resources unless cluster.yaml says otherwise."""
    nodes = req.nodes or (getattr(res, "nodes", 1) if kind == "train" and res else 1)
    gpus = req.gpus_per_node if req.gpus_per_node is not None else (res.gpus if kind == "train" and res else 0)
    return nodes, gpus


def render_script(*, root: Path, kind: str, name: str, req: JobRequest, res=None, python: str = sys.executable,
                  attempt: int = 1, gather: bool = False) -> str:
    """The sbatch script of one attempt, deterministic for the same inputs (golden files pin it).
    `gather`: the plain job that follows an eval array (finds every cell done, writes the summary)."""
    stage = f"{kind}-{name}"
    out = jobs_dir(root, stage)
    nodes, gpus = job_shape(kind, req, res)
    launched = launch_words(res, python, name) if kind == "train" else None
    words = launched or [python, "-m", "tunebook", "run", kind, name]
    array = req.array if kind == "eval" and not gather else None
    sb = [f"--job-name=tb-{stage}", f"--output={out}/{'%A_%a' if array else '%j'}.log", f"--time={req.time}",
          f"--signal=B:USR1@{req.signal_lead_s}", f"--nodes={nodes}", "--ntasks-per-node=1"]
    if array:
        sb.append(f"--array=0-{array - 1}")
    for key, flag in (("partition", "partition"), ("account", "account"), ("qos", "qos"), ("cpus_per_task", "cpus-per-task"),
                      ("mem", "mem")):
        if getattr(req, key) is not None:
            sb.append(f"--{flag}={getattr(req, key)}")
    if gpus:
        sb.append(f"--gpus-per-node={gpus}")
    sb += req.sbatch
    env = {"TUNEBOOK_JOB": "1", **(launch_env(res) if launched else {})}
    lines = ["#!/bin/bash",
             f"# tunebook stage {stage} as a SLURM job, attempt {attempt} of {req.max_attempts} (rendered by runtime/slurm.py)",
             *[f"#SBATCH {f}" for f in sb],
             "set -u",
             f"cd {shlex.quote(str(root))}",
             *[f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]]
    if array:  # task i evaluates checkpoints i, i+n, ...; all tasks share the array's id for the flag
        lines += [f'export TUNEBOOK_EVAL_SHARD="$SLURM_ARRAY_TASK_ID/{array}"',
                  f'export TUNEBOOK_WALLTIME_FLAG={shlex.quote(str(out))}/walltime-"$SLURM_ARRAY_JOB_ID"']
    else:
        lines.append(f'export TUNEBOOK_WALLTIME_FLAG={shlex.quote(str(out))}/walltime-"$SLURM_JOB_ID"')
    if nodes > 1:
        lines += ['# rank 0 of the rendezvous: the first node of the allocation',
                  'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
                  f"export MASTER_PORT={MASTER_PORT}"]
    forward = 'kill -USR1 "$child" 2>/dev/null' if not launched else \
        ":  # the launcher would die of USR1: the ranks read the flag file instead"
    lines += [
        f'echo "[tunebook] job $SLURM_JOB_ID, attempt {attempt}, on $(hostname) from $(date -u +%Y-%m-%dT%H:%M:%SZ)"',
        "warned() {",
        '  echo "[tunebook] walltime warning at $(date -u +%H:%M:%S): the stage checkpoints and exits"',
        '  touch "$TUNEBOOK_WALLTIME_FLAG"',
        f"  {forward}",
        "}",
        "trap warned USR1",
        shell_line(words) + " &",
        "child=$!",
        "# a trapped signal ends `wait` early (status > 128): wait again until the stage has exited, then once",
        "# more for its own status (bash keeps it): a warning as it exited must not stand in for it (exit 138)",
        'while kill -0 "$child" 2>/dev/null; do',
        '  wait "$child"',
        "done",
        'wait "$child"; rc=$?',
        'echo "[tunebook] stage exited $rc at $(date -u +%Y-%m-%dT%H:%M:%SZ)"',
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# talking to SLURM


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ClusterError(f"cluster.yaml sends this stage to SLURM, but `{name}` is not on PATH. On a machine "
                           f"without SLURM run the stages here with TUNEBOOK_LOCAL=1 (e.g. `TUNEBOOK_LOCAL=1 dvc repro`), "
                           f"or remove the stage from `stages:` in cluster.yaml")
    return path


def submit(script: Path) -> str:
    res = subprocess.run([_tool("sbatch"), "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip()
        raise ClusterError(f"SLURM refused the job ({script}): {msg}. Nothing ran and nothing was lost; "
                           f"fix the request in cluster.yaml and rerun")
    return res.stdout.strip().split(";")[0]


def _slurm_time(v: str | None) -> str | None:
    if not v or v in ("Unknown", "None", "N/A"):
        return None
    return v


def _exit(v: str | None) -> tuple[int | None, int | None]:
    try:
        code, sig = (v or "").split(":")
        return int(code), int(sig)
    except ValueError:
        return None, None


def job_info(job_id: str) -> JobInfo:
    """The job's state from slurmctld (`scontrol show job`), else from accounting (`sacct`)."""
    res = subprocess.run([_tool("scontrol"), "show", "job", "-o", job_id], capture_output=True, text=True, timeout=60)
    if res.returncode == 0 and res.stdout.strip():
        tasks = []  # one line per job, or per task of a job array
        for line in res.stdout.strip().splitlines():
            kv = dict(w.split("=", 1) for w in shlex.split(line) if "=" in w)
            code, sig = _exit(kv.get("ExitCode"))
            node = kv.get("BatchHost") or kv.get("NodeList")
            tasks.append(JobInfo(state=kv.get("JobState", "UNKNOWN"), exit_code=code, signal=sig, node=_slurm_time(node),
                                 start=_slurm_time(kv.get("StartTime")), end=_slurm_time(kv.get("EndTime")),
                                 reason=_slurm_time(kv.get("Reason")), raw=kv))
        return tasks[0] if len(tasks) == 1 else _merge(tasks)
    if shutil.which("sacct"):
        acc = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State,ExitCode,NodeList,Start,End"],
                             capture_output=True, text=True, timeout=60)
        rows = [r.split("|") for r in acc.stdout.splitlines() if r.strip()]
        if acc.returncode == 0 and rows and len(rows[0]) == 5:
            state, ec, node, start, end = rows[0]
            code, sig = _exit(ec)
            return JobInfo(state=state.split()[0], exit_code=code, signal=sig, node=node, start=_slurm_time(start),
                           end=_slurm_time(end))
    return JobInfo()


def _merge(tasks: list[JobInfo]) -> JobInfo:
    """A job array as one job: running while any task is; then the first task that ended badly, or
    COMPLETED with exit 0 when all did."""
    live = [t for t in tasks if t.state.split()[0] not in TERMINAL]
    bad = [t for t in tasks if t.state.split()[0] != "COMPLETED" or t.exit_code != 0]
    head = live[0] if live else (bad[0] if bad else tasks[0])
    starts, ends = [t.start for t in tasks if t.start], [t.end for t in tasks if t.end]
    return JobInfo(state=head.state, exit_code=head.exit_code, signal=head.signal, reason=head.reason,
                   node=",".join(sorted({t.node for t in tasks if t.node})) or None,
                   start=min(starts) if starts else None, end=max(ends) if ends and not live else None)


def cancel(job_id: str) -> None:
    if shutil.which("scancel"):
        subprocess.run(["scancel", job_id], capture_output=True, timeout=60)


class _Tail:
    """Print what the job writes to its log (an array: each task's log), as it writes it."""

    def __init__(self, folder: Path, job_id: str):
        self.folder, self.job_id, self.pos = folder, job_id, {}

    def pump(self) -> None:
        for path in [self.folder / f"{self.job_id}.log", *sorted(self.folder.glob(f"{self.job_id}_*.log"))]:
            try:
                with path.open("rb") as f:
                    f.seek(self.pos.get(path, 0))
                    chunk = f.read()
            except FileNotFoundError:
                continue
            if chunk:
                self.pos[path] = self.pos.get(path, 0) + len(chunk)
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()


def wait(job_id: str, folder: Path, poll_s: float) -> JobInfo:
    tail = _Tail(folder, job_id)
    info = JobInfo()
    while True:
        info = job_info(job_id)
        tail.pump()
        if info.state.split()[0] in TERMINAL:
            break
        time.sleep(poll_s)
    for _ in range(5):  # the file system may show the log's last lines a moment later
        tail.pump()
        time.sleep(0.05)
    return info


# ---------------------------------------------------------------------------------------------------
# progress: what an attempt must move for a resubmission to make sense


def _run_id(root: Path, kind: str, name: str) -> str | None:
    """Which training run the train folder holds (runtime/train.py shelves a run of other params)."""
    if kind != "train":
        return None
    try:
        return json.loads((root / "runs" / name / "train" / "fingerprint.json").read_text()).get("fingerprint")
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def progress(root: Path, kind: str, name: str) -> int:
    """Training: the step of the last complete checkpoint; evaluation: the finished cell files."""
    if kind == "train":
        steps = [int(p.parent.name.split("-")[1]) for p in (root / "runs" / name / "train").glob("checkpoint-*/trainer_state.json")]
        return max(steps, default=0)
    folder = {"eval": root / "runs" / name / "eval", "baseline": root / "runs" / "_baselines" / name}.get(kind)
    return sum(1 for _ in folder.glob("*/*.json")) if folder and folder.exists() else 0


# ---------------------------------------------------------------------------------------------------
# the stage


def _save(path: Path, record: dict) -> None:
    write_json_atomic(path, record)


def _load_attempts(path: Path, stage: str) -> dict:
    """Attempts since the stage last completed: a new `dvc repro` after a failure keeps the history."""
    try:
        prev = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        prev = None
    if not prev or prev.get("outcome") == "completed":
        return {"stage": stage, "started": now(), "outcome": "running", "attempts": []}
    return {**prev, "outcome": "running"}


def read_attempts(root: Path, stage: str) -> dict | None:
    try:
        return json.loads((jobs_dir(root, stage) / "attempts.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class _Interrupted(Exception):
    pass


def _raise_interrupt(signum, frame):  # noqa: ARG001
    raise _Interrupted(signal.Signals(signum).name)


def run_as_job(root: Path, kind: str, name: str, req: JobRequest, res=None) -> None:
    """Submit the stage, stream and wait; resubmit after walltime warnings; raise on anything else."""
    root = root.resolve()
    stage = f"{kind}-{name}"
    out = jobs_dir(root, stage)
    out.mkdir(parents=True, exist_ok=True)
    rec_path = out / "attempts.json"
    rec = _load_attempts(rec_path, stage)
    first = len(rec["attempts"]) + 1
    gather = False  # after a completed eval array: one plain job gathers the cells and writes the summary
    for n in range(first, first + req.max_attempts):
        script = out / "job.sh"
        script.write_text(render_script(root=root, kind=kind, name=name, req=req, res=res, attempt=n, gather=gather))
        a = Attempt(attempt=n, progress_before=progress(root, kind, name))
        run_before = _run_id(root, kind, name)
        job_id = submit(script)
        log = f"{job_id}_*.log" if kind == "eval" and req.array and not gather else f"{job_id}.log"
        a.job_id, a.submitted, a.log = job_id, now(), str((out / log).relative_to(root))
        rec["attempts"].append(asdict(a))
        _save(rec_path, rec)
        print(f"[slurm] {stage}: submitted job {job_id} (attempt {n}, --time={req.time}); log {a.log}", flush=True)
        old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
        try:
            info = wait(job_id, out, req.poll_s)
        except (KeyboardInterrupt, _Interrupted) as e:
            cancel(job_id)
            a.state, a.end, a.reason = "CANCELLED", now(), f"interrupted here ({type(e).__name__ if isinstance(e, KeyboardInterrupt) else e}): scancel {job_id}"
            rec["attempts"][-1], rec["outcome"] = asdict(a), "interrupted"
            _save(rec_path, rec)
            print(f"[slurm] {stage}: cancelled job {job_id}", file=sys.stderr, flush=True)
            raise KeyboardInterrupt from None
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        flag = out / f"walltime-{job_id}"
        state = info.state.split()[0]
        a.state, a.exit_code, a.node, a.start, a.end = state, info.exit_code, info.node, info.start, info.end or now()
        a.walltime_warned = flag.exists()
        a.progress_after = progress(root, kind, name)
        if _run_id(root, kind, name) != run_before:  # the job started a run of other params: it begins at 0
            a.progress_before = 0
        done = state == "COMPLETED" and info.exit_code == 0
        walltime = not done and (a.walltime_warned or state == "TIMEOUT")
        if done:
            a.reason = "completed"
        elif walltime:
            how = "checkpointed and exited to be resubmitted" if info.exit_code == 75 else f"ended {state}, exit {info.exit_code}"
            a.reason = f"walltime warning: {how}; progress {a.progress_before} to {a.progress_after}"
        else:
            a.reason = f"{state}: {WHY.get(state, info.reason or 'see the job log')}"
        rec["attempts"][-1] = asdict(a)
        if done and kind == "eval" and req.array and not gather:
            _save(rec_path, rec)
            print(f"[slurm] {stage}: array job {job_id} completed on {a.node}; a last job gathers the cells", flush=True)
            gather = True
            continue
        if done:
            rec["outcome"] = "completed"
            _save(rec_path, rec)
            print(f"[slurm] {stage}: job {job_id} completed on {a.node} (attempt {n})", flush=True)
            return
        if not walltime:
            rec["outcome"] = "failed"
            _save(rec_path, rec)
            raise ClusterError(f"{stage}: SLURM job {job_id} ended {state} (exit code {info.exit_code}) on {a.node}: "
                               f"{WHY.get(state, info.reason or 'see the log')}. Log: {a.log}; attempts: "
                               f"{rec_path.relative_to(root)}")
        if a.progress_after <= a.progress_before:
            rec["outcome"] = "no progress"
            _save(rec_path, rec)
            unit = "checkpoint step" if kind == "train" else "finished cells"
            raise ClusterError(f"{stage}: attempt {n} (job {job_id}) reached its walltime without progress ({unit} still "
                               f"{a.progress_after}); resubmitting would loop. Raise `time` (or lower `signal_lead_s`) for "
                               f"`{kind}` in cluster.yaml, or save checkpoints more often (method.save_every). Log: {a.log}")
        _save(rec_path, rec)
        print(f"[slurm] {stage}: job {job_id} hit its walltime at progress {a.progress_after}; resubmitting", flush=True)
    rec["outcome"] = "gave up"
    _save(rec_path, rec)
    raise ClusterError(f"{stage}: {req.max_attempts} attempts, each cut by the walltime, and the stage is not done; "
                       f"raise `time` or `max_attempts` for `{kind}` in cluster.yaml and rerun (progress is kept)")
