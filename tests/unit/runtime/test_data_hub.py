"""Dataset folders and `hf:` sources through the real `datasets` code, offline.

Local folders (`save_to_disk` output, folders of data files) are what `datasets` loads for a hub
dataset too. The hub itself is a local hub cache here, in the layout `huggingface_hub` keeps
(`refs/<branch>` holds a commit, `snapshots/<commit>/` its files): exactly what an offline stage reads.
"""

from __future__ import annotations

import json

import pytest

from tunebook.compiler.schema import Source
from tunebook.runtime import hub, sources

from .data_helpers import SPEC_FILE, context, pc_rows, run, spec_error, write_jsonl

OLD, NEW = "0" * 40, "1" * 40


@pytest.fixture(autouse=True)
def offline_caches(tmp_path, monkeypatch):
    """datasets writes its arrow cache, and huggingface_hub looks for snapshots, under tmp_path."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache" / "datasets")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def hub_cache(tmp_path):
    """acme/physics fetched at two commits: `main` -> NEW (12 rows), tag `v1` -> OLD (4 rows)."""
    repo = tmp_path / "cache" / "hub" / "datasets--acme--physics"
    for commit, n in ((OLD, 4), (NEW, 12)):
        write_jsonl(repo / "snapshots" / commit / "data" / "train.jsonl", pc_rows(n))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(NEW)
    (repo / "refs" / "v1").write_text(OLD)
    return repo


def test_save_to_disk_dataset_and_dataset_dict_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    Dataset.from_list(pc_rows(8)).save_to_disk(str(tmp_path / "ds" / "one"))
    DatasetDict(train=Dataset.from_list(pc_rows(6)), test=Dataset.from_list(pc_rows(3, start=100))).save_to_disk(str(tmp_path / "ds" / "dd"))
    one = run(context(tmp_path, {"train": [{"source": "ds/one"}]}))
    assert len(one["train"]) == 8
    assert (one["manifest"]["sources"][0]["type"], one["manifest"]["sources"][0]["sha256_of"]) == ("folder", "rows")

    test = run(context(tmp_path, {"train": [{"source": "ds/dd", "split": "test"}]}))
    assert sorted(r["prompt"] for r in test["train"]) == ["100-1=", "101-1=", "102-1="]
    [issue] = spec_error(lambda: run(context(tmp_path, {"train": [{"source": "ds/dd", "split": "validation"}]})))
    assert (issue.file, issue.path) == (SPEC_FILE, "exp.data.train.0.split")
    assert "has no split 'validation'; splits: train, test" in issue.message


@pytest.mark.parametrize("kind", ["parquet", "json"])
def test_folder_of_data_files_is_read_by_split(tmp_path, kind):
    import polars as pl

    folder = tmp_path / "files"
    folder.mkdir()
    for split, rows in (("train", pc_rows(10)), ("test", pc_rows(4, start=50))):
        if kind == "parquet":
            pl.DataFrame(rows).write_parquet(folder / f"{split}.parquet")
        else:
            write_jsonl(folder / f"{split}.jsonl", rows)
    out = run(context(tmp_path, {"train": [{"source": "files"}], "validation": {"source": "files", "split": "test"}}))
    assert (len(out["train"]), len(out["validation"])) == (10, 4)
    assert out["manifest"]["validation"]["split"] == "test"


def test_hub_branch_is_resolved_to_its_commit_and_marked_not_pinned(tmp_path, hub_cache, capsys):
    out = run(context(tmp_path, {"train": [{"source": "hf:acme/physics"}]}))
    [src] = out["manifest"]["sources"]
    assert (src["type"], src["revision"], src["resolved_revision"], src["pin"]) == ("hub", None, NEW, "not pinned in spec")
    assert len(out["train"]) == 12
    assert f"hf:acme/physics is not pinned in the spec: revision 'main' resolved to {NEW}" in capsys.readouterr().out

    tag = run(context(tmp_path, {"train": [{"source": "hf:acme/physics", "revision": "v1"}]}))["manifest"]["sources"][0]
    assert (tag["resolved_revision"], tag["pin"], tag["rows_read"]) == (OLD, "not pinned in spec", 4)
    pinned = run(context(tmp_path, {"train": [{"source": "hf:acme/physics", "revision": OLD}]}))["manifest"]["sources"][0]
    assert (pinned["resolved_revision"], pinned["pin"]) == (OLD, "pinned in spec")
    assert hub.resolve_revision("acme/physics", "v1", "dataset") == OLD  # the same lookup the model record uses


def test_hub_revision_that_does_not_exist_is_a_clear_error(tmp_path, hub_cache):
    [issue] = spec_error(lambda: run(context(tmp_path, {"train": [{"source": "hf:acme/physics", "revision": "v9"}]})))
    assert (issue.file, issue.path) == (SPEC_FILE, "exp.data.train.0.revision")
    assert issue.message.startswith("revision 'v9' of dataset 'acme/physics' is not in the local hub cache (cached revisions: main, v1)")
    [issue] = spec_error(lambda: run(context(tmp_path, {"train": [{"source": "hf:acme/chemistry"}]})))
    assert issue.path == "exp.data.train.0.source" and "nothing of it is cached" in issue.message


def test_eval_targets_from_a_dataset_folder_are_checked_for_contamination(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict(test=Dataset.from_list([{"question": "5-1=", "answer": "4"}, {"question": "new", "answer": "x"}])).save_to_disk(str(tmp_path / "bench"))
    write_jsonl(tmp_path / "train.jsonl", pc_rows(10))
    evals = {"target": [{"name": "sub", "source": "bench", "prompt_field": "question"}]}
    m = run(context(tmp_path, {"train": [{"source": "train.jsonl"}]}, evals))["manifest"]
    assert m["contamination"]["target:sub"] == {"source": "bench", "n": 2, "exact": 1, "normalized": 1, "examples": ["5-1="]}
    evals["target"][0]["prompt_field"] = "questoin"
    [issue] = spec_error(lambda: run(context(tmp_path, {"train": [{"source": "train.jsonl"}]}, evals)))
    assert (issue.path, issue.hint) == ("exp.eval.target.0.prompt_field", "did you mean 'question'?")

    rows, entry = sources.read_source(tmp_path, Source(source="bench", split="test"), "eval.target.sub.source")
    assert rows[0] == {"question": "5-1=", "answer": "4"} and entry["type"] == "folder"
    assert json.loads(json.dumps(entry))  # the entry is plain JSON, as the manifest needs
