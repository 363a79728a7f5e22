"""A bad checkpoint never blocks a run (issue 16, class 9).

A checkpoint whose trainer_state.json is there but whose weights are truncated, missing or garbage is
skipped with a message naming it and why, and the run resumes from the one before
(runtime/train.last_checkpoint, runtime/durable.py). A save is fsynced and sealed, so a checkpoint
that lost a file's tail after it was sealed is caught by its sizes even when its headers parse.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reliability.tally import tried


def make_checkpoint(out: Path, step: int, sealed: bool = True) -> Path:
    import torch
    from safetensors.torch import save_file

    from tunebook.runtime.durable import seal

    c = out / f"checkpoint-{step}"
    c.mkdir(parents=True)
    save_file({"a": torch.ones(64, 8), "b": torch.zeros(16)}, str(c / "adapter_model.safetensors"))
    (c / "adapter_config.json").write_text("{}")
    torch.save({"state": {0: torch.ones(64, 8)}}, c / "optimizer.pt")
    torch.save({"last_epoch": step}, c / "scheduler.pt")
    torch.save({"python": 1}, c / "rng_state.pth")
    (c / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if sealed:
        seal(c)
    return c


def truncate(p: Path, keep: float = 0.5) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * keep)])


ATTACKS = {
    "weights missing": lambda c: (c / "adapter_model.safetensors").unlink(),
    "weights truncated": lambda c: truncate(c / "adapter_model.safetensors"),
    "weights zero bytes": lambda c: (c / "adapter_model.safetensors").write_bytes(b""),
    "weights header garbage": lambda c: (c / "adapter_model.safetensors").write_bytes(b"\xff" * 4096),
    "weights one byte short": lambda c: truncate(c / "adapter_model.safetensors", 0.9999),
    "optimizer truncated": lambda c: truncate(c / "optimizer.pt"),
    "optimizer zero bytes": lambda c: (c / "optimizer.pt").write_bytes(b""),
    "scheduler truncated": lambda c: truncate(c / "scheduler.pt", 0.3),
    "rng state garbage": lambda c: (c / "rng_state.pth").write_bytes(b"not a zip"),
    "sharded index names a missing shard": lambda c: ((c / "adapter_model.safetensors").rename(c / "model-00001-of-00002.safetensors"),
                                                      (c / "model.safetensors.index.json").write_text(json.dumps(
                                                          {"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                                          "b": "model-00002-of-00002.safetensors"}}))),
    "sealed file lost its tail (zeros, headers fine)": lambda c: (c / "adapter_config.json").write_text("{ }"),
    "a sealed file removed": lambda c: (c / "adapter_config.json").unlink(),
    "seal unreadable": lambda c: (c / "tunebook-sealed.json").write_text("{"),
    "trainer state unreadable": lambda c: (c / "trainer_state.json").write_text("{"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_broken_last_checkpoint_is_skipped_for_the_one_before(tmp_path, attack):
    from tunebook.runtime.train import last_checkpoint

    make_checkpoint(tmp_path, 10)
    bad = make_checkpoint(tmp_path, 20)
    ATTACKS[attack](bad)
    said: list[str] = []
    chosen = last_checkpoint(tmp_path, say=said.append)
    assert chosen is not None and chosen.name == "checkpoint-10", chosen
    if attack != "trainer state unreadable":  # that one was never a finished save: ignored silently, as before
        assert len(said) == 1 and "checkpoint-20" in said[0], said
    tried("faults")


def test_whole_checkpoints_are_resumed_sealed_or_not(tmp_path):
    from tunebook.runtime.train import last_checkpoint

    make_checkpoint(tmp_path, 10)
    make_checkpoint(tmp_path, 20, sealed=False)  # a checkpoint from before sealing existed: headers checked
    said: list[str] = []
    assert last_checkpoint(tmp_path, say=said.append).name == "checkpoint-20" and not said


def test_nothing_usable_means_a_fresh_start_with_a_message(tmp_path):
    from tunebook.runtime.train import last_checkpoint

    c = make_checkpoint(tmp_path, 5)
    truncate(c / "adapter_model.safetensors")
    said: list[str] = []
    assert last_checkpoint(tmp_path, say=said.append) is None and len(said) == 1
    tried("faults")


def test_sealing_writes_the_seal_last_and_atomically(tmp_path, monkeypatch):
    """A kill (or power loss) before the seal's rename leaves no seal: headers decide; after it, sizes do."""
    import os

    from tunebook.runtime import durable

    c = make_checkpoint(tmp_path, 1, sealed=False)
    synced: list[str] = []
    real = durable._fsync
    monkeypatch.setattr(durable, "_fsync", lambda p: (synced.append(Path(p).name), real(p))[1])
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(durable.os, "replace", lambda a, b: (replaced.append(set(synced)), real_replace(a, b))[1])
    durable.seal(c)
    files = {"adapter_model.safetensors", "optimizer.pt", "trainer_state.json", "scheduler.pt", "rng_state.pth"}
    assert replaced and files <= replaced[0], "the seal was renamed into place before every file was fsynced"
    assert (c / durable.SEAL).exists() and not list(c.glob(".*.tmp"))
    tried("faults")
