"""End to end, as a user runs it: `tunebook init` in a fresh git repo, `dvc repro`, a second
`dvc repro` that reruns nothing, a `dvc exp run -S` variant, `tunebook review`, and a typo that is
refused without touching dvc.yaml. Real CLI, real dvc, real training of the tiny model (smaller
pre-training than the quickstart so it fits the test budget).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import sh, tunebook_cmd

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def project(tmp_path_factory, cli_env_module):
    env = cli_env_module
    root = tmp_path_factory.mktemp("proj")
    sh(["git", "init", "-q"], root, env)
    sh(["git", "config", "user.email", "t@example.com"], root, env)
    sh(["git", "config", "user.name", "t"], root, env)
    out = sh(tunebook_cmd() + ["init", "--name", "mini"], root, env)
    assert "wrote specs/mini.yaml" in out.stdout
    # a smaller configuration: what a user would do with `-S` or an edit of params.yaml
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["builtin"]["tiny"]["pretrain"]["steps"] = 150
    params["mini"]["method"]["epochs"] = 1.0
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-qm", "init"], root, env)
    first = sh(["dvc", "repro"], root, env)
    return root, env, first


@pytest.fixture(scope="module")
def cli_env_module():
    import os
    import sys

    from tests.conftest import ROOT

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def test_repro_writes_a_log_with_real_numbers(project):
    root, _, first = project
    for stage in ("pretrain-tiny", "data-mini", "train-mini", "eval-mini", "report-mini"):
        assert f"Running stage '{stage}'" in first.stdout, stage
    rec = json.loads((root / "runs/mini/record.json").read_text())
    by = {(m["checkpoint"], m["task"], m["metric"]): m for m in rec["metrics"]}
    final = next(c["name"] for c in rec["checkpoints"] if c["is_final"])
    for task, metric in [("subtraction", "accuracy"), ("tiny_facts_color", "acc"), ("validation", "loss")]:
        assert ("base", task, metric) in by and (final, task, metric) in by
        assert by[(final, task, metric)]["n"] > 0
    log = (root / "logs/mini.md").read_text()
    assert "mini" in log and "Baseline" in log and "subtraction" in log


def test_second_repro_reruns_nothing(project):
    root, env, _ = project
    again = sh(["dvc", "repro"], root, env)
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout.lower()


def test_variant_shows_in_review(project):
    root, env, _ = project
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-qm", "first run"], root, env)
    exp = sh(["dvc", "exp", "run", "-S", "mini.method.lr=0.01"], root, env)
    assert "Running stage 'train-mini'" in exp.stdout
    assert "Running stage 'pretrain-tiny'" not in exp.stdout and "Running stage 'data-mini'" not in exp.stdout
    sh(tunebook_cmd() + ["review"], root, env)
    review = (root / "logs/review.md").read_text()
    assert "0.01" in review and "mini" in review


def test_typo_is_refused_and_dvc_yaml_untouched(project):
    root, env, _ = project
    before = (root / "dvc.yaml").read_bytes()
    spec = (root / "specs/mini.yaml").read_text().replace("  lr: 5.0e-3", "  learnig_rate: 5.0e-3")
    (root / "specs/mini.yaml").write_text(spec)
    res = sh(tunebook_cmd() + ["compile"], root, env, check=False)
    assert res.returncode == 2
    assert "specs/mini.yaml:" in res.stderr and "method.learnig_rate" in res.stderr and "did you mean 'lr'" in res.stderr
    assert "Traceback" not in res.stderr
    assert (root / "dvc.yaml").read_bytes() == before
