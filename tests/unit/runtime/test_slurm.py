"""Stages as SLURM jobs, without SLURM: the batch scripts tunebook renders (golden files, as submitit
pins its sbatch scripts), and the submit / wait / resubmit / fail / cancel logic against fake `sbatch`,
`scontrol` and `scancel` scripts. The real thing runs in tests/cluster (`make test-cluster`).

Regenerate the golden files after an intended change with
    TUNEBOOK_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/runtime/test_slurm.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, like_a_terminal
from tunebook.compiler.schema import ResourcesSpec
from tunebook.runtime import cluster, slurm
from tunebook.runtime.cluster import ClusterError, JobRequest

GOLDEN = Path(__file__).parent / "golden"
PROJECT, PYTHON = Path("/project"), "/venv/bin/python"
SEED001 = JobRequest(partition="gpu", account="lab", qos="normal", time="16:00:00", cpus_per_task=8, mem="64G",
                     sbatch=["--constraint=a100"], signal_lead_s=300)

CASES = {
    "train-one-process": dict(kind="train", req=JobRequest(time="1", signal_lead_s=30), res=None),
    "train-ddp-4-gpus": dict(kind="train", req=SEED001, res=ResourcesSpec(gpus=4)),
    "train-ddp-2-nodes": dict(kind="train", req=SEED001, res=ResourcesSpec(gpus=4, nodes=2)),
    "train-fsdp-2-nodes": dict(kind="train", req=SEED001, res=ResourcesSpec(gpus=4, nodes=2, strategy="fsdp", mixed_precision="bf16")),
    "eval": dict(kind="eval", req=JobRequest(partition="gpu", time="02:00:00", gpus_per_node=1), res=None),
    "eval-array": dict(kind="eval", req=JobRequest(partition="gpu", time="02:00:00", gpus_per_node=1, array=4), res=None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_sbatch_script(case):
    c = CASES[case]
    text = slurm.render_script(root=PROJECT, kind=c["kind"], name="exp", req=c["req"], res=c["res"], python=PYTHON)
    path = GOLDEN / f"{case}.sbatch"
    if os.environ.get("TUNEBOOK_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text()


def test_scripts_are_valid_bash():
    for case, c in CASES.items():
        text = slurm.render_script(root=PROJECT, kind=c["kind"], name="exp", req=c["req"], res=c["res"], python=PYTHON)
        res = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
        assert res.returncode == 0, (case, res.stderr)


def test_two_nodes_take_rank_and_master_from_slurm():
    text = (GOLDEN / "train-ddp-2-nodes.sbatch").read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --gpus-per-node=4" in text
    assert 'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"' in text
    assert "srun --nodes=2 --ntasks-per-node=1" in text and '"--rdzv_endpoint=$MASTER_ADDR:$MASTER_PORT"' in text
    fsdp = (GOLDEN / "train-fsdp-2-nodes.sbatch").read_text()
    assert '--machine_rank="$SLURM_NODEID"' in fsdp and "--num_processes=8" in fsdp and "--num_machines=2" in fsdp


def test_cluster_file_validates_and_merges(tmp_path):
    (tmp_path / "cluster.yaml").write_text("slurm: {partition: gpu, time: '16:00:00'}\nstages: {train: {gpus_per_node: 4}, eval: null}\n")
    cfg = cluster.load(tmp_path)
    assert cfg.request("train").gpus_per_node == 4 and cfg.request("train").partition == "gpu"
    assert cfg.request("eval").time == "16:00:00" and cfg.request("data") is None
    (tmp_path / "cluster.yaml").write_text("stages: {trian: {}}\n")
    with pytest.raises(ClusterError, match="unknown stage kind"):
        cluster.load(tmp_path)
    (tmp_path / "cluster.yaml").write_text("slurm: {time: 'two hours'}\nstages: {train: null}\n")
    with pytest.raises(ClusterError, match="time 'two hours'"):
        cluster.load(tmp_path)


def test_local_override_and_inside_a_job(tmp_path, monkeypatch):
    (tmp_path / "cluster.yaml").write_text("stages: {train: null}\n")
    assert cluster.job_request(tmp_path, "train") is not None
    monkeypatch.setenv("TUNEBOOK_LOCAL", "1")
    assert cluster.job_request(tmp_path, "train") is None
    monkeypatch.delenv("TUNEBOOK_LOCAL")
    monkeypatch.setenv("TUNEBOOK_JOB", "1")
    assert cluster.job_request(tmp_path, "train") is None


# ---------------------------------------------------------------------------------------------------
# fake SLURM: sbatch hands out ids, scontrol reports what the test wrote to $FAKE/state-<id>, scancel notes

FAKE_SBATCH = """#!/bin/bash
if [ -f "$FAKE/reject" ]; then cat "$FAKE/reject" >&2; exit 1; fi
n=$(( $(cat "$FAKE/next" 2>/dev/null || echo 100) + 1 )); echo $n > "$FAKE/next"
cp "${@: -1}" "$FAKE/script-$n"
[ -f "$FAKE/on-submit" ] && bash "$FAKE/on-submit" $n
echo "$n"
"""
FAKE_SCONTROL = """#!/bin/bash
id=${@: -1}
[ -f "$FAKE/state-$id" ] && cat "$FAKE/state-$id" || echo "JobId=$id JobState=RUNNING ExitCode=0:0 BatchHost=n1"
"""
FAKE_SCANCEL = """#!/bin/bash
echo "$1" >> "$FAKE/cancelled"
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    bin_, state = tmp_path / "bin", tmp_path / "fake"
    bin_.mkdir()
    state.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("scontrol", FAKE_SCONTROL), ("scancel", FAKE_SCANCEL)):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE", str(state))
    root = tmp_path / "proj"
    root.mkdir()
    return root, state


