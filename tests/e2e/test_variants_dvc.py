"""Variants end to end with real dvc and git, without training (seconds, not minutes).

1. `dvc exp run -S` rewrites params.yaml with DVC's own code (here through a stage that fails at once,
   which leaves the rewritten file behind): `tunebook compile --check` passes with a note, `compile`
   keeps the variant, `--force` returns to the specs.
2. `tunebook review` after `dvc repro` and two `dvc exp run -S` variants, with the results committed
   and without: one table, each variant against its parent, the winner marked, and the original result
   still there when nothing was committed. The pipeline is a stand-in report stage that writes a run
   record whose subtraction accuracy follows the learning rate, and keeps its copy as the real one does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, tunebook_cmd

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPORT = '''\
"""Stand-in for `tunebook run report`: a record whose final subtraction accuracy follows lr."""
import json, sys
from pathlib import Path
import yaml
from tunebook.reports.variants import remember_run

name = sys.argv[1]
raw = yaml.safe_load(Path("params.yaml").read_text())[name]
rec = json.loads(Path("fixture.json").read_text())
rec["experiment"] = name
right = {0.005: 40, 0.01: 80, 0.002: 16}[raw["method"]["lr"]]
for m in rec["metrics"]:
    if m["checkpoint"] == "final" and m["task"] == "subtraction":
        m["samples"] = [1.0] * right + [0.0] * (len(m["samples"]) - right)
        m["value"] = right / len(m["samples"])
        m.pop("stderr", None)
text = json.dumps(rec, indent=1, sort_keys=True) + "\\n"
out = Path("runs") / name / "record.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(text)
remember_run(Path.cwd(), name, raw, text)  # what the report stage does
'''

PIPELINE = """\
stages:
  report-mini:
    cmd: python report.py mini
    deps: [report.py, fixture.json]
    params: [mini.method]
    outs:
    - runs/mini/record.json:
        cache: false
"""


def sh(args, cwd, env, check=True):
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"{args} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def new_project(root: Path, env: dict) -> None:
    sh(["git", "init", "-q"], root, env)
    sh(["git", "config", "user.email", "t@example.com"], root, env)
    sh(["git", "config", "user.name", "t"], root, env)
    sh(tunebook_cmd() + ["init", "--name", "mini"], root, env)


def test_dvc_exp_run_set_param_keeps_compile_check_green(tmp_path, cli_env):
    new_project(tmp_path, cli_env)
    sh(["git", "add", "-A"], tmp_path, cli_env)
    sh(["git", "commit", "-qm", "init"], tmp_path, cli_env)
    # DVC writes the override, then the stage fails at once (its inputs are not built): the file is DVC's
    sh(["dvc", "exp", "run", "-s", "data-mini", "-S", "mini.method.lr=0.01"], tmp_path, cli_env, check=False)
    text = (tmp_path / "params.yaml").read_text()
    assert "    lr: 0.01\n" in text and ": null" not in text, "DVC did not rewrite params.yaml as expected"
    check = sh(tunebook_cmd() + ["compile", "--check"], tmp_path, cli_env, check=False)
    assert check.returncode == 0, check.stderr
    assert "variant, not a hand edit: mini.method.lr=0.01 (spec: 0.005)" in check.stderr
    assert sh(tunebook_cmd() + ["compile"], tmp_path, cli_env).returncode == 0
    assert (tmp_path / "params.yaml").read_text() == text  # kept
    sh(tunebook_cmd() + ["compile", "--force"], tmp_path, cli_env)
    assert "    lr: 0.005\n" in (tmp_path / "params.yaml").read_text()
    assert "note:" not in sh(tunebook_cmd() + ["compile", "--check"], tmp_path, cli_env).stderr


@pytest.mark.parametrize("committed", [True, False], ids=["results-committed", "nothing-committed"])
def test_review_compares_variants_with_their_parent(tmp_path, cli_env, committed):
    new_project(tmp_path, cli_env)
    (tmp_path / "dvc.yaml").write_text(PIPELINE)  # the stand-in pipeline; params.yaml stays tunebook's
    (tmp_path / "report.py").write_text(REPORT)
    shutil.copy(ROOT / "tests/fixtures/records/quickstart_like.json", tmp_path / "fixture.json")
    sh(["git", "add", "-A"], tmp_path, cli_env)
    sh(["git", "commit", "-qm", "init"], tmp_path, cli_env)
    sh(["dvc", "repro"], tmp_path, cli_env)
    if committed:
        sh(["git", "add", "runs", "dvc.lock"], tmp_path, cli_env)
        sh(["git", "commit", "-qm", "results"], tmp_path, cli_env)
    sh(["dvc", "exp", "run", "-S", "mini.method.lr=0.01"], tmp_path, cli_env)
    if committed:
        sh(["dvc", "exp", "run", "-S", "mini.method.lr=0.002"], tmp_path, cli_env)
    assert ".tunebook" not in sh(["git", "status", "--porcelain"], tmp_path, cli_env).stdout
    sh(tunebook_cmd() + ["review"], tmp_path, cli_env)

    out = (tmp_path / "logs/review.md").read_text()
    section = out.split("## Variants\n", 1)[1].split("\n## ", 1)[0]
    assert section.count("| Experiment | Variant |") == 1
    rows = [ln for ln in section.splitlines() if ln.startswith("| mini |")]
    ref, *variants = rows
    assert re.match(r"\| mini \| \S+ \| reference(; not committed: the copy kept when it ran \(\.tunebook/records\))? \| "
                    r"0\.4000 \|", ref), ref
    assert ("not committed" in ref) == (not committed)
    best = next(r for r in variants if "🏆" in r)
    assert "| 0.8000 +0.4000 [+" in best and "✅" in best.split(" | ")[3]
    if committed:
        worse = next(r for r in variants if "🏆" not in r)
        assert "(= workspace)" in worse and "| 0.1600 -0.2400 [" in worse
        line = next(ln for ln in section.splitlines() if ln.startswith("- mini `method.lr`: "))
        assert re.fullmatch(r"- mini `method\.lr`: \S+ 0\.005( · \S+ 0\.0(1|02)){2}", line) and "0.01" in line, line
    else:
        assert "(= workspace)" in best
