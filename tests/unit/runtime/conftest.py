"""Runtime tests run on the real embedded model. A fresh clone (CI) has none yet, so build it once
here, before the test modules are collected, exactly as the `pretrain-tiny` stage would (same config
from compiler/tiny.yaml, seeded): a missing model is built, never a reason to skip.
"""

from __future__ import annotations

import os

import yaml

from tests.conftest import ROOT


def _ensure_tiny() -> None:
    if (ROOT / "models/tiny/config.json").exists() and (ROOT / "data/tiny/tasks").is_dir():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # as the stage sets it: no save bars
    from tunebook.runtime.builtin import build

    cfg = yaml.safe_load((ROOT / "compiler/tiny.yaml").read_text())
    build(cfg, ROOT / "models" / "tiny", ROOT / "data" / "tiny")


_ensure_tiny()
