"""`dvc.lock` cut short by a kill, and `tunebook repair`, which mends it.

DVC writes dvc.lock in place: it opens the file with "w+" (truncating it) and dumps the YAML through
a buffered stream (dvc/utils/serialize/_common.py, DVC 3.x). A SIGKILL in that window (OOM killer,
scancel, a preempted node, `kill -9`) leaves the file empty, or cut at a buffer boundary anywhere in a
stage's entry, and from then on every DVC command stops at
`'./dvc.lock' validation failed`. Nothing that was computed is lost (the outputs are on disk and in
the cache); only DVC's record of which hashes they had is.

How tunebook mends it:
- every stage, as DVC starts it, keeps a copy of dvc.lock as DVC last wrote it whole
  (`.dvc/tmp/tunebook/dvc.lock.whole`, written atomically; DVC has finished its own write by then);
- `tunebook repair` keeps the damaged file's stage entries that are whole (every entry but the last one,
  where the cut fell, and only those DVC's own schema accepts), and takes every other stage's entry
  from that copy. The damaged file is kept beside the copy; nothing is deleted.

Why this is safe: a lock entry is a claim DVC checks against the workspace (deps, params, outs and
their hashes), never a shortcut. An entry older than the files (the stage DVC was recording when the
kill came) makes DVC see a change and rerun that one stage, which tunebook's stages make cheap: a
finished training is not retrained, computed evaluation cells are read back. An entry can only make
DVC skip a stage whose recorded hashes match what is on disk.
"""

from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import voluptuous as vol
import yaml

from tunebook.files import write_atomic

LOCK = "dvc.lock"
KEEP = Path(".dvc/tmp/tunebook")  # DVC's own scratch folder: local, never committed, never hashed
WHOLE = KEEP / "dvc.lock.whole"
_STAGE_LINE = re.compile(r"^  (?! )(?!-)(?!#)\S")  # a stage's key: two spaces of indent, then the name


def _load(text: str):
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return None


def _looks_whole(data) -> bool:
    """Cheap structural check (no DVC import): what a stage start needs before keeping a copy."""
    if not isinstance(data, dict) or "schema" not in data or not isinstance(data.get("stages"), dict):
        return False
    for entry in data["stages"].values():
        if not isinstance(entry, dict) or not isinstance(entry.get("cmd"), (str, list)):
            return False
        for key in ("deps", "outs"):
            if not all(isinstance(x, dict) and isinstance(x.get("path"), str) for x in entry.get(key) or []):
                return False
    return True


def keep_whole_copy(root: Path) -> None:
    """At a stage's start: remember dvc.lock as DVC last wrote it (no-op when it is absent or damaged,
    and when the copy is already the same). Never fails the stage."""
    try:
        text = (root / LOCK).read_text(encoding="utf-8")
        if not text.endswith("\n") or not _looks_whole(_load(text)):
            return
        copy = root / WHOLE
        if copy.exists() and copy.read_text(encoding="utf-8") == text:
            return
        write_atomic(copy, text)
    except (OSError, UnicodeDecodeError):
        return


def _schema_error(data, *, stage: bool = False) -> str | None:
    """DVC's own rule for the whole lock file (or, with `stage`, for one stage's entry): None when it holds."""
    from dvc.schema import COMPILED_LOCK_FILE_STAGE_SCHEMA, COMPILED_LOCKFILE_SCHEMA  # lazy: importing DVC costs 0.4 s; stages only keep the copy

    try:
        (COMPILED_LOCK_FILE_STAGE_SCHEMA if stage else COMPILED_LOCKFILE_SCHEMA)(data)
    except vol.Invalid as e:
        return str(e)
    return None


@dataclass
class Damage:
    why: str
    dvc_refuses: bool  # False: DVC would take the cut file and rerun every stage whose entry the cut lost


