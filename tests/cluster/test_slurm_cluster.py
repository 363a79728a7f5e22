"""Heavy stages as jobs on a real one-node SLURM (22.05, Debian's packages): the quickstart through
`dvc repro` gives a local run's metrics, a train stage cut by its walltime checkpoints and resubmits
until done, SLURM's refusals and Ctrl-C reach the user, and two queued variants share one baseline.

    make test-cluster
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.cluster.conftest import quickstart_project, sh
from tests.conftest import like_a_terminal

pytestmark = pytest.mark.slurm

CLUSTER = "slurm: {time: '00:10:00', cpus_per_task: 1, poll_s: 0.5}\nstages: {train: null, eval: null, baseline: null}\n"
ARRAY = CLUSTER.replace("eval: null", "eval: {array: 2}")  # the eval sweep as a 2-task job array, then one gathering job


def test_quickstart_as_jobs_gives_the_local_metrics(tmp_path, env):
    """Baseline, train and eval as jobs (eval as a job array): exactly the metrics of a local run."""
    local = quickstart_project(tmp_path / "local", env)
    sh(["dvc", "repro"], local, {**env, "TUNEBOOK_LOCAL": "1"})
    jobs = quickstart_project(tmp_path / "jobs", env)
    (jobs / "cluster.yaml").write_text(ARRAY)
    out = sh(["dvc", "repro"], jobs, env).stdout
    assert "shard 0 of 2" in out and "shard 1 of 2" in out and "a last job gathers the cells" in out
    for stage in ("baseline-", "train-quickstart", "eval-quickstart"):
        assert f"[slurm] {stage}" in out and "completed on" in out, stage
    assert "[slurm] data-quickstart" not in out and "[slurm] report-quickstart" not in out  # those stay here
    assert "[train quickstart]" in out  # the job's log streamed into the stage's output
    assert json.loads((jobs / "runs/quickstart/metrics.json").read_text()) == json.loads((local / "runs/quickstart/metrics.json").read_text())
    rec = json.loads((jobs / "runs/quickstart/record.json").read_text())
    train = rec["environment"]["slurm_jobs"]["train-quickstart"]
    assert train["outcome"] == "completed" and train["attempts"][0]["node"] and train["attempts"][0]["job_id"]
    assert "SLURM jobs" in (jobs / "logs/quickstart.md").read_text()
    assert "Running stage" not in sh(["dvc", "repro"], jobs, env).stdout  # where it ran is no param: nothing reruns
    (jobs / "cluster.yaml").write_text(CLUSTER.replace("00:10:00", "00:20:00"))  # no array, longer jobs
    assert "Running stage" not in sh(["dvc", "repro"], jobs, env).stdout


def test_walltime_warning_checkpoints_and_resubmits_until_done(tmp_path, env):
    """--time=1 (SLURM's minimum) and the warning 30 s before: 12 epochs (816 steps) do not fit in one
    attempt. The warning came ~24 s into every job here; one attempt trained ~500 steps on an idle
    machine and 40-90 under load, hence the generous max_attempts."""
    root = quickstart_project(tmp_path / "p", env, epochs=12.0)
    (root / "cluster.yaml").write_text("slurm: {cpus_per_task: 1, poll_s: 0.5}\n"
                                       "stages: {train: {time: '1', signal_lead_s: 30, max_attempts: 20}}\n")
    t0 = time.time()
    out = sh(["dvc", "repro", "train-quickstart"], root, env, timeout=1500).stdout
    took = time.time() - t0
    rec = json.loads((root / "runs/.jobs/train-quickstart/attempts.json").read_text())
    attempts = rec["attempts"]
    assert rec["outcome"] == "completed" and len(attempts) >= 2, out[-3000:]
    for a in attempts[:-1]:
        assert a["walltime_warned"] and a["exit_code"] == 75 and a["progress_after"] > a["progress_before"], a
    assert attempts[-1]["state"] == "COMPLETED"
    assert "[walltime] checkpoint-" in out and "resuming from checkpoint-" in out
    summary = json.loads((root / "runs/quickstart/train/summary.json").read_text())
    assert summary["actual_steps"] == summary["planned_steps"]
    print(f"walltime test: {len(attempts)} attempts, {took:.0f}s: " + "; ".join(a["reason"] for a in attempts))


def test_slurm_refusals_reach_the_user_with_slurms_words(tmp_path, env):
    root = quickstart_project(tmp_path / "p", env)
    for setting, words in (("partition: nope", "Invalid partition name specified"),
                           ("mem: 4000G", "Requested node configuration is not available")):
        (root / "cluster.yaml").write_text(f"slurm: {{{setting}}}\nstages: {{baseline: null}}\n")
        res = sh([sys.executable, "-m", "tunebook", "run", "baseline", "tiny-" + _baseline_key(root)], root, env, check=False)
        assert res.returncode == 1 and "SLURM refused the job" in res.stderr and words in res.stderr, res.stderr


def _baseline_key(root) -> str:
    import yaml

    return next(iter(yaml.safe_load((root / "params.yaml").read_text())["baselines"]))[len("tiny-"):]


def test_ctrl_c_cancels_the_running_job(tmp_path, env):
    root = quickstart_project(tmp_path / "p", env, epochs=8.0)
    sh(["dvc", "repro", "data-quickstart"], root, {**env, "TUNEBOOK_LOCAL": "1"})
    (root / "cluster.yaml").write_text("slurm: {cpus_per_task: 1, poll_s: 0.3}\nstages: {train: null}\n")
    p = subprocess.Popen([sys.executable, "-m", "tunebook", "run", "train", "quickstart"], cwd=root, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=like_a_terminal)
    attempts = root / "runs/.jobs/train-quickstart/attempts.json"
    for _ in range(300):
        if attempts.exists() and "[tunebook] job" in _log(root):
            break
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    rec = json.loads(attempts.read_text())
    job = rec["attempts"][0]["job_id"]
    assert p.returncode == 130 and rec["outcome"] == "interrupted", out + err
    for _ in range(50):
        state = sh(["scontrol", "show", "job", "-o", job], root, env).stdout
        if "JobState=CANCELLED" in state:
            break
        time.sleep(0.2)
    assert "JobState=CANCELLED" in state
    assert sh(["squeue", "-h", "-j", job], root, env, check=False).stdout.strip() == ""


def _log(root) -> str:
    return "".join(p.read_text() for p in (root / "runs/.jobs/train-quickstart").glob("*.log"))


def test_two_queued_variants_on_slurm_share_one_baseline(tmp_path, env):
    """`dvc queue start -j 2` is the throttle: both variants run as jobs, the committed baseline is reused."""
    root = quickstart_project(tmp_path / "p", env, epochs=0.5)
    (root / "cluster.yaml").write_text(CLUSTER)
    sh(["dvc", "repro", "data-quickstart", f"baseline-tiny-{_baseline_key(root)}"], root, env)
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-qm", "baseline evaluated"], root, env)
    base_jobs = json.loads((root / f"runs/.jobs/baseline-tiny-{_baseline_key(root)}/attempts.json").read_text())["attempts"]
    for lr in ("5e-3", "1e-2"):
        sh(["dvc", "exp", "run", "--queue", "-S", f"quickstart.method.lr={lr}"], root, env)
    sh(["dvc", "queue", "start", "-j", "2"], root, env)
    try:
        for _ in range(900):
            status = sh(["dvc", "queue", "status"], root, env).stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(1)
    finally:
        sh(["dvc", "queue", "stop"], root, env, check=False)  # the workers this test started
    assert status.count("Success") == 2, status
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], root, env).stdout)
    exps = [e for row in shown for e in (row.get("experiments") or [])]
    assert len(exps) == 2
    for e in exps:
        data = e["revs"][0]["data"]
        assert data["metrics"]["runs/quickstart/metrics.json"]["data"]["final"]["target"]["subtraction.accuracy"] >= 0
    # SLURM's own memory of the jobs (MinJobAge 600 s): one baseline job, before the queue; one train and
    # one eval job per variant
    first = int(base_jobs[0]["job_id"])
    names = [n for i, n in _jobs(root, env) if i >= first]
    key = f"tb-baseline-tiny-{_baseline_key(root)}"
    assert len(base_jobs) == 1 and names.count(key) == 1, names
    assert names.count("tb-train-quickstart") == 2 and names.count("tb-eval-quickstart") == 2, names


def _jobs(root, env) -> list[tuple[int, str]]:
    """(job id, job name) of every job slurmctld remembers."""
    out = []
    for line in sh(["scontrol", "show", "jobs", "-o"], root, env).stdout.splitlines():
        kv = dict(w.split("=", 1) for w in line.split() if "=" in w)
        if "JobId" in kv:
            out.append((int(kv["JobId"]), kv.get("JobName", "")))
    return out


def test_a_second_dvc_repro_is_refused_and_ctrl_c_through_dvc_cancels(tmp_path, env):
    """DVC's lock stops a second `dvc repro` before it submits anything; Ctrl-C on `dvc repro` reaches
    the stage, which cancels its job."""
    root = quickstart_project(tmp_path / "p", env, epochs=8.0)
    sh(["dvc", "repro", "data-quickstart"], root, {**env, "TUNEBOOK_LOCAL": "1"})
    (root / "cluster.yaml").write_text("slurm: {cpus_per_task: 1, poll_s: 0.3}\nstages: {train: null}\n")
    first = subprocess.Popen(["dvc", "repro", "train-quickstart"], cwd=root, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True, preexec_fn=like_a_terminal)
    attempts = root / "runs/.jobs/train-quickstart/attempts.json"
    for _ in range(600):
        if attempts.exists() and "[tunebook] job" in _log(root):
            break
        time.sleep(0.1)
    job = json.loads(attempts.read_text())["attempts"][0]["job_id"]
    second = sh(["dvc", "repro", "train-quickstart"], root, env, check=False)
    assert second.returncode != 0 and "lock" in (second.stdout + second.stderr).lower(), second.stdout + second.stderr
    assert [i for i, n in _jobs(root, env) if n == "tb-train-quickstart" and i >= int(job)] == [int(job)]
    os.killpg(first.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    first.communicate(timeout=120)
    assert first.returncode != 0
    for _ in range(50):
        state = sh(["scontrol", "show", "job", "-o", job], root, env).stdout
        if "JobState=CANCELLED" in state:
            break
        time.sleep(0.2)
    assert "JobState=CANCELLED" in state and json.loads(attempts.read_text())["outcome"] == "interrupted"
