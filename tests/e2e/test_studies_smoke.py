"""The five seed studies, end to end in smoke mode, as `make smoke` runs them: `tunebook -C studies/<name>
smoke` (compile --smoke, `dvc repro` of one experiment per code path, `tunebook review`) for each,
sharing one DVC cache so the tiny model is pre-trained once. Real CLI, real dvc, real training and
evaluation on builtin:tiny.

Minutes, not seconds: skipped unless asked for with `pytest -m studies`.
"""

from __future__ import annotations

import json
import resource
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, tunebook_cmd

pytestmark = [pytest.mark.e2e, pytest.mark.studies, pytest.mark.slow]

STUDIES = sorted(p.name for p in (ROOT / "studies").iterdir() if (p / "specs").is_dir())


def _children_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


@pytest.fixture(scope="module", autouse=True)
def only_when_asked(request):
    if "studies" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the smoke studies take minutes: run them with `pytest -m studies` (or `make smoke`)")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("smoke-cache")  # shared: pretrain-tiny runs once, then DVC's run cache


@pytest.mark.parametrize("study", STUDIES)
def test_study_runs_end_to_end_in_smoke_mode(study: str, cache: Path, tmp_path: Path, cli_env: dict):
    out = tmp_path / study
    t0, cpu0 = time.time(), _children_cpu()
    res = subprocess.run(tunebook_cmd() + ["-C", str(ROOT / "studies" / study), "smoke", "--out", str(out), "--cache", str(cache)],
                         env=cli_env, capture_output=True, text=True, timeout=900)
    # wall time depends on who else uses the machine; CPU time much less
    print(f"SMOKE {study}: {time.time() - t0:.0f}s wall, {_children_cpu() - cpu0:.0f}s CPU")
    assert res.returncode == 0, f"{res.stdout[-4000:]}\n{res.stderr[-3000:]}"
    assert "passed" in res.stdout

    params = yaml.safe_load((out / "params.yaml").read_text())
    experiments = sorted(k for k in params if k not in ("baselines", "builtin"))
    notes = (out / "SMOKE.md").read_text()
    assert experiments and (out / "smoke.log").is_file()
    # one experiment per code path ran; SMOKE.md names the others and which run covers each
    ran = sorted(p.parent.name for p in (out / "runs").glob("*/record.json"))
    assert ran and set(ran) <= set(experiments)
    assert all(f"{exp} (as " in notes for exp in set(experiments) - set(ran))
    review = (out / "logs" / "review.md").read_text()
    for exp in ran:
        assert exp in review
        log = (out / "logs" / f"{exp}.md").read_text()
        assert log.startswith("# SMOKE miniature of specs/")  # a smoke log says so in its title
        rec = json.loads((out / "runs" / exp / "record.json").read_text())
        final = next(c["name"] for c in rec["checkpoints"] if c["is_final"])
        suites = {(m["checkpoint"], m["suite"]) for m in rec["metrics"]}
        spec = params[exp]
        # every suite the full spec asked for produced numbers for the final checkpoint
        ev, data = spec["eval"], spec["data"]
        wanted = {suite for suite, on in [("target", ev["target"]), ("general", ev["general"]), ("reward", ev["reward"]),
                                          ("judge", ev["judge"]),
                                          ("loss", ev["loss"] and (data["validation"] or data["validation_split"]))] if on}
        assert {s for c, s in suites if c == final} >= wanted, exp
        assert rec["training"]["actual_steps"] > 0 and rec["training"]["method"] == spec["method"]["kind"]
        if spec["method"]["kind"] == "teacher-sft":
            assert rec["environment"] is not None and (out / "runs" / exp / "teacher" / "manifest.json").is_file()
