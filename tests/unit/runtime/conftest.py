"""Runtime tests run on the real embedded model. A fresh clone (CI) has none yet, so build it once
here, before the test modules are collected, exactly as the `pretrain-tiny` stage would (same config
from compiler/tiny.yaml, seeded): a missing model is built, never a reason to skip.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.conftest import ROOT


def _ensure_tiny() -> None:
    """Build models/tiny unless it is the build of compiler/tiny.yaml as it is now: a models/tiny left by
    a variant (`-S builtin.tiny...`) or an older tunebook is rebuilt, so tests never run on another model."""
    from tunebook.runtime.builtin import build, config_digest

    cfg = yaml.safe_load((ROOT / "compiler/tiny.yaml").read_text())
    summary = ROOT / "models/tiny/pretrain_summary.json"
    try:
        current = json.loads(summary.read_text()).get("config_sha256") == config_digest(cfg)
    except (OSError, ValueError):
        current = False
    if current and (ROOT / "models/tiny/config.json").exists() and (ROOT / "data/tiny/tasks").is_dir():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # as the stage sets it: no save bars
    build(cfg, ROOT / "models" / "tiny", ROOT / "data" / "tiny")


_ensure_tiny()


@pytest.fixture
def one_thread():
    """Two shared cores: a second OpenMP thread makes these tiny steps ~10x slower, not faster.
    Training modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
