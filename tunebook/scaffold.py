"""`tunebook init`: adopt tunebook in an existing git repository.

    pip install tunebook[runtime]    # after the torch build for your machine
    cd my-project && tunebook init   # specs/first.yaml, specs/schema.json, .dvc/, dvc.yaml, .gitignore

Creates specs/ with a starter spec (the embedded tiny model, so it runs at once on a laptop), the spec
JSON Schema for editor completion, runs `dvc init` when the repository has no .dvc/, compiles, and
keeps a `.gitignore` block for every output DVC caches (weights, checkpoints, prepared data) so a
failed run never leaves them for `git add -A`. Existing files are never overwritten. Everything that
can fail is checked before the first file is written, and a failure part-way removes what this run
created: init either adopts the project or leaves it as it was.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tunebook.compiler import compile_specs, load_specs, write_pipeline
from tunebook.compiler.ignore import write_gitignore
from tunebook.compiler.schema import NAME_RE, file_schema_text


class InitError(Exception):
    """Bad input to `tunebook init` (not a git repository, bad name): exit 2, nothing written."""

    exit_code = 2


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

def _dvc() -> str:
    dvc = Path(sys.executable).with_name("dvc")
    return str(dvc) if dvc.exists() else (shutil.which("dvc") or "dvc")


def _git_toplevel(root: Path) -> Path | None:
    try:
        res = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(res.stdout.strip()).resolve() if res.returncode == 0 and res.stdout.strip() else None


def init_project(root: Path, name: str) -> list[str]:
    # 1. Everything that can be refused, before anything is written.
    if not NAME_RE.match(name):
        raise InitError(f"'{name}' is not a valid experiment name: use lowercase letters, digits, '_' and '-' (e.g. 'first')")
    top = _git_toplevel(root)
    if top is None:
        raise InitError(f"{root} is not inside a git repository: run `git init` there first (DVC versions data with git)")
    if top != root.resolve():
        raise InitError(f"{root} is inside the git repository {top}, not at its top: run `tunebook init` in {top} "
                        "(DVC keeps .dvc/ beside .git)")
    if shutil.which(_dvc()) is None and not Path(_dvc()).exists():
        raise InitError("`dvc` was not found: install tunebook with its dependencies (`pip install tunebook`) in this environment")
    specs = root / "specs"
    starter = specs / f"{name}.yaml"
    spec_files = sorted(p for p in specs.glob("*.yaml") if not p.name.startswith("_")) if specs.is_dir() else []
    starter_text = None if starter.exists() else STARTER.format(name=name)

    # 2. Compile in memory: a spec the user already has that does not compile stops us here, unwritten.
    cache_existed = (root / ".tunebook").exists()
    staging = root / ".tunebook" / "init-staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        paths = [p for p in spec_files if p != starter] + [starter]
        if starter_text is not None:
            (staging / starter.name).write_text(starter_text)
            paths = [p for p in spec_files if p != starter] + [staging / starter.name]
        compile_specs(load_specs(paths, root))
    finally:
        shutil.rmtree(staging if cache_existed else root / ".tunebook", ignore_errors=True)

    # 3. Write, remembering what was created so a failure can take it back.
    created: list[Path] = []
    said: list[str] = []
    gitignore = root / ".gitignore"
    gitignore_before = gitignore.read_text() if gitignore.exists() else None
    try:
        if not specs.exists():
            specs.mkdir()
            created.append(specs)
        if starter_text is None:
            said.append(f"kept existing specs/{starter.name}")
        else:
            starter.write_text(starter_text)
            created.append(starter)
            said.append(f"wrote specs/{starter.name}")
        schema = specs / "schema.json"
        if not schema.exists():
            created.append(schema)
        schema.write_text(file_schema_text())  # the raw-file schema editors check specs against
        if not (root / ".dvc").is_dir():
            env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
            created += [root / ".dvc", root / ".dvcignore"]
            subprocess.run([_dvc(), "init", "-q"], cwd=root, check=True, env=env, capture_output=True)
            subprocess.run([_dvc(), "config", "core.analytics", "false"], cwd=root, check=True, env=env, capture_output=True)
            said.append("ran dvc init")
        for f in ("dvc.yaml", "params.yaml"):
            if not (root / f).exists():
                created.append(root / f)
        pipeline = compile_specs(load_specs([p for p in spec_files if p != starter] + [starter], root))
        write_pipeline(root, pipeline)
        write_gitignore(root, pipeline)
    except BaseException:
        for path in reversed(created):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        if gitignore_before is None:
            gitignore.unlink(missing_ok=True)
        else:
            gitignore.write_text(gitignore_before)
        raise
    said += ["compiled specs/ -> dvc.yaml, params.yaml; .gitignore lists the outputs DVC caches",
             f"Next: `dvc repro`, then read logs/{name}.md; commit specs/, dvc.yaml, params.yaml, .gitignore and, "
             "after a run, dvc.lock"]
    return said
