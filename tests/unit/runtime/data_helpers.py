"""Helpers for the data-stage tests (test_data, test_data_hub): a StageContext over a tmp_path project,
rows to write, and running the stage to read back what it wrote. Not a test module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunebook.compiler import SpecError
from tunebook.compiler.schema import Spec
from tunebook.runtime import data
from tunebook.runtime.context import StageContext

SPEC_FILE = "specs/exp.yaml"


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def context(root: Path, data_spec: dict, eval_spec: dict | None = None) -> StageContext:
    spec = Spec.model_validate({"name": "exp", "model": {"base": "builtin:tiny"}, "data": data_spec, "eval": eval_spec or {}})
    return StageContext(root=root, name="exp", spec=spec, params={"spec": SPEC_FILE})


def run(ctx: StageContext) -> dict:
    """Run the stage; return what it wrote."""
    data.run(ctx)
    out = ctx.data_dir
    read = lambda name: [json.loads(line) for line in (out / name).read_text().splitlines()]  # noqa: E731
    return {"manifest": json.loads((out / "manifest.json").read_text()), "train": read("train.jsonl"),
            "validation": read("validation.jsonl"), "quarantine": read("quarantine.jsonl")}


def pc_rows(n: int, start: int = 0) -> list[dict]:
    return [{"prompt": f"{i}-1=", "completion": str(i - 1)} for i in range(start, start + n)]


def spec_error(fn) -> list:
    with pytest.raises(SpecError) as e:
        fn()
    return e.value.issues
