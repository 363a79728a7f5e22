"""Hugging Face hub access, pinned: every model and dataset is loaded at a commit, and that commit is
recorded.

Online (`TUNEBOOK_ONLINE=1`), a branch or tag is resolved with the hub API and the dataset is then
loaded *at that commit*, so what is recorded is what was read even if the branch moves meanwhile.
Offline (the default in stages), the commit comes from the local hub cache (`refs/<branch>` holds the
commit, `snapshots/<commit>/` the files, the layout `huggingface_hub` itself uses) and the snapshot is
loaded with the same `datasets` code as any local dataset folder. Nothing falls back to "whatever is
cached": offline, `datasets.load_dataset(name, revision=...)` would silently ignore the revision.
"""

from __future__ import annotations

import re
from pathlib import Path

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


class HubError(LookupError):
    """A dataset, revision, config or split that cannot be found; the message says what exists."""

    def __init__(self, message: str, field: str = "source"):
        super().__init__(message)
        self.field = field  # the Source field to blame: source, revision, config or split


def is_commit(revision: str | None) -> bool:
    return bool(revision and COMMIT_RE.match(revision))


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cache_dir(repo_id: str, repo_type: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def cached_commit(repo_id: str, revision: str | None, repo_type: str) -> str | None:
    """The commit a branch or tag pointed to when it was last fetched into the local hub cache."""
    ref = _cache_dir(repo_id, repo_type) / "refs" / (revision or "main")
    return ref.read_text().strip() if ref.is_file() else None


def resolve_revision(repo_id: str, revision: str | None, repo_type: str) -> str | None:
    """The commit a branch or tag points to; None when it cannot be known (offline and not cached,
    gated, no network). Never raises: the record says 'unresolved' and the report flags it."""
    if is_commit(revision):
        return revision
    if _offline():
        return cached_commit(repo_id, revision, repo_type)
    try:
        from huggingface_hub import HfApi

        return HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type).sha
    except Exception:  # noqa: BLE001 - any failure means "unknown", which is what gets recorded
        return None


def load_hub_dataset(repo_id: str, config: str | None, split: str, revision: str | None):
    """(one split of a hub dataset as a `datasets.Dataset`, the commit it was read at)."""
    if _offline():
        commit = revision if is_commit(revision) else cached_commit(repo_id, revision, "dataset")
        snapshot = _cache_dir(repo_id, "dataset") / "snapshots" / (commit or "-")
        if not snapshot.is_dir():
            refs = sorted(p.name for p in (_cache_dir(repo_id, "dataset") / "refs").glob("*"))
            cached = f"cached revisions: {', '.join(refs)}" if refs else "nothing of it is cached"
            raise HubError(f"revision '{revision or 'main'}' of dataset '{repo_id}' is not in the local hub cache "
                           f"({cached}); it may not exist, or was never downloaded: run once with TUNEBOOK_ONLINE=1",
                           "revision" if refs else "source")
        return load_local_dataset(snapshot, config, split), commit

    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        commit = HfApi().dataset_info(repo_id, revision=revision).sha
    except RevisionNotFoundError:
        raise HubError(f"dataset '{repo_id}' has no revision '{revision}' (a commit, branch or tag)", "revision") from None
    except GatedRepoError:
        raise HubError(f"dataset '{repo_id}' is gated: accept its terms on the hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise HubError(f"no dataset '{repo_id}' on the hub (if it is private, set HF_TOKEN)") from None
    from datasets import load_dataset

    return _pick(lambda: load_dataset(repo_id, config, split=split, revision=commit), repo_id, split), commit


def load_local_dataset(path: Path, config: str | None, split: str):
    """One split of a local dataset folder: a `Dataset`/`DatasetDict.save_to_disk` folder, or a folder
    of data files (train.jsonl, data/test-*.parquet, ...) read by `datasets`' own folder loader."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        ds = load_from_disk(str(path))
        if not isinstance(ds, DatasetDict):
            if split != "train":  # the default: a single saved Dataset has no splits to choose from
                raise HubError(f"{path} is a single dataset without splits; leave split: out", "split")
            return ds
        if split not in ds:
            raise HubError(f"{path} has no split '{split}'; splits: {', '.join(ds)}", "split")
        return ds[split]
    return _pick(lambda: load_dataset(str(path), config, split=split), str(path), split)


def _pick(load, name: str, split: str):
    """Run a `load_dataset` call, turning its unknown-split and unknown-config errors into HubError."""
    try:
        return load()
    except ValueError as e:
        text = str(e)
        if "Unknown split" in text:
            raise HubError(f"{name}: {text}", "split") from None
        if "BuilderConfig" in text or "config name" in text.lower():
            raise HubError(f"{name}: {text}", "config") from None
        raise
