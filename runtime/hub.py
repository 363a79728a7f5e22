"""Hugging Face hub access, pinned: every model and dataset is loaded at a revision, and the commit it
resolved to is recorded. With HF_HUB_OFFLINE=1 (the default in stages) only the local cache is used.
Local folders (a `save_to_disk` dataset, or a folder of data files) go through the same `datasets` code.
"""

from __future__ import annotations

from pathlib import Path


def resolve_revision(repo_id: str, revision: str | None, repo_type: str) -> str | None:
    """The commit a branch or tag points to (None when it cannot be known offline)."""
    if revision and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision
    try:
        from huggingface_hub import HfApi

        info = HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type)
        return info.sha
    except Exception:  # offline, or gated: the record says 'unresolved', the report flags it
        return None


def load_hf_dataset(name: str, config: str | None, split: str, revision: str | None) -> tuple[list[dict], str | None]:
    from datasets import load_dataset

    ds = load_dataset(name, config, split=split, revision=revision)
    return ds.to_list(), resolve_revision(name, revision, "dataset")


def load_local_dataset(path: Path, split: str) -> list[dict]:
    """A folder written by `Dataset.save_to_disk`/`DatasetDict.save_to_disk`, or a folder of data files."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            if split not in ds:
                raise ValueError(f"{path}: no split '{split}'; available: {', '.join(ds)}")
            ds = ds[split]
        return ds.to_list()
    return load_dataset(str(path), split=split).to_list()