def ended(state: Path, job: int, job_state: str, code: int = 0) -> None:
    (state / f"state-{job}").write_text(f"JobId={job} JobState={job_state} Reason=None ExitCode={code}:0 BatchHost=n1 "
                                        f"StartTime=2026-11-30T10:00:00 EndTime=2026-11-30T10:01:00\n")


REQ = JobRequest(time="1", poll_s=0.05, max_attempts=3)


def test_a_completed_job_is_one_attempt_in_the_record(fake):
    root, state = fake
    ended(state, 101, "COMPLETED")
    slurm.run_as_job(root, "eval", "exp", REQ)
    rec = slurm.read_attempts(root, "eval-exp")
    assert rec["outcome"] == "completed" and len(rec["attempts"]) == 1
    a = rec["attempts"][0]
    assert (a["job_id"], a["node"], a["state"], a["exit_code"]) == ("101", "n1", "COMPLETED", 0)
    assert a["start"] == "2026-11-30T10:00:00" and a["end"] == "2026-11-30T10:01:00"


@pytest.mark.parametrize("job_state, words", [
    ("OUT_OF_MEMORY", "ran out of memory: raise `mem`"),
    ("NODE_FAIL", "its node failed"),
    ("CANCELLED", "cancelled"),
    ("FAILED", "failed inside the job"),
])
def test_a_job_that_ends_badly_fails_the_stage_with_its_reason(fake, job_state, words):
    root, state = fake
    ended(state, 101, job_state, 1)
    with pytest.raises(ClusterError, match=f"ended {job_state}") as e:
        slurm.run_as_job(root, "train", "exp", REQ)
    assert words in str(e.value) and "runs/.jobs/train-exp/101.log" in str(e.value)
    rec = slurm.read_attempts(root, "train-exp")
    assert rec["outcome"] == "failed" and rec["attempts"][0]["state"] == job_state


def _checkpoint(root: Path, step: int) -> None:
    d = root / "runs/exp/train" / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "trainer_state.json").write_text("{}")


