"""A plain (non-editable) install, as a user adopting tunebook in their own project gets it.

The wheel is built from this checkout and installed into a folder of its own; every command runs
with that folder first on the path, so nothing is read from the repository. README's "Use tunebook
in your own project" section is what the slow test follows, step by step.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, sh

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
       tmp_path_factory.getbasetemp(), dict(os.environ))
    return next(out.glob("tunebook-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """Environment whose `tunebook` is the installed wheel (dependencies from this venv)."""
    site = tmp_path_factory.mktemp("site")
    sh([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], site, dict(os.environ))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    where = sh([sys.executable, "-c", "import tunebook.compiler; print(tunebook.compiler.__file__)"], site, env).stdout
    assert where.startswith(str(site)), f"the test would import tunebook from {where}, not from the wheel"
    return env


def git_repo(path: Path, env: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    sh(["git", "init", "-q"], path, env)
    sh(["git", "config", "user.email", "t@example.com"], path, env)
    sh(["git", "config", "user.name", "t"], path, env)
    return path


def tunebook(env) -> list[str]:
    return [sys.executable, "-m", "tunebook"]


def test_the_wheel_installs_one_top_level_package_with_its_data_files(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"tunebook"}, f"top-level names besides tunebook: {sorted(tops)}"
    for needed in ("tunebook/compiler/tiny.yaml", "tunebook/compiler/tiny.weights.json",
                   "tunebook/reports/templates/experiment.md.j2", "tunebook/reports/templates/review.md.j2"):
        assert needed in names, f"{needed} is not packaged"


def test_init_in_an_empty_git_repository_with_the_installed_wheel(installed, tmp_path):
    repo = git_repo(tmp_path / "mine", installed)
    out = sh(tunebook(installed) + ["init"], repo, installed).stdout
    assert "wrote specs/first.yaml" in out and "ran dvc init" in out
    for f in ("specs/first.yaml", "specs/schema.json", "dvc.yaml", "params.yaml", ".gitignore", ".dvc/config"):
        assert (repo / f).exists(), f
    ignore = (repo / ".gitignore").read_text()
    for out_dir in ("/models/tiny/", "/runs/first/train/", "/runs/first/eval/", "/data/first/"):
        assert out_dir in ignore, out_dir
    sh(tunebook(installed) + ["compile", "--check"], repo, installed)
    # the schema init writes is the one `tunebook schema` writes: the raw-file schema editors use
    assert (repo / "specs/schema.json").read_text() == sh(tunebook(installed) + ["schema", "-o", "-"], repo, installed).stdout
    # a second init changes nothing and says so
    again = sh(tunebook(installed) + ["init"], repo, installed).stdout
    assert "kept existing specs/first.yaml" in again


def test_init_outside_git_is_bad_input_and_writes_nothing(installed, tmp_path):
    res = sh(tunebook(installed) + ["init"], tmp_path, installed, check=False)
    assert res.returncode == 2 and "not inside a git repository" in res.stderr and "git init" in res.stderr
    assert "Traceback" not in res.stderr and "tunebook -v" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_init_that_fails_leaves_the_project_as_it_was(installed, tmp_path):
    repo = git_repo(tmp_path / "mine", installed)
    (repo / "specs").mkdir()
    (repo / "specs" / "old.yaml").write_text("name: old\nmodel: {base: builtin:tiny}\nmethod: {lr: oops}\n")
    (repo / ".gitignore").write_text("*.pyc\n")
    before = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if ".git/" not in p.as_posix() + "/")
    res = sh(tunebook(installed) + ["init"], repo, installed, check=False)
    assert res.returncode == 2, res.stderr
    assert "specs/old.yaml" in res.stderr
    after = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if ".git/" not in p.as_posix() + "/")
    assert after == before, "init left files behind after failing"
    assert (repo / ".gitignore").read_text() == "*.pyc\n"


@pytest.mark.slow
def test_readme_adoption_steps_run_end_to_end_and_leave_nothing_heavy_to_commit(installed, tmp_path):
    """README, "Use tunebook in your own project": init, dvc repro, then git status lists only what
    should be committed (specs, records, logs, dvc.lock) and never weights or checkpoints."""
    repo = git_repo(tmp_path / "mine", installed)
    (repo / "notes.txt").write_text("an existing project\n")
    sh(["git", "add", "-A"], repo, installed)
    sh(["git", "commit", "-qm", "existing"], repo, installed)
    sh(tunebook(installed) + ["init"], repo, installed)
    repro = sh(["dvc", "repro"], repo, installed, timeout=1500)
    assert (repo / "logs" / "first.md").exists(), repro.stdout[-2000:]
    status = sh(["git", "status", "--porcelain", "--untracked-files=all"], repo, installed).stdout.splitlines()
    paths = [ln[3:] for ln in status]
    # weights, checkpoints and every file inside a cached output folder (a baseline's folder, not the
    # small timings file beside it, which is tracked like runs/<exp>/timings/)
    heavy = [p for p in paths if p.endswith((".safetensors", ".bin", ".pt", ".pth")) or "/checkpoint-" in p
             or p.startswith(("models/", "data/first/")) or (p.startswith("runs/_baselines/") and p.count("/") >= 3)
             or "/train/" in p or "/eval/" in p]
    assert not heavy, f"git would commit outputs DVC caches: {heavy[:10]}"
    assert "dvc.lock" in paths and "logs/first.md" in paths and "runs/first/record.json" in paths