def damage(root: Path) -> Damage | None:
    """What is wrong with dvc.lock, or None when it is whole (or absent: nothing ran yet).

    DVC's writer ends the file with a newline, so a file without one was cut short, even when what is
    left still passes DVC's schema (a hash cut in half is still a string). A cut that falls exactly at
    a line's end is not seen here: DVC then takes the shorter file and reruns what it lost."""
    path = root / LOCK
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return Damage("it is not UTF-8 text", True)
    if not text.strip():
        return Damage("it is empty", True)
    n = len(text.splitlines())
    data = _load(text)
    why = "it does not parse as YAML" if data is None else _schema_error(data)
    if why is not None:
        return Damage(f"{why} ({n} lines, cut short?)", True)
    if not text.endswith("\n"):
        return Damage(f"it ends mid-line (line {n}: {text.splitlines()[-1][:60]!r}), cut short", False)
    return None


def _blocks(text: str) -> list[tuple[str, dict | None]]:
    """The stage entries of a (possibly cut) dvc.lock text, in order: (name, entry or None when it does
    not parse). None at all when the cut fell before the `stages:` line."""
    lines = text.splitlines(keepends=True)
    try:
        start = next(i for i, ln in enumerate(lines) if ln.rstrip() == "stages:") + 1
    except StopIteration:
        return []
    heads = [i for i in range(start, len(lines)) if _STAGE_LINE.match(lines[i])]
    out = []
    for a, b in zip(heads, heads[1:] + [len(lines)]):
        parsed = _load("stages:\n" + "".join(lines[a:b]))
        stages = parsed.get("stages") if isinstance(parsed, dict) else None
        if isinstance(stages, dict) and len(stages) == 1:
            name, entry = next(iter(stages.items()))
            out.append((str(name), entry if isinstance(entry, dict) else None))
        else:
            out.append((lines[a].strip().rstrip(":").strip("'\""), None))
    return out