def test_walltime_with_progress_resubmits_until_done(fake):
    root, state = fake
    # job 101 checkpoints step 40 after its warning; job 102 finishes
    (state / "on-submit").write_text(
        f'if [ $1 = 101 ]; then mkdir -p {root}/runs/exp/train/checkpoint-40 && echo {{}} > {root}/runs/exp/train/checkpoint-40/trainer_state.json;'
        f' touch {root}/runs/.jobs/train-exp/walltime-101; fi\n')
    ended(state, 101, "FAILED", 75)
    ended(state, 102, "COMPLETED")
    slurm.run_as_job(root, "train", "exp", REQ)
    rec = slurm.read_attempts(root, "train-exp")
    assert [a["job_id"] for a in rec["attempts"]] == ["101", "102"] and rec["outcome"] == "completed"
    first = rec["attempts"][0]
    assert first["walltime_warned"] and (first["progress_before"], first["progress_after"]) == (0, 40)
    assert "checkpointed and exited to be resubmitted" in first["reason"]
    assert "attempt 2 of 3" in (state / "script-102").read_text()


def test_walltime_without_progress_stops_with_what_to_change(fake):
    root, state = fake
    _checkpoint(root, 40)
    ended(state, 101, "TIMEOUT", 0)
    with pytest.raises(ClusterError, match="without progress") as e:
        slurm.run_as_job(root, "train", "exp", REQ)
    assert "Raise `time`" in str(e.value)
    assert slurm.read_attempts(root, "train-exp")["outcome"] == "no progress"


def test_sbatch_missing_names_the_setting_and_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    with pytest.raises(ClusterError, match="`sbatch` is not on PATH") as e:
        slurm.run_as_job(tmp_path, "train", "exp", REQ)
    assert "TUNEBOOK_LOCAL=1" in str(e.value) and "cluster.yaml" in str(e.value)


