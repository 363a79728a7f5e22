"""How tunebook writes and fingerprints files: one atomic writer, one JSON serializer, one dict digest.

Every layer uses these (the compiler writing dvc.yaml, the stages writing cells and summaries, the report
writing logs), so a file tunebook writes is always whole (written beside the target, fsynced, renamed,
the folder fsynced), readable by others (mode 0644 less the umask, never mkstemp's private 0600), and a
digest of the same data is the same everywhere. Standard library only: imported by the CLI at start.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write `data` to `path` so that a reader (another stage, `tunebook status`, a crash) sees the old
    file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the pid in the name lets a later writer tell a dead process's leftover from a live one's file (compiler/write.py)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # the rename itself survives a crash of the machine, not only of the process
    return path


def json_text(obj: Any) -> str:
    """The one JSON layout of tunebook's files: sorted keys, one-space indent, trailing newline."""
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def write_json_atomic(path: Path, obj: Any) -> Path:
    return write_atomic(path, json_text(obj))


def read_json(path: Path, default: Any = None) -> Any:
    """The file's JSON, or `default` when it is missing or unreadable (cut short by a kill)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return default


def read_jsonl(path: Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def dict_sha256(obj: Any, *, ascii: bool = True) -> str:
    """sha256 of `obj` as canonical JSON (sorted keys; non-JSON values as their str). Persisted
    fingerprints (stage names, cells, train runs) depend on it: changing it reruns users' stages."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=ascii, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks (weights are gigabytes)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
