"""`tunebook status`: per stage, done / stale / pending, and the SLURM job of a stage that runs as one.

    tunebook status              # a table; seed 001's hand-kept tracker ("QUEUED (resumable) 8847627"), generated

done: in dvc.lock and `dvc status` finds nothing changed; stale: in dvc.lock but a dependency, a
param or an output changed; pending: never ran. A stage whose last attempt is still out
(runs/.jobs/<stage>/attempts.json) shows its job id and SLURM's state (`squeue`), or the outcome of its
last attempts. No torch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from tunebook.runtime.slurm import read_attempts


def _dvc_status(root: Path) -> dict:
    dvc = shutil.which("dvc")
    if dvc is None:
        return {}
    res = subprocess.run([dvc, "status", "--json"], cwd=root, capture_output=True, text=True, timeout=300)
    try:
        return json.loads(res.stdout or "{}")
    except json.JSONDecodeError:
        return {}


def _squeue(job_id: str) -> str | None:
    if not shutil.which("squeue"):
        return None
    res = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True, timeout=60)
    return res.stdout.strip() or None if res.returncode == 0 else None


def rows(root: Path) -> list[dict]:
    stages = list((yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {}))
    lock_path = root / "dvc.lock"
    locked = set(((yaml.safe_load(lock_path.read_text()) or {}).get("stages") or {}) if lock_path.exists() else ())
    changed = _dvc_status(root)
    out = []
    for st in stages:
        state = "pending" if st not in locked else ("stale" if st in changed else "done")
        row = {"stage": st, "state": state, "job": None, "slurm": None, "attempts": 0}
        rec = read_attempts(root, st)
        if rec and rec.get("attempts"):
            last = rec["attempts"][-1]
            row["attempts"], row["job"] = len(rec["attempts"]), last.get("job_id")
            if rec.get("outcome") == "running":
                row["slurm"] = _squeue(last["job_id"]) or "not in the queue (finished, or the stage was killed)"
            else:
                row["slurm"] = f"{rec.get('outcome')}: {last.get('state')}"
        out.append(row)
    return out


def render(table: list[dict]) -> str:
    lines = ["| stage | state | SLURM job | job state | attempts |", "| --- | --- | --- | --- | ---: |"]
    for r in table:
        lines.append(f"| {r['stage']} | {r['state']} | {r['job'] or ''} | {r['slurm'] or ''} | {r['attempts'] or ''} |")
    return "\n".join(lines)
