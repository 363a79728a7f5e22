"""What running a stage as a SLURM job costs: submit-to-finish of the same small stage (the quickstart's
data stage, ~1 s of work) as a job on a local one-node SLURM, minus the same stage run here.

    python -m bench slurm        # needs root and Debian's slurm-wlm + munge (`make test-cluster` installs them)

The overhead is sbatch, the scheduler starting the job, the batch script, a second Python start inside
the job, and the state polling (`poll_s`, 0.5 s here); it is paid once per attempt. Without SLURM this
prints a skip line, never a number.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import line

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 3


def _project(d: Path, env: dict) -> Path:
    for sub in ("models/tiny", "data/tiny"):
        shutil.copytree(ROOT / sub, d / sub)
    (d / "specs").mkdir()
    shutil.copy(ROOT / "specs/quickstart.yaml", d / "specs")
    subprocess.run([sys.executable, "-m", "tunebook", "compile"], cwd=d, env=env, check=True, capture_output=True)
    return d


def _stage(d: Path, env: dict) -> float:
    shutil.rmtree(d / "data/quickstart", ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tunebook", "run", "data", "quickstart"], cwd=d, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.cluster.localslurm import LocalSlurm, missing

    gone = missing()
    if gone or os.geteuid() != 0:
        why = f"{', '.join(gone)} not found" if gone else "the local SLURM needs root"
        print(f"BENCH slurm_stage_overhead_s skipped: no SLURM here ({why}); `make test-cluster` installs it", flush=True)
        return
    if not (ROOT / "models/tiny/config.json").exists():
        print("BENCH slurm_stage_overhead_s skipped: models/tiny is not built (make demo or make test builds it)", flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cluster = LocalSlurm(tmp / "slurm").start()
        try:
            env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH=str(ROOT), **cluster.env)
            env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
            env.pop("TUNEBOOK_LOCAL", None)
            d = _project(tmp / "p", env)
            local = sorted(_stage(d, {**env, "TUNEBOOK_LOCAL": "1"}) for _ in range(REPEATS))[REPEATS // 2]
            (d / "cluster.yaml").write_text("slurm: {time: '5', cpus_per_task: 1, poll_s: 0.5}\nstages: {data: null}\n")
            job = sorted(_stage(d, env) for _ in range(REPEATS))[REPEATS // 2]
        finally:
            cluster.stop()
    print(f"# data stage here {local:.2f} s, as a SLURM job {job:.2f} s (medians of {REPEATS})", flush=True)
    line("slurm_stage_overhead_s", job - local, "s", "<=", 10)


if __name__ == "__main__":
    main()