def _pipeline_stages(root: Path) -> list[str]:
    try:
        data = _load((root / "dvc.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return []
    stages = data.get("stages") if isinstance(data, dict) else None
    return [str(k) for k in stages] if isinstance(stages, dict) else []


@dataclass
class Mended:
    why: str  # what was wrong (Damage.why)
    kept: list[str] = field(default_factory=list)  # whole entries of the damaged file
    restored: list[str] = field(default_factory=list)  # from the whole copy
    dropped: list[str] = field(default_factory=list)  # the cut fell in their entry, and no copy has one: DVC reruns them
    missing: list[str] = field(default_factory=list)  # dvc.yaml's other stages without an entry (after the cut, or never run)
    copy_taken: float | None = None  # the whole copy's mtime
    damaged_kept_at: Path | None = None


class DvcBusy(Exception):
    exit_code = 1
    traceback_helps = False  # the message says all there is


class Damaged(Exception):
    """dvc.lock needs `tunebook repair` (exit 3: a generated file is not what its writer wrote)."""
    exit_code = 3
    traceback_helps = False


@contextmanager
def dvc_idle(root: Path):
    """Hold DVC's own repository lock (.dvc/tmp/lock) for the duration: no DVC command runs meanwhile,
    and none starts. A running `dvc repro` holds it; a killed one's lock is released by the kernel."""
    from dvc.lock import LockError, make_lock  # lazy: importing DVC costs 0.4 s; stages only keep the copy

    (root / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    lock = make_lock(str(root / ".dvc" / "tmp" / "lock"), tmp_dir=str(root / ".dvc" / "tmp"))
    try:
        lock.lock()
    except LockError:
        raise DvcBusy("a DVC command is running in this project (it holds .dvc/tmp/lock): "
                      "let it finish or stop it, then run `tunebook repair` again") from None
    try:
        yield
    finally:
        lock.unlock()


def _set_aside(root: Path, path: Path) -> Path:
    """A copy of a damaged file under KEEP, named by the time, never over an earlier one."""
    stem = f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
    n = 0
    while (kept := root / KEEP / (stem if n == 0 else f"{stem}-{n}")).exists():
        n += 1
    return write_atomic(kept, path.read_bytes())


def repair(root: Path) -> Mended | None:
    """Mend dvc.lock (see the module docstring). None when it is whole: nothing is written then.
    The caller holds `dvc_idle(root)`."""
    found = damage(root)
    if found is None:
        return None
    path, copy_path = root / LOCK, root / WHOLE
    text = path.read_bytes().decode("utf-8", errors="replace")
    blocks = _blocks(text)
    whole = _load(copy_path.read_text(encoding="utf-8")) if copy_path.exists() else None
    whole_stages = whole["stages"] if _looks_whole(whole) else {}
    m = Mended(found.why, copy_taken=copy_path.stat().st_mtime if whole_stages else None)

    stages: dict[str, dict] = {}
    for i, (name, entry) in enumerate(blocks):
        last = i == len(blocks) - 1  # where the cut fell: its values may be cut mid-hash, never trusted
        if not last and entry is not None and _schema_error(entry, stage=True) is None:
            stages[name] = entry
            m.kept.append(name)
    for name, entry in whole_stages.items():
        if name not in stages and _schema_error(entry, stage=True) is None:
            stages[name] = entry
            m.restored.append(name)
    m.dropped = [name for name, _ in blocks if name not in stages]
    m.missing = [name for name in _pipeline_stages(root) if name not in stages and name not in m.dropped]
    mended = {"schema": "2.0", "stages": stages}
    assert _schema_error(mended) is None, "a mended dvc.lock must satisfy DVC's schema"

    m.damaged_kept_at = _set_aside(root, path)
    # DVC's own layout (ruamel, block style, key order kept), so the next DVC write changes only what it must
    write_atomic(path, yaml.safe_dump(mended, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096))
    return m


RWLOCK = Path(".dvc/tmp/rwlock")


def repair_rwlock(root: Path) -> Path | None:
    """DVC's record of which running process reads or writes which path (`.dvc/tmp/rwlock`, JSON) is
    written in place too; cut short, every `dvc repro` stops at "Unable to read RWLock-file ... JSON
    structure is corrupted". With DVC's repository lock held (`dvc_idle`) no DVC process of this
    workspace is running, so none of its entries can be live: the damaged file is moved aside (DVC
    starts an empty one). Returns where it was kept, or None when it was whole or absent."""
    path = root / RWLOCK
    try:
        json.loads(path.read_text(encoding="utf-8"))
        return None
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        kept = _set_aside(root, path)
        path.unlink()
        return kept


def describe(m: Mended, root: Path) -> str:
    def names(xs: list[str]) -> str:
        return ", ".join(xs) if len(xs) <= 8 else ", ".join(xs[:8]) + f", … ({len(xs)} in all)"

    lines = [f"dvc.lock was damaged: {m.why}. DVC was most likely killed while writing it."]
    if m.kept:
        lines.append(f"kept as DVC wrote them: {len(m.kept)} stage(s) ({names(m.kept)})")
    if m.restored:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.copy_taken)) if m.copy_taken else "?"
        lines.append(f"from the copy a stage kept as it started ({WHOLE}, {when}): {len(m.restored)} stage(s) ({names(m.restored)})")
    elif not m.copy_taken:
        lines.append(f"no whole copy to take the rest from ({WHOLE} is written as each stage starts)")
    if m.dropped:
        lines.append(f"no whole entry left for: {names(m.dropped)} (the cut fell in it)")
    if m.missing:
        lines.append(f"no entry for: {names(m.missing)} (lost after the cut, or never run)")
    if m.dropped or m.missing:
        lines.append(f"`dvc repro` runs these {len(m.dropped) + len(m.missing)} stage(s) again")
    rel = m.damaged_kept_at.relative_to(root) if m.damaged_kept_at else "?"
    lines.append(f"the damaged file is kept at {rel}. Next: `dvc status`, then `dvc repro` "
                 "(a stage whose entry is older than its outputs reruns; finished training is not redone)")
    return "\n".join(lines)
