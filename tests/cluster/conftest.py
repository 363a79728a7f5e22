"""The `slurm` tier: a real one-node SLURM (tests/cluster/localslurm.py) started once per session.

    make test-cluster      # installs Debian's slurm-wlm and munge when missing, then `pytest -m slurm`

Skipped, with the reason, where the SLURM daemons or clients are not installed. The embedded tiny model
is built first when missing, as the runtime tests do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.cluster.localslurm import LocalSlurm, missing
from tests.conftest import ROOT


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory, request):
    if "slurm" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the cluster tier takes minutes: run it with `pytest -m slurm` (or `make test-cluster`)")
    gone = missing()
    if gone:
        pytest.skip(f"no SLURM here ({', '.join(gone)} not found); `make test-cluster` installs slurm-wlm and munge")
    if os.geteuid() != 0:
        pytest.skip("the local SLURM runs its daemons as root (SlurmUser=root)")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def tiny_built():
    import tests.unit.runtime.conftest  # noqa: F401 - builds models/tiny and data/tiny when missing


@pytest.fixture
def env(slurm_cluster, tiny_built):
    e = dict(os.environ)
    e.update(slurm_cluster.env)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["PATH"] = str(Path(sys.executable).parent) + os.pathsep + e.get("PATH", "")
    e["DVC_NO_ANALYTICS"] = "1"
    e.pop("TUNEBOOK_LOCAL", None)
    return e


def sh(args, cwd, env, check=True, timeout=900):
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{args} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def quickstart_project(root: Path, env: dict, epochs: float = 1.0, **method) -> Path:
    """specs/quickstart.yaml in a fresh git+DVC repo with the built tiny model, its pretrain stage
    committed to dvc.lock (nothing pre-trains again), `epochs` shortened for the test budget."""
    root.mkdir(parents=True, exist_ok=True)
    for d in ("models/tiny", "data/tiny"):
        shutil.copytree(ROOT / d, root / d)
    (root / "specs").mkdir()
    shutil.copy(ROOT / "specs/quickstart.yaml", root / "specs")
    for args in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"], ["git", "config", "user.name", "t"],
                 ["dvc", "init", "-q"], [sys.executable, "-m", "tunebook", "compile"]):
        sh(args, root, env)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["quickstart"]["method"].update(epochs=epochs, **method)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["dvc", "commit", "-q", "-f", "pretrain-tiny"], root, env)
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-qm", "init"], root, env)
    return root
