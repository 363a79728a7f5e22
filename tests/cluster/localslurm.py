"""A one-node SLURM cluster in a temporary folder, for the `slurm` tests and bench/bench_slurm.py.

Debian's `slurm-wlm` and `munge` (22.05; `make test-cluster` installs them): munged with its own
socket, slurmctld and slurmd with a slurm.conf written here (the settings FIELD-NOTES measured:
linuxproc process tracking, no task plugin, cons_tres, no accounting), all as root, stopped by PID.
Clients find it through SLURM_CONF and the munge socket named in slurm.conf.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NEEDED = ("sbatch", "squeue", "scontrol", "scancel", "slurmctld", "slurmd", "munged")


def missing() -> list[str]:
    return [t for t in NEEDED if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class LocalSlurm:
    def __init__(self, folder: Path, cpus: int = 2):
        self.dir = Path(folder)
        self.cpus = cpus
        self.host = socket.gethostname().split(".")[0]
        self.pids: dict[str, int] = {}
        self.env: dict[str, str] = {}

    def conf_text(self) -> str:
        d = self.dir
        return "\n".join([
            "ClusterName=tunebook",
            f"SlurmctldHost={self.host}",
            "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={d}/munge/munge.socket",
            f"StateSaveLocation={d}/state", f"SlurmdSpoolDir={d}/spool",
            f"SlurmctldPidFile={d}/slurmctld.pid", f"SlurmdPidFile={d}/slurmd.pid",
            f"SlurmctldLogFile={d}/slurmctld.log", f"SlurmdLogFile={d}/slurmd.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            "MpiDefault=none", "ReturnToService=2", "SchedulerType=sched/backfill",
            "MinJobAge=600",  # scontrol remembers a finished job 10 minutes (no accounting here)
            "KillWait=5", "InactiveLimit=0",
            f"NodeName={self.host} CPUs={self.cpus} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ])

    def start(self, timeout: float = 60) -> "LocalSlurm":
        d = self.dir
        for sub in ("munge", "state", "spool"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d / "munge", 0o700)
        (d / "slurm.conf").write_text(self.conf_text())
        self.env = {"SLURM_CONF": str(d / "slurm.conf")}
        env = {**os.environ, **self.env}
        subprocess.run([_exe("munged"), "--force", f"--socket={d}/munge/munge.socket", f"--pid-file={d}/munge/munged.pid",
                        f"--log-file={d}/munge/munged.log", f"--seed-file={d}/munge/munged.seed"], check=True, env=env,
                       capture_output=True)
        self.pids["munged"] = self._pid(d / "munge" / "munged.pid", timeout)
        subprocess.run([_exe("slurmctld"), "-i"], check=True, env=env, capture_output=True)  # -i: ignore old state
        self.pids["slurmctld"] = self._pid(d / "slurmctld.pid", timeout)
        subprocess.run([_exe("slurmd")], check=True, env=env, capture_output=True)
        self.pids["slurmd"] = self._pid(d / "slurmd.pid", timeout)
        end = time.time() + timeout
        while time.time() < end:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout.strip()
            if out in ("idle", "mix", "alloc"):
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the local SLURM node did not come up in {timeout:.0f}s; logs in {d}")

    @staticmethod
    def _pid(path: Path, timeout: float) -> int:
        end = time.time() + timeout
        while time.time() < end:
            try:
                return int(path.read_text().split()[0])
            except (FileNotFoundError, ValueError, IndexError):
                time.sleep(0.1)
        raise RuntimeError(f"no pid file {path}")

    def stop(self) -> None:
        """Our daemons only, by the PIDs they wrote; jobs still running are cancelled first."""
        if "slurmctld" in self.pids:
            subprocess.run(["scancel", "--user=root"], env={**os.environ, **self.env}, capture_output=True, timeout=30)
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
