"""Inputs stay inside the project: hub revisions, the files inside a dataset folder, `extends:` through
a symlinked spec (issue 16, classes 1-3).

- A hub `revision` is a commit, tag or branch name: anything that could walk out of the hub cache's
  `refs/` or `snapshots/` is refused at compile, and again by the stage (params.yaml edited behind the
  compiler's back), and a cached ref or snapshot that resolves outside the cache is never read.
- Every file `datasets` would read from a dataset folder (symlinks below it, a dataset card's
  `data_files`, a `save_to_disk` state) must lie inside the folder (or the project's DVC cache).
- A symlinked spec does not make its target's folder a home for `extends:`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.reliability.tally import tried
from tunebook.cli import main
from tunebook.compiler import SpecError
from tunebook.runtime.context import experiment_context

ROW = '{"prompt": "1+1=", "completion": "2", "answer": "2"}\n'
HUB_SPEC = """\
name: x
model: {{base: builtin:tiny}}
data:
  train:
    - {{source: "hf:org/set", revision: {rev}}}
"""
BAD_REVISIONS = ["../../../../outside/ref", "refs/../../x", "/etc/passwd", "..", ".hidden", "main/../../x", "a..b",
                 "-rf", "x.lock", "a//b", "~/x", "main\\..\\x", "main\n", "%2e%2e/x", "x" * 300, "", "refs/.git/x"]
GOOD_REVISIONS = ["main", "v1.0", "refs/pr/3", "release-2024_01", "0" * 40]


def compile_in(root: Path, text: str, name: str = "x.yaml"):
    (root / "specs").mkdir(parents=True, exist_ok=True)
    (root / "specs" / name).write_text(text)
    return CliRunner().invoke(main, ["-C", str(root), "compile"])


@pytest.mark.parametrize("rev", BAD_REVISIONS)
def test_a_revision_is_a_commit_tag_or_branch_name(tmp_path, rev):
    result = compile_in(tmp_path, HUB_SPEC.format(rev=json.dumps(rev)))
    assert result.exit_code == 2, result.output
    assert "data.train.0.revision" in result.stderr, result.stderr
    assert not (tmp_path / "params.yaml").exists()
    tried("confinement escapes")


@pytest.mark.parametrize("rev", GOOD_REVISIONS)
def test_real_revisions_pass_the_check(rev):
    from tunebook.compiler.policy import revision_problem

    assert revision_problem(rev) is None


@pytest.mark.parametrize("field,value", [("model.revision", "../../x"), ("data.train.0.revision", "../../../etc"),
                                         ("data.train.0.source", "hf:../../etc")])
def test_the_stage_refuses_a_revision_edited_into_params(tmp_path, field, value):
    (tmp_path / "d.jsonl").write_text(ROW)
    assert compile_in(tmp_path, "name: x\nmodel: {base: builtin:tiny}\ndata: {train: [{source: d.jsonl}]}\n").exit_code == 0
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    node = params["x"]
    *path, last = field.split(".")
    for k in path:
        node = node[int(k)] if k.isdigit() else node[k]
    node[last] = value
    if field == "data.train.0.revision":
        node["source"] = "hf:org/set"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SpecError) as e:
        experiment_context(tmp_path, "x")
    assert f"params.yaml: x.{field}" in str(e.value), str(e.value)
    tried("confinement escapes")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline hub cache holding dataset org/set at branch main, and an outside folder with rows."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "datasets--org--set"
    commit = "a" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs/main").write_text(commit)
    (repo / "blobs").mkdir()
    (repo / "blobs/b1").write_text(ROW * 3)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "train.jsonl").symlink_to(repo / "blobs/b1")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "train.jsonl").write_text(ROW * 40)
    (outside / "ref.txt").write_text("b" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return repo, outside


def test_a_cached_hub_dataset_still_loads(hub_cache):
    from tunebook.runtime.hub import load_hub_dataset

    ds, commit = load_hub_dataset("org/set", None, "train", "main")
    assert commit == "a" * 40 and len(ds) == 3


@pytest.mark.parametrize("attack", ["ref-traversal", "ref-symlink", "ref-not-a-commit", "snapshot-symlink",
                                    "snapshot-file-symlink", "commit-traversal"])
def test_the_hub_cache_cannot_lead_outside(hub_cache, attack):
    from tunebook.runtime.hub import HubError, load_hub_dataset

    repo, outside = hub_cache
    rev = "main"
    if attack == "ref-traversal":
        rev = "../../../outside/ref.txt"
    elif attack == "ref-symlink":
        (repo / "refs/evil").symlink_to(outside / "ref.txt")
        (repo / "snapshots" / ("b" * 40)).symlink_to(outside)
        rev = "evil"
    elif attack == "ref-not-a-commit":
        (repo / "refs/main").write_text("../../../outside")
    elif attack == "snapshot-symlink":
        (repo / "refs/main").write_text("c" * 40)
        (repo / "snapshots" / ("c" * 40)).symlink_to(outside)
    elif attack == "snapshot-file-symlink":
        (repo / "snapshots" / ("a" * 40) / "train.jsonl").unlink()
        (repo / "snapshots" / ("a" * 40) / "train.jsonl").symlink_to(outside / "train.jsonl")
    elif attack == "commit-traversal":
        rev = "../../../../outside"
    with pytest.raises(HubError):
        ds, _ = load_hub_dataset("org/set", None, "train", rev)
        assert len(ds) != 40, "read the outside rows"
    tried("confinement escapes")


# --- files inside a dataset folder ---------------------------------------------------------------------
@pytest.mark.parametrize("attack", ["file-symlink", "dir-symlink", "card-absolute", "card-url", "card-dotdot",
                                    "card-list", "card-split-dict", "card-data-dir", "state-dotdot", "nested-symlink"])
def test_every_file_read_from_a_dataset_folder_stays_inside(tmp_path, attack):
    from tunebook.runtime.hub import HubError, load_local_dataset

    folder, outside = tmp_path / "proj/data/set", tmp_path / "outside"
    folder.mkdir(parents=True)
    outside.mkdir()
    (outside / "train.jsonl").write_text(ROW * 40)
    card = "---\nconfigs:\n  - config_name: default\n    data_files:\n{files}\n---\n"
    if attack == "file-symlink":
        (folder / "train.jsonl").symlink_to(outside / "train.jsonl")
    elif attack == "dir-symlink":
        (folder / "data").symlink_to(outside)
    elif attack == "nested-symlink":
        (folder / "sub/deeper").mkdir(parents=True)
        (folder / "sub/deeper/train.jsonl").symlink_to(outside / "train.jsonl")
    elif attack.startswith("card-"):
        (folder / "mine.jsonl").write_text(ROW)
        files = {"card-absolute": f"      - split: train\n        path: {outside}/train.jsonl",
                 "card-url": "      - split: train\n        path: https://evil.example.com/train.jsonl",
                 "card-dotdot": "      - split: train\n        path: ../../../outside/train.jsonl",
                 "card-list": f"      - split: train\n        path: [mine.jsonl, {outside}/train.jsonl]",
                 "card-split-dict": "      train: ../../../outside/*.jsonl",
                 "card-data-dir": ""}[attack]
        text = card.format(files=files)
        if attack == "card-data-dir":
            text = "---\nconfigs:\n  - config_name: default\n    data_dir: ../../../outside\n---\n"
        (folder / "README.md").write_text(text)
    elif attack == "state-dotdot":
        (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "../../../outside/x.arrow"}]}))
    with pytest.raises(HubError, match="outside"):
        load_local_dataset(folder, None, "train")
    tried("confinement escapes")


def test_a_plain_dataset_folder_and_a_dvc_cache_symlink_still_load(tmp_path):
    from tunebook.runtime.hub import load_local_dataset

    folder, cache = tmp_path / "proj/data/set", tmp_path / "cache"
    folder.mkdir(parents=True)
    cache.mkdir()
    (folder / "train.jsonl").write_text(ROW * 2)
    (cache / "ab").write_text(ROW * 5)
    (folder / "test.jsonl").symlink_to(cache / "ab")
    assert len(load_local_dataset(folder, None, "train", inside=[cache])) == 2
    assert len(load_local_dataset(folder, None, "test", inside=[cache])) == 5


def test_the_data_stage_refuses_a_symlink_inside_a_dataset_folder(tmp_path):
    """End to end through `tunebook run data`: the in-project folder passes the top-level check."""
    import subprocess

    from tests.conftest import tunebook_cmd
    from tests.reliability.conftest import base_env

    root = tmp_path / "proj"
    (root / "data/set").mkdir(parents=True)
    (tmp_path / "secret.jsonl").write_text(ROW * 40)
    (root / "data/set/train.jsonl").symlink_to(tmp_path / "secret.jsonl")
    assert compile_in(root, "name: x\nmodel: {base: builtin:tiny}\ndata: {train: [{source: data/set}]}\n").exit_code == 0
    res = subprocess.run(tunebook_cmd() + ["run", "data", "x"], cwd=root, env=base_env(), capture_output=True, text=True)
    assert res.returncode == 2 and "outside the dataset folder" in res.stderr, res.stderr[-2000:]
    assert not (root / "data/x").exists()
    tried("confinement escapes")


# --- extends: through a symlinked spec -----------------------------------------------------------------
@pytest.mark.parametrize("how", ["spec-symlink", "specs-folder-symlink", "parent-symlink", "grandparent"])
def test_a_symlinked_spec_does_not_make_an_outside_home(tmp_path, how):
    root, outside = tmp_path / "proj", tmp_path / "outside"
    (root / "data").mkdir(parents=True)
    (root / "data/d.jsonl").write_text(ROW)
    outside.mkdir()
    (outside / "_parent.yaml").write_text("model: {base: builtin:tiny}\ndata: {train: [{source: data/d.jsonl}]}\n")
    if how == "spec-symlink":
        (outside / "evil.yaml").write_text("extends: _parent.yaml\nname: x\n")
        (root / "specs").mkdir()
        (root / "specs/x.yaml").symlink_to(outside / "evil.yaml")
    elif how == "specs-folder-symlink":
        (outside / "x.yaml").write_text("extends: _parent.yaml\nname: x\n")
        (root / "specs").symlink_to(outside)
    elif how == "parent-symlink":
        (root / "specs").mkdir()
        (root / "specs/_base.yaml").symlink_to(outside / "mid.yaml")
        (outside / "mid.yaml").write_text("extends: _parent.yaml\n")
        (root / "specs/x.yaml").write_text("extends: _base.yaml\nname: x\n")
    else:
        (outside / "mid.yaml").write_text("extends: _parent.yaml\n")
        (outside / "evil.yaml").write_text("extends: mid.yaml\nname: x\n")
        (root / "specs").mkdir()
        (root / "specs/x.yaml").symlink_to(outside / "evil.yaml")
    result = CliRunner().invoke(main, ["-C", str(root), "compile"])
    assert result.exit_code == 2, result.output
    assert "is outside the project" in result.stderr, result.stderr
    assert not (root / "params.yaml").exists()
    tried("confinement escapes")


def test_a_symlinked_spec_with_a_parent_inside_still_compiles(tmp_path):
    root = tmp_path / "proj"
    (root / "specs").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data/d.jsonl").write_text(ROW)
    (root / "specs/_parent.yaml").write_text("model: {base: builtin:tiny}\ndata: {train: [{source: data/d.jsonl}]}\n")
    (root / "shared").mkdir()
    (root / "shared/x.yaml").write_text("extends: ../specs/_parent.yaml\nname: x\n")
    (root / "specs/x.yaml").symlink_to(root / "shared/x.yaml")
    result = CliRunner().invoke(main, ["-C", str(root), "compile"])
    assert result.exit_code == 0, result.output
