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

import json
import os
import re
from pathlib import Path

import yaml

from tunebook.compiler.policy import repo_id_problem, revision_problem

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


def _checked(repo_id: str, revision: str | None) -> None:
    """A repo id and revision that cannot steer a path out of the hub cache (compiler/policy.py): the
    compiler checks them too, this is for params.yaml edited behind its back."""
    if problem := repo_id_problem(repo_id):
        raise HubError(problem, "source")
    if problem := revision_problem(revision):
        raise HubError(f"revision {problem}", "revision")


def cached_commit(repo_id: str, revision: str | None, repo_type: str) -> str | None:
    """The commit a branch or tag pointed to when it was last fetched into the local hub cache."""
    _checked(repo_id, revision)
    repo = _cache_dir(repo_id, repo_type)
    ref = repo / "refs" / (revision or "main")
    if not ref.is_file() or not ref.resolve().is_relative_to(repo.resolve()):
        return None
    commit = ref.read_text(errors="replace")[:100].strip()
    return commit if is_commit(commit) else None  # a ref holds a commit, nothing else


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
    _checked(repo_id, revision)
    if _offline():
        commit = revision if is_commit(revision) else cached_commit(repo_id, revision, "dataset")
        repo = _cache_dir(repo_id, "dataset")
        snapshot = repo / "snapshots" / (commit or "-")
        if snapshot.is_dir() and not snapshot.resolve().is_relative_to(repo.resolve()):
            raise HubError(f"the cached snapshot of '{repo_id}' at {commit} resolves outside the hub cache "
                           f"({snapshot.resolve()}): not read", "revision")
        if not snapshot.is_dir():
            refs = sorted(p.name for p in (_cache_dir(repo_id, "dataset") / "refs").glob("*"))
            cached = f"cached revisions: {', '.join(refs)}" if refs else "nothing of it is cached"
            raise HubError(f"revision '{revision or 'main'}' of dataset '{repo_id}' is not in the local hub cache "
                           f"({cached}); it may not exist, or was never downloaded: run once with TUNEBOOK_ONLINE=1",
                           "revision" if refs else "source")
        # a snapshot's files are symlinks into the repo's blobs/: that, and nothing else, may be read
        return load_local_dataset(snapshot, config, split, inside=[repo]), commit

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


def load_local_dataset(path: Path, config: str | None, split: str, inside: list[Path] | None = None):
    """One split of a local dataset folder: a `Dataset`/`DatasetDict.save_to_disk` folder, or a folder
    of data files (train.jsonl, data/test-*.parquet, ...) read by `datasets`' own folder loader.
    Every file it would read must lie inside the folder or `inside` (confine_folder)."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    confine_folder(path, [path, *(inside or [])])

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


# --- what a dataset folder may make `datasets` read ----------------------------------------------------
MAX_FOLDER_FILES = 100_000


def confine_folder(folder: Path, roots: list[Path]) -> None:
    """Raise HubError unless every file `datasets` may read from `folder` lies inside `roots`: each file
    and folder below it with symlinks resolved, the `data_files` of a README's dataset card (no absolute
    path, URL, `~` or `..`), and the file names a `save_to_disk` folder's state.json lists."""
    folder = Path(folder)
    roots = [Path(r).resolve() for r in roots]

    def check(p: Path, shown: str) -> None:
        try:
            target = p.resolve(strict=False)
        except (OSError, RuntimeError) as e:
            raise HubError(f"{folder}: '{shown}' cannot be resolved ({e})") from None
        if not any(target.is_relative_to(r) for r in roots):
            raise HubError(f"{folder}: '{shown}' leads to {target}, outside the dataset folder: not read (a dataset "
                           "folder's files stay inside it; copy the file in instead)")

    seen = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            seen += 1
            if seen > MAX_FOLDER_FILES:
                raise HubError(f"{folder}: more than {MAX_FOLDER_FILES} files; not read")
            p = Path(dirpath) / name
            if p.is_symlink():
                check(p, p.relative_to(folder).as_posix())
                if p.is_dir():  # os.walk does not enter it; what is below it stays below its (checked) target
                    for sub in p.rglob("*"):
                        check(sub, sub.relative_to(folder).as_posix())
    for ref in _card_data_files(folder / "README.md") + _state_files(folder):
        if not isinstance(ref, str) or "://" in ref or "::" in ref or ref.startswith(("/", "~", "\\")) or \
                ".." in Path(ref.replace("\\", "/")).parts or (len(ref) > 1 and ref[1] == ":"):
            raise HubError(f"{folder}: the dataset names the file {str(ref)[:120]!r}, outside the folder (an absolute "
                           "path, a URL or '..'): not read")
        for match in folder.glob(ref) if any(c in ref for c in "*?[") else [folder / ref]:
            check(match, ref)


def _card_data_files(readme: Path) -> list:
    """Every `data_files` entry in a dataset card's YAML front matter (what `datasets` would read)."""
    if not readme.is_file():
        return []
    text = readme.read_text(encoding="utf-8", errors="replace")[: 1 << 20]
    if not text.startswith("---"):
        return []
    end = text.find("\n---", 3)
    try:
        meta = yaml.safe_load(text[3:end if end > 0 else None]) or {}
    except Exception:  # noqa: BLE001 - a card `datasets` cannot parse either is not ours to read
        return []
    out: list = []

    def walk(v) -> None:
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, list):
            for x in v:
                walk(x.get("path") if isinstance(x, dict) else x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif v is not None:
            out.append(v)

    configs = meta.get("configs") if isinstance(meta, dict) else None
    for cfg in configs if isinstance(configs, list) else []:
        if isinstance(cfg, dict):
            walk(cfg.get("data_files"))
            if cfg.get("data_dir") is not None:
                out.append(cfg["data_dir"])
    return out


def _state_files(folder: Path) -> list:
    """The file names a `save_to_disk` folder's state.json files list (joined to their folder when loaded)."""
    out: list = []
    for state in [folder / "state.json", *folder.glob("*/state.json")]:
        try:
            data = json.loads(state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for f in data.get("_data_files", []) if isinstance(data, dict) else []:
            name = f.get("filename") if isinstance(f, dict) else f
            out.append(name if state.parent == folder else f"{state.parent.name}/{name}" if isinstance(name, str) else name)
    splits = folder / "dataset_dict.json"
    if splits.is_file():
        try:
            names = json.loads(splits.read_text(encoding="utf-8")).get("splits", [])
        except (OSError, ValueError, AttributeError):
            names = []
        out += list(names) if isinstance(names, list) else [names]
    return out
