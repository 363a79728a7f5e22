"""Checkpoints that are whole or not used: verified before a resume, sealed after a save (issue 16).

A trainer writes `checkpoint-<step>/` file by file and `trainer_state.json` last, without fsync: after a
kill the state file marks a finished save, but after a power loss the page cache may have kept the
state file and lost the weights' tail, and a disk that filled up mid-save leaves a short file. Such a
checkpoint used to be picked on every resume, and the stage then failed forever.

- `seal(ckpt)`, run by the train stage right after each save (`SealCallback`): fsyncs every file of the
  checkpoint and the folder, then writes `tunebook-sealed.json` (each file's size) atomically (temporary
  file, fsync, rename, fsync of the folder). A checkpoint with a seal was on disk whole when sealed.
- `problem(ckpt)`: why a checkpoint cannot be resumed from, or None: the state file must parse; weights
  must be there (safetensors, a sharded index with every shard, or a torch .bin); every safetensors
  header must parse and its tensors end exactly at the file's end; torch zip files (`optimizer.pt`,
  `scheduler.pt`, `rng_state*.pth`, `*.bin`) must have their central directory; a sealed checkpoint's
  files must have the sizes the seal lists. Checks headers and sizes, not every byte: milliseconds.
- `usable(checkpoints, say)`: the checkpoints that pass, saying which were skipped and why; the train
  stage resumes from the last of them (so it falls back to the previous one).
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

SEAL = "tunebook-sealed.json"
WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "adapter_model.bin", "pytorch_model.bin")
INDEXES = ("model.safetensors.index.json", "adapter_model.safetensors.index.json", "pytorch_model.bin.index.json")
ZIPS = ("optimizer.pt", "scheduler.pt")


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name} is {size} bytes: no header"
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 << 20):
                return f"{path.name}: header length {n} exceeds the file ({size} bytes): truncated"
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return f"{path.name}: unreadable header ({e.__class__.__name__})"
    if not isinstance(header, dict):
        return f"{path.name}: unreadable header"
    ends = [t.get("data_offsets", [0, 0])[1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    want = 8 + n + max(ends, default=0)
    if want != size:
        return f"{path.name} is {size} bytes, its header describes {want}: {'truncated' if want > size else 'trailing bytes'}"
    return None


def _zip_problem(path: Path) -> str | None:
    try:
        if path.stat().st_size == 0 or not zipfile.is_zipfile(path):
            return f"{path.name} ({path.stat().st_size} bytes) is not a whole torch file: truncated"
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.header_offset + info.compress_size > path.stat().st_size:
                    return f"{path.name}: member {info.filename} runs past the end: truncated"
    except (OSError, zipfile.BadZipFile) as e:
        return f"{path.name}: {e}"
    return None


def _file_problem(path: Path) -> str | None:
    if not path.is_file():
        return f"{path.name} is missing"
    if path.name.endswith(".safetensors"):
        return _safetensors_problem(path)
    if path.suffix in (".bin", ".pt", ".pth"):
        return _zip_problem(path)
    return None


def problem(ckpt: Path) -> str | None:
    """Why `ckpt` cannot be resumed from, or None."""
    ckpt = Path(ckpt)
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
        if not isinstance(state, dict):
            raise ValueError
    except (OSError, ValueError):
        return "trainer_state.json is missing or unreadable (the save was cut short)"
    seal = ckpt / SEAL
    if seal.exists():
        try:
            sizes = json.loads(seal.read_text())["sizes"]
        except (OSError, ValueError, KeyError, TypeError):
            return f"{SEAL} is unreadable"
        for name, size in sorted(sizes.items()):
            p = ckpt / name
            if not p.is_file():
                return f"{name} is missing (it was there when the checkpoint was sealed)"
            if p.stat().st_size != size:
                return f"{name} is {p.stat().st_size} bytes, {size} when sealed"
    return weights_problem(ckpt)


def weights_problem(folder: Path) -> str | None:
    """Why the weights in `folder` (a checkpoint, or a delivered final/) are not whole, or None."""
    ckpt = Path(folder)
    weights = [ckpt / w for w in WEIGHTS if (ckpt / w).exists()]
    for index in (ckpt / i for i in INDEXES):
        if index.exists():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return f"{index.name} is unreadable"
            weights += [ckpt / s for s in shards]
    if not weights:
        return f"no weights (adapter_model.safetensors, model.safetensors or a sharded index) in {ckpt.name}/"
    for p in weights + [ckpt / z for z in ZIPS if (ckpt / z).exists()] + sorted(ckpt.glob("rng_state*.pth")):
        if (msg := _file_problem(p)) is not None:
            return msg
    return None


def usable(found: list[Path], say=print) -> list[Path]:
    """The checkpoints of `found` that pass `problem`, saying which were skipped and why."""
    out = []
    for c in found:
        msg = problem(c)
        if msg is None:
            out.append(c)
        else:
            say(f"[train] skipping {c.name}: {msg}; it is not resumed from (delete it, or leave it: the next save replaces it)")
    return out


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal(ckpt: Path) -> None:
    """Make a just-saved checkpoint durable, then mark it so: see the module docstring."""
    ckpt = Path(ckpt)
    sizes = {}
    for p in sorted(ckpt.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name != SEAL and not p.name.startswith(f".{SEAL}"):
            _fsync(p)
            sizes[p.relative_to(ckpt).as_posix()] = p.stat().st_size
    for d in sorted({p.parent for p in ckpt.rglob("*")} | {ckpt}):
        _fsync(d)
    tmp = ckpt / f".{SEAL}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"sizes": sizes}, f, sort_keys=True, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, ckpt / SEAL)
    _fsync(ckpt)
    _fsync(ckpt.parent)


def seal_callback():
    """A TrainerCallback that seals each checkpoint right after the trainer saved it (main process)."""
    from transformers import TrainerCallback

    class SealCallback(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.is_world_process_zero:
                ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if ckpt.is_dir():
                    seal(ckpt)

    return SealCallback()
