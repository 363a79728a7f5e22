"""Helpers for the train-stage tests (test_train and its family: anchor, dpo, grpo, teacher, watchdog,
launch, precision): a throwaway project with one compiled spec, a training run, and ways to read what
it saved. The `one_thread` fixture lives in this directory's conftest.py.

Imports only tests.conftest, yaml and tunebook; torch, safetensors and the runtime load inside the
helpers, so collecting a test module stays cheap.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tests.conftest import ROOT


def spec_text(name: str = "exp", method: dict | None = None, data: dict | None = None, **parts) -> str:
    spec = {"name": name, "model": {"base": "builtin:tiny"},
            "data": data or {"train": [{"source": "data/tiny/subtraction_train.jsonl", "limit": 96}],
                             "validation": {"source": "data/tiny/subtraction_test.jsonl", "fields": {"completion": "answer"}, "limit": 32}},
            "method": {"kind": "sft", "lr": 5e-3, "batch_size": 8, "max_seq_length": 32, "log_every": 2,
                       **(method or {})}, **parts}
    return yaml.safe_dump(spec, sort_keys=False)


def project(tmp: Path, text: str, run_data: bool = True):
    """A throwaway tunebook project: the built tiny model and its data copied in, one spec compiled,
    the data stage run. Returns the train stage's context."""
    from tunebook.compiler import compile_specs, load_specs, write_pipeline
    from tunebook.runtime.context import experiment_context
    from tunebook.runtime.stages import _quiet_libraries

    for d in ("models/tiny", "data/tiny"):
        if not (tmp / d).exists():  # built by tests/unit/runtime/conftest.py when missing
            shutil.copytree(ROOT / d, tmp / d)
    (tmp / "specs").mkdir(exist_ok=True)
    name = yaml.safe_load(text)["name"]
    path = tmp / "specs" / f"{name}.yaml"
    path.write_text(text)
    write_pipeline(tmp, compile_specs(load_specs(sorted((tmp / "specs").glob("*.yaml")), tmp)), force=True)
    _quiet_libraries()
    ctx = experiment_context(tmp, name)
    if run_data:
        from tunebook.runtime import data

        data.run(ctx)
    return ctx


def train(ctx) -> dict:
    from tunebook.runtime import train as train_stage

    train_stage.run(ctx)
    return json.loads((ctx.run_dir / "train" / "summary.json").read_text())


def weights(folder: Path) -> dict:
    """Every tensor of a saved model or adapter folder."""
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def lora_b_norm(folder: Path) -> float:
    """LoRA's B matrices start at zero: any norm above zero means the adapter learned something."""
    return sum(float(t.norm()) for k, t in weights(folder).items() if "lora_B" in k)


def history(ctx) -> list[dict]:
    return json.loads((ctx.run_dir / "train" / "history.json").read_text())
