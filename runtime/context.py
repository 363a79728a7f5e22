"""What every stage starts from: this experiment's slice of params.yaml, validated by the spec model,
as a `StageContext` (project root, name, spec, run and data folders). Imported by every stage module;
imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from tunebook.compiler.errors import SpecError, SpecIssue
from tunebook.compiler.load import path_problems
from tunebook.compiler.schema import Spec
from tunebook.compiler.yamlio import Loader

# The environment variables that set CPU thread counts (runtime/stages.py fixes them before torch loads):
# they change the order of float reductions, so the train summary and the record both name them. Only
# these names are ever recorded; the environment is never copied wholesale (it holds tokens).
THREAD_VARS = ("TUNEBOOK_CPU_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class StageContext:
    root: Path
    name: str
    spec: Spec
    params: dict  # this experiment's raw slice of params.yaml (spec file, hashes, baseline key)

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / self.name

    @property
    def data_dir(self) -> Path:
        return self.root / "data" / self.name


def read_params(root: Path) -> dict:
    path = root / "params.yaml"
    if not path.exists():
        raise SpecError([SpecIssue("params.yaml", "", "not found: run `tunebook compile` first")])
    # As the compiler and DVC read it (YAML 1.2 numbers): DVC writes `-S lr=1e-5` as `lr: 1e-05`,
    # which PyYAML's YAML 1.1 reader takes for the text "1e-05".
    return yaml.load(path.read_text(), Loader=Loader) or {}


def experiment_context(root: Path, name: str) -> StageContext:
    params = read_params(root)
    if name not in params or name in ("baselines", "builtin"):
        known = sorted(k for k in params if k not in ("baselines", "builtin"))
        raise SpecError([SpecIssue("params.yaml", name, f"no experiment '{name}'; known: {', '.join(known) or 'none'}")])
    raw = params[name]
    body = {k: v for k, v in raw.items() if k not in ("spec", "spec_sha256", "baseline")}
    try:
        spec = Spec.model_validate({"name": name, **body})
    except Exception as e:  # a `dvc exp run -S` value of the wrong type lands here
        raise SpecError([SpecIssue("params.yaml", name, f"invalid parameters: {e}")]) from None
    check_paths(spec, root, (name,))  # `-S` and hand edits bypass the compiler
    return StageContext(root=root, name=name, spec=spec, params=raw)


def check_paths(spec: Spec, root: Path, where: tuple, skip: tuple = ()) -> None:
    """The compiler's path confinement again, where params.yaml is read: a SpecError naming
    `params.yaml: <where>.<key>` for each input path that is unusable or leaves the project.
    `skip` names top-level sections not to check (a probe spec's placeholder data)."""
    problems = [(loc, msg) for loc, msg in path_problems(spec, root) if loc[0] not in skip]
    if problems:
        raise SpecError([SpecIssue("params.yaml", ".".join(map(str, (*where, *loc))), msg) for loc, msg in problems])
