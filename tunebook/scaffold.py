"""`tunebook init`: adopt tunebook in an existing git repository.

Creates specs/ with a starter spec (the embedded tiny model, so it runs at once on a laptop), the spec
JSON Schema for editor completion, runs `dvc init` when the repository has no .dvc/,
and compiles. Existing files are never overwritten. Git ignores are left to DVC, which adds its cached
outputs to .gitignore itself; records, metrics and logs stay tracked so `dvc exp run` keeps them per
variant.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

STARTER = """\
# yaml-language-server: $schema=./schema.json
# Starter experiment: LoRA SFT of the embedded tiny model. Run it with `dvc repro`; the log is
# logs/{name}.md. To make it yours, set model.base to a hub id (and pin `revision:`) and point the
# data sources at your own files.
name: {name}
model:
  base: builtin:tiny
data:
  train:
    - source: data/tiny/subtraction_train.jsonl   # rows of {{prompt, completion}}
  validation:
    source: data/tiny/subtraction_test.jsonl
    fields: {{completion: answer}}
method:
  kind: sft
  lora: {{r: 16, alpha: 32}}   # alpha usually 2 x r
  lr: 5.0e-3
  epochs: 2
  batch_size: 16
  max_seq_length: 32
  save_every: 50
eval:
  general:
    tasks: [tiny_facts_color, tiny_facts_city]
    include_path: data/tiny/tasks
  target:
    - name: subtraction
      source: data/tiny/subtraction_test.jsonl
      extract: first_number
      max_new_tokens: 4
"""

def init_project(root: Path, name: str) -> list[str]:
    from tunebook.compiler import compile_specs, discover, load_specs, write_pipeline
    from tunebook.compiler.schema import NAME_RE, Spec

    if not NAME_RE.match(name):
        raise ValueError(f"'{name}' is not a valid experiment name: use lowercase letters, digits, '_' and '-'")
    if not (root / ".git").exists():
        raise FileNotFoundError(f"{root} is not a git repository: run `git init` first (DVC needs git)")
    said = []
    specs = root / "specs"
    specs.mkdir(exist_ok=True)
    starter = specs / f"{name}.yaml"
    if starter.exists():
        said.append(f"kept existing specs/{starter.name}")
    else:
        starter.write_text(STARTER.format(name=name))
        said.append(f"wrote specs/{starter.name}")
    (specs / "schema.json").write_text(json.dumps(Spec.model_json_schema(), indent=1, sort_keys=True) + "\n")
    if not (root / ".dvc").is_dir():
        dvc = Path(sys.executable).with_name("dvc")
        env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
        subprocess.run([str(dvc) if dvc.exists() else "dvc", "init", "-q"], cwd=root, check=True, env=env)
        subprocess.run([str(dvc) if dvc.exists() else "dvc", "config", "core.analytics", "false"], cwd=root, check=True, env=env)
        said.append("ran dvc init")
    write_pipeline(root, compile_specs(load_specs(discover(specs), root)))
    said += ["compiled specs/ -> dvc.yaml, params.yaml", f"Next: `dvc repro`, then read logs/{name}.md"]
    return said
