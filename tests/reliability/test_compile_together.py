"""One pipeline per project, one compile at a time (issue 16, class 10).

- `tunebook compile specs/one.yaml` (or `--check`, or several named files) checks the named specs with
  every other spec in specs/ and never drops another experiment's stages; a named spec from elsewhere
  joins them.
- Compiles of one project are serialized (compiler/serial.py): a second one waits, says so, and then
  works on what the first wrote; several at once leave dvc.yaml and params.yaml from the same compile.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import tunebook_cmd
from tests.reliability.conftest import base_env
from tests.reliability.tally import tried
from tunebook.cli import main

ROW = '{"prompt": "1+1=", "completion": "2", "answer": "2"}\n'


def project(root: Path, names=("one", "two", "three"), lr: str = "1.0e-4") -> Path:
    (root / "specs").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "data/d.jsonl").write_text(ROW)
    for n in names:
        (root / f"specs/{n}.yaml").write_text(f"name: {n}\nmodel: {{base: builtin:tiny}}\ndata: {{train: [{{source: data/d.jsonl}}]}}\n"
                                              f"method: {{lr: {lr}}}\n")
    return root


def experiments(root: Path) -> set[str]:
    params = yaml.safe_load((root / "params.yaml").read_text())
    return {k for k in params if k not in ("baselines", "builtin")}


def stages_of(root: Path, name: str) -> list[str]:
    return [s for s in yaml.safe_load((root / "dvc.yaml").read_text())["stages"] if s.endswith(f"-{name}")]


@pytest.mark.parametrize("named", [["specs/one.yaml"], ["specs/two.yaml", "specs/three.yaml"], ["specs/one.yaml", "specs/one.yaml"],
                                   ["./specs/../specs/three.yaml"]])
def test_compiling_named_specs_keeps_every_experiment(tmp_path, named):
    root = project(tmp_path)
    assert CliRunner().invoke(main, ["-C", str(root), "compile"]).exit_code == 0
    full = (root / "dvc.yaml").read_text(), (root / "params.yaml").read_text()
    result = CliRunner().invoke(main, ["-C", str(root), "compile", *[str(root / n) for n in named]])
    assert result.exit_code == 0, result.output
    assert experiments(root) == {"one", "two", "three"}
    assert all(stages_of(root, n) for n in ("one", "two", "three"))
    assert ((root / "dvc.yaml").read_text(), (root / "params.yaml").read_text()) == full
    result = CliRunner().invoke(main, ["-C", str(root), "compile", "--check", *[str(root / n) for n in named]])
    assert result.exit_code == 0, result.output
    tried("faults")


def test_a_named_spec_from_elsewhere_joins_the_rest(tmp_path):
    root = project(tmp_path / "p")
    project(tmp_path / "other", names=("four",))
    result = CliRunner().invoke(main, ["-C", str(root), "compile", str(tmp_path / "other/specs/four.yaml")])
    assert result.exit_code == 0, result.output  # its data path (data/d.jsonl) is relative to this project
    assert experiments(root) == {"one", "two", "three", "four"}
    tried("faults")


def test_a_broken_other_spec_is_said_not_silently_dropped(tmp_path):
    root = project(tmp_path)
    assert CliRunner().invoke(main, ["-C", str(root), "compile"]).exit_code == 0
    before = (root / "dvc.yaml").read_bytes(), (root / "params.yaml").read_bytes()
    (root / "specs/two.yaml").write_text("name: two\nmodel: {base: builtin:tiny}\n")  # data missing
    result = CliRunner().invoke(main, ["-C", str(root), "compile", str(root / "specs/one.yaml")])
    assert result.exit_code == 2 and "specs/two.yaml" in result.stderr, result.output
    assert ((root / "dvc.yaml").read_bytes(), (root / "params.yaml").read_bytes()) == before
    tried("faults")


def test_a_second_compile_waits_for_the_first(tmp_path):
    root = project(tmp_path)
    fd = os.open(root, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a compile in progress
    try:
        proc = subprocess.Popen(tunebook_cmd() + ["compile"], cwd=root, env=base_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert proc.poll() is None, "the second compile did not wait"
        assert not (root / "dvc.yaml").exists()
    finally:
        os.close(fd)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "waiting for another `tunebook compile`" in err
    assert experiments(root) == {"one", "two", "three"}
    tried("faults")


def test_concurrent_compiles_leave_a_matching_pair(tmp_path):
    """Four compiles of two versions at once: the pair on disk comes from one compile, never mixed."""
    root = project(tmp_path)
    versions = {}
    for v, lr in (("a", "1.0e-4"), ("b", "3.0e-4")):
        d = tmp_path / f"v{v}"
        project(d, lr=lr)
        versions[v] = sorted(str(p) for p in (d / "specs").glob("*.yaml"))
    # each version's specs live outside specs/ of root: remove root's own so the named ones are the pipeline
    for p in (root / "specs").glob("*.yaml"):
        p.unlink()
    expected = {}
    for v, paths in versions.items():
        assert CliRunner().invoke(main, ["-C", str(root), "compile", "--force", *paths]).exit_code == 0
        expected[v] = ((root / "dvc.yaml").read_text(), (root / "params.yaml").read_text())
    env = base_env()
    for round_ in range(3):
        procs = [subprocess.Popen(tunebook_cmd() + ["compile", "--force", *versions["ab"[i % 2]]], cwd=root, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
        for p in procs:
            p.communicate(timeout=300)
            assert p.returncode == 0
        pair = ((root / "dvc.yaml").read_text(), (root / "params.yaml").read_text())
        assert pair in expected.values(), f"round {round_}: dvc.yaml and params.yaml come from different compiles"
    tried("faults", 12)