def test_a_refused_request_fails_with_slurms_message(fake):
    root, state = fake
    (state / "reject").write_text("sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    with pytest.raises(ClusterError, match="SLURM refused the job.*Invalid partition name specified"):
        slurm.run_as_job(root, "train", "exp", REQ)


def test_ctrl_c_cancels_the_job(fake):
    root, state = fake
    code = ("import sys; from pathlib import Path; from tunebook.runtime import slurm; from tunebook.runtime.cluster import JobRequest;"
            f"slurm.run_as_job(Path({str(root)!r}), 'train', 'exp', JobRequest(poll_s=0.05))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=like_a_terminal)
    for _ in range(200):
        if (state / "script-101").exists():
            break
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode != 0 and (state / "cancelled").read_text().split() == ["101"], out + err
    rec = json.loads((root / "runs/.jobs/train-exp/attempts.json").read_text())
    assert rec["outcome"] == "interrupted" and "scancel 101" in rec["attempts"][0]["reason"]


def test_status_shows_each_stage_and_its_job(fake, monkeypatch):
    from tunebook.runtime import status

    root, state = fake
    (root / "dvc.yaml").write_text("stages:\n  data-exp: {cmd: x}\n  train-exp: {cmd: x}\n  eval-exp: {cmd: x}\n")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages:\n  data-exp: {cmd: x}\n  train-exp: {cmd: x}\n")
    monkeypatch.setattr(status, "_dvc_status", lambda root: {"train-exp": [{"changed deps": {}}]})
    (state.parent / "bin" / "squeue").write_text("#!/bin/bash\necho 'PENDING QOSMaxMemoryPerUser'\n")
    (state.parent / "bin" / "squeue").chmod(0o755)
    jobs = root / "runs/.jobs/train-exp"
    jobs.mkdir(parents=True)
    (jobs / "attempts.json").write_text(json.dumps({"outcome": "running", "attempts": [{"job_id": "8847627"}]}))
    table = {r["stage"]: r for r in status.rows(root)}
    assert [table[s]["state"] for s in ("data-exp", "train-exp", "eval-exp")] == ["done", "stale", "pending"]
    assert table["train-exp"]["job"] == "8847627" and table["train-exp"]["slurm"] == "PENDING QOSMaxMemoryPerUser"
    assert "| train-exp | stale | 8847627 | PENDING QOSMaxMemoryPerUser | 1 |" in status.render(list(table.values()))


def test_an_eval_array_then_one_job_that_gathers(fake):
    root, state = fake
    # the array (101): scontrol shows one line per task; then the gathering job (102, a plain one)
    (state / "state-101").write_text(
        "JobId=101 ArrayJobId=101 ArrayTaskId=0 JobState=COMPLETED ExitCode=0:0 BatchHost=n1 StartTime=2026-11-30T10:00:00 EndTime=2026-11-30T10:02:00\n"
        "JobId=901 ArrayJobId=101 ArrayTaskId=1 JobState=COMPLETED ExitCode=0:0 BatchHost=n2 StartTime=2026-11-30T10:00:01 EndTime=2026-11-30T10:03:00\n")
    ended(state, 102, "COMPLETED")
    slurm.run_as_job(root, "eval", "exp", JobRequest(poll_s=0.05, array=2))
    rec = slurm.read_attempts(root, "eval-exp")
    first, last = rec["attempts"]
    assert first["node"] == "n1,n2" and first["end"] == "2026-11-30T10:03:00" and first["log"].endswith("101_*.log")
    assert "#SBATCH --array=0-1" in (state / "script-101").read_text()
    assert "--array" not in (state / "script-102").read_text() and rec["outcome"] == "completed"


def test_an_array_task_that_fails_fails_the_stage(fake):
    root, state = fake
    (state / "state-101").write_text(
        "JobId=101 ArrayJobId=101 ArrayTaskId=0 JobState=COMPLETED ExitCode=0:0 BatchHost=n1\n"
        "JobId=901 ArrayJobId=101 ArrayTaskId=1 JobState=OUT_OF_MEMORY ExitCode=0:125 BatchHost=n2\n")
    with pytest.raises(ClusterError, match="ended OUT_OF_MEMORY"):
        slurm.run_as_job(root, "eval", "exp", JobRequest(poll_s=0.05, array=2))


def test_only_eval_fans_out(tmp_path):
    (tmp_path / "cluster.yaml").write_text("stages: {train: {array: 4}}\n")
    with pytest.raises(ClusterError, match="only the eval stage"):
        cluster.load(tmp_path)


def test_a_walltime_warning_while_the_stage_exits_cannot_kill_it():
    """Python's shutdown puts handled signals back to their default (USR1: kill); install() leaves USR1
    ignored for the shutdown, so a late warning cannot turn a finished stage into exit 138."""
    probe = ("import atexit, signal\n"
             "atexit.register(lambda: print('at exit:', signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN))\n"
             "from tunebook.runtime import walltime\n"
             "walltime.install()\n"
             "print('running:', signal.getsignal(signal.SIGUSR1) is walltime._on_usr1)\n")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.split() == ["running:", "True", "at", "exit:", "True"], res.stdout + res.stderr


def test_the_script_reports_the_stages_own_status_when_a_warning_comes_as_it_exits(tmp_path):
    """The stage ends as the warning arrives: bash's `wait` returns 138 for the trapped signal, and by
    the time the script looks again the stage is gone. The script must report the stage's status (0
    here), not the signal's (the cluster tier saw exit 138 for a train job that had finished)."""
    python = tmp_path / "stage"  # stands in for `python -m tunebook run ...`: exits 0 when warned
    python.write_text("#!/bin/bash\ntrap 'exit 0' USR1\nsleep 20 >/dev/null 2>&1 & wait\nexit 1\n")
    python.chmod(0o755)
    text = slurm.render_script(root=tmp_path, kind="train", name="exp", req=JobRequest(time="1"), res=None, python=str(python))
    for _ in range(5):  # the race goes either way; each way must give the stage's 0
        proc = subprocess.Popen(["bash", "-c", text], env={**os.environ, "SLURM_JOB_ID": "7"},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(0.5)
        proc.send_signal(signal.SIGUSR1)  # SLURM's --signal=B:USR1 goes to the batch shell
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "stage exited 0" in out, out
