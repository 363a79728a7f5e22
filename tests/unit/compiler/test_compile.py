"""Compilation: stage graph, exact params per stage, shared baselines, deterministic writing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunebook.compiler import StaleError, compile_specs, discover, load_specs, render_pipeline, write_pipeline
from tunebook.compiler.errors import SpecError

from .spec_helpers import EVAL, MINIMAL, pipeline

def test_stages_and_exact_params(tmp_path):
    p = pipeline(tmp_path, MINIMAL + EVAL)
    stages = {s.name: s for s in p.stages}
    assert set(stages) >= {"pretrain-tiny", "data-exp", "train-exp", "eval-exp", "report-exp"}
    assert stages["data-exp"].params == ["exp.data", "exp.eval.target"]  # it checks contamination against the targets
    assert "data/tiny/subtraction_test.jsonl" in stages["data-exp"].deps
    assert stages["train-exp"].params == ["exp.model", "exp.method"]
    assert stages["eval-exp"].params == ["exp.model", "exp.eval"]  # an eval change never retrains
    assert "data/train.jsonl" in stages["data-exp"].deps
    assert "models/tiny" in stages["train-exp"].deps


def test_baseline_shared_by_experiments_with_same_model_and_suite(tmp_path):
    a = MINIMAL + EVAL
    b = a.replace("name: exp", "name: other") + "method: {lr: 0.1}\n"
    c = a.replace("name: exp", "name: third").replace("tiny_facts_color", "tiny_facts_city")
    p = pipeline(tmp_path, a, b, c)
    baselines = [s.name for s in p.stages if s.name.startswith("baseline-")]
    assert len(baselines) == 2  # exp and other share one; third has another suite
    assert p.params["exp"]["baseline"] == p.params["other"]["baseline"] != p.params["third"]["baseline"]


def test_compiling_twice_is_byte_identical(tmp_path):
    assert render_pipeline(pipeline(tmp_path, MINIMAL + EVAL)) == render_pipeline(pipeline(tmp_path, MINIMAL + EVAL))


def test_dvc_yaml_is_valid_dvc(tmp_path):
    from dvc.schema import COMPILED_MULTI_STAGE_SCHEMA  # the schema dvc itself validates dvc.yaml with

    texts = render_pipeline(pipeline(tmp_path, MINIMAL + EVAL))
    COMPILED_MULTI_STAGE_SCHEMA(yaml.safe_load(texts["dvc.yaml"]))


def test_hand_edit_is_detected_and_not_overwritten(tmp_path):
    p = pipeline(tmp_path, MINIMAL + EVAL)
    write_pipeline(tmp_path, p)
    params = tmp_path / "params.yaml"
    edited = params.read_text().replace("lr: 0.0001", "lr: 0.5")
    params.write_text(edited)
    with pytest.raises(StaleError, match="exp.method.lr: file has 0.5"):
        write_pipeline(tmp_path, p)
    assert params.read_text() == edited  # untouched
    write_pipeline(tmp_path, p, force=True)
    assert "lr: 0.0001" in params.read_text()


def test_check_reports_stale_files(tmp_path):
    write_pipeline(tmp_path, pipeline(tmp_path, MINIMAL + EVAL))
    write_pipeline(tmp_path, pipeline(tmp_path, MINIMAL + EVAL), check=True)  # fresh: no error
    with pytest.raises(StaleError, match="out of date"):
        write_pipeline(tmp_path, pipeline(tmp_path, MINIMAL + EVAL + "expect: {target_gain: 0.2}\n"), check=True)


def test_reformatting_alone_is_not_an_edit(tmp_path):
    write_pipeline(tmp_path, pipeline(tmp_path, MINIMAL + EVAL))
    params = tmp_path / "params.yaml"
    header = "".join(params.read_text().splitlines(keepends=True)[:2])
    data = yaml.safe_load(params.read_text())
    params.write_text(header + yaml.safe_dump(data, default_flow_style=True))  # as dvc might rewrite it
    write_pipeline(tmp_path, pipeline(tmp_path, MINIMAL + EVAL))  # no StaleError


@pytest.mark.parametrize("spec", discover(Path(__file__).resolve().parents[3] / "specs"), ids=lambda p: p.name)
def test_every_shipped_spec_compiles(spec, root):
    p = compile_specs(load_specs([spec], root))
    assert any(s.name.startswith("train-") for s in p.stages)
    first = spec.read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema="), "shipped specs point editors at the schema"


def test_committed_pipeline_is_fresh(root):
    """dvc.yaml/params.yaml in the repo are exactly what specs/ compiles to."""
    write_pipeline(root, compile_specs(load_specs(discover(root / "specs"), root)), check=True)


RICH = """\
name: exp
model: {base: ./models/mine}
plugins: [plugins/mine.py]
data:
  train: [{source: data/train.jsonl, weight: 0.5}, {source: hf:org/set, weight: 0.5}]
  validation: {source: data/val.jsonl}
method:
  kind: teacher-sft
  teacher: {base: builtin:tiny}
  early_stopping: {on: general, every: 5}
eval:
  general: {tasks: [t], include_path: tasks}
  target: [{name: sub, source: data/test.jsonl}]
  reward: {prompts: data/prompts.jsonl, model: ./models/rm}
  judge: {prompts: data/prompts.jsonl, template: judge.txt, judges: [{name: j, model: builtin:tiny}]}
"""


def test_each_stage_depends_on_exactly_the_inputs_it_reads(tmp_path):
    """One tagged list of inputs (compiler/load.py input_paths) gives each stage its deps; a hub source is none."""
    stages = {s.name: s for s in pipeline(tmp_path, RICH).stages}
    deps = {name.split("-")[0]: set(s.deps) for name, s in stages.items()}
    assert deps["data"] == {"data/train.jsonl", "data/val.jsonl", "data/test.jsonl"}
    assert deps["teacher"] == {"data/exp", "models/tiny", "plugins/mine.py"}
    assert deps["train"] == {"data/exp", "./models/mine", "runs/exp/teacher", "tasks"}  # early stopping reads the suite
    assert deps["eval"] == {"runs/exp/train", "data/exp", "./models/mine", "data/test.jsonl", "tasks", "data/prompts.jsonl",
                            "./models/rm", "judge.txt", "models/tiny", "plugins/mine.py"}
    assert deps["baseline"] == {"./models/mine", "data/test.jsonl", "tasks", "plugins/mine.py"}
    grpo = RICH.replace("kind: teacher-sft\n  teacher: {base: builtin:tiny}", "kind: grpo\n  grpo: {rewards: [numeric_match]}")
    train = next(s for s in pipeline(tmp_path, grpo).stages if s.name == "train-exp")
    assert "plugins/mine.py" in train.deps  # GRPO's rewards are looked up in training


# --- what DVC refuses is refused at compile time, at the spec line --------------------------------------
def _dvc_dag(tmp_path: Path, p, *args: str):
    """`dvc dag` over the compiled pipeline in a fresh git+DVC project (its own site cache: no index
    cached by another test's path)."""
    import os
    import subprocess
    import sys

    proj = tmp_path / "dvc-project"
    proj.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run([dvc, "init", "-q"], cwd=proj, check=True)
    (proj / "dvc.yaml").write_text(render_pipeline(p)["dvc.yaml"])
    env = {**os.environ, "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site")}
    return subprocess.run([dvc, "dag", *args], cwd=proj, capture_output=True, text=True, env=env)


def _dvc_refuses(tmp_path: Path, p) -> bool:
    """Whether DVC itself refuses the pipeline (`dvc dag` builds the whole stage graph, as `dvc repro` does)."""
    res = _dvc_dag(tmp_path, p)
    assert res.returncode == 0 or "defined as both a dependency and an output" in res.stderr, res.stderr  # CyclicGraphError
    return res.returncode != 0


OTHER = MINIMAL.replace("name: exp", "name: other")


@pytest.mark.parametrize("edit, refused", [
    ("source: data/exp", True),  # the data stage's own output folder (issue 15: data/arith-chat)
    ("source: data/exp/train.jsonl", True),  # inside it
    ("source: data", True),  # holding it
    ("source: runs/exp/train/rows.jsonl", True),  # written by train-exp, which depends on data-exp: a cycle
    ("source: data/tiny/subtraction_test.jsonl", False),  # pretrain-tiny's output: stages chain that way
    ("source: data/other", False),  # another experiment's prepared data
    ("model: {base: runs/exp/train/final}", True),  # training on its own output
    ("model: {base: runs/other/train/final}", False),  # fine-tuning another experiment's model
], ids=lambda v: str(v))
def test_inputs_overlapping_outputs_are_refused_exactly_where_dvc_refuses(tmp_path, monkeypatch, edit, refused):
    import tunebook.compiler.compile as compile_mod

    spec = MINIMAL.replace("source: data/train.jsonl", edit) if edit.startswith("source") else \
        MINIMAL.replace("model: {base: builtin:tiny}", edit)
    monkeypatch.chdir(tmp_path)  # the CLI runs in the project; no runs/ yet: a model in an output is a dep before it exists
    texts = [spec, OTHER]
    paths = []
    for i, t in enumerate(texts):
        paths.append(tmp_path / f"s{i}.yaml")
        paths[-1].write_text(t)
    loaded = load_specs(paths, tmp_path)
    with monkeypatch.context() as m:  # the pipeline as it would be written without the check, for DVC to judge
        m.setattr(compile_mod, "conflicts", lambda *a: [])
        unchecked = compile_specs(loaded)
    assert _dvc_refuses(tmp_path, unchecked) == refused
    if not refused:
        compile_specs(loaded)
        return
    with pytest.raises(SpecError) as e:
        compile_specs(loaded)
    [issue] = e.value.issues
    key = "data.train.0.source" if edit.startswith("source") else "model.base"
    assert (issue.file, issue.path, issue.line) == ("s0.yaml", key, 5 if key.startswith("data") else 2)
    assert "DVC refuses" in issue.message and issue.hint


def test_the_data_folder_named_like_its_experiment_is_refused_with_what_to_do(tmp_path):
    spec = MINIMAL.replace("name: exp", "name: arith-chat").replace("data/train.jsonl", "data/arith-chat")
    with pytest.raises(SpecError) as e:
        pipeline(tmp_path, spec)
    [issue] = e.value.issues
    assert str(issue) == ("s0.yaml:5: data.train.0.source: 'data/arith-chat' is an output of stage data-arith-chat, which "
                          "reads it: a stage cannot depend on its own output (DVC refuses the pipeline, and deletes an output "
                          "before its stage runs) (move it out of data/arith-chat (e.g. to data/raw/arith-chat) and point "
                          "the spec there)")


def test_a_model_inside_another_experiments_output_is_a_dep_before_it_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    chained = MINIMAL.replace("model: {base: builtin:tiny}", "model: {base: runs/other/train/final}")
    stages = {s.name: s for s in pipeline(tmp_path, chained, OTHER).stages}
    for name in ("train-exp", "eval-exp"):
        assert "runs/other/train/final" in stages[name].deps  # DVC trains `other` first
    assert "runs/other/train/final" not in stages["data-exp"].deps


def test_an_experiment_starting_from_anothers_adapter_runs_after_it_in_dvc(tmp_path, monkeypatch):
    """SFT then GRPO (`model.base: runs/a/train/final`, a LoRA adapter merged on load): compile's checks
    accept the folder a stage will write, and `dvc dag` orders train-a before train-b, b's eval and the
    baseline of the merged model."""
    from tunebook.compiler.inputs import check_inputs, stage_outputs

    monkeypatch.chdir(tmp_path)  # no runs/ yet: a fresh clone
    a = MINIMAL.replace("name: exp", "name: a") + EVAL
    b = MINIMAL.replace("name: exp", "name: b").replace("model: {base: builtin:tiny}", "model: {base: runs/a/train/final}") + EVAL
    paths = [tmp_path / "a.yaml", tmp_path / "b.yaml"]
    for path, text in zip(paths, (a, b)):
        path.write_text(text)
    loaded = load_specs(paths, tmp_path)
    p = compile_specs(loaded)
    for _ in range(2):  # no runs/ (a fresh clone), then runs/ without a/ (read as a path, one a stage writes)
        found = check_inputs(loaded, tmp_path, stage_outputs(p))
        assert not [i for i in found.errors + found.missing if i.path == "model.base"]  # not there yet, written by train-a
        (tmp_path / "runs").mkdir(exist_ok=True)
    baseline = f"baseline-{p.params['b']['baseline']}"
    res = _dvc_dag(tmp_path, p, "--dot")
    assert res.returncode == 0, res.stderr
    edges = {tuple(s.strip().strip('"') for s in line.rstrip(";").split("->")) for line in res.stdout.splitlines() if "->" in line}
    for reader in ("train-b", "eval-b", baseline):
        assert ("train-a", reader) in edges, sorted(edges)
    assert not any(reader == "train-a" for _, reader in edges if _.endswith("-b"))


def test_overlapping_outputs_are_refused(tmp_path):
    import tunebook.compiler.compile as compile_mod

    (tmp_path / "s.yaml").write_text(MINIMAL)
    loaded = load_specs([tmp_path / "s.yaml"], tmp_path)
    stages = [compile_mod.Stage("data-exp", "x", outs=["data/exp"]), compile_mod.Stage("pretrain-x", "y", outs=["data/exp/x"]),
              compile_mod.Stage("pretrain-y", "z", outs=["data/exp"])]
    messages = [i.message for i in compile_mod.conflicts(loaded, stages)]
    assert messages == ["outputs data/exp (data-exp) and data/exp/x (pretrain-x) overlap: DVC refuses a pipeline where an "
                        "output is another's or lies inside it",
                        "data/exp is also an output of stage pretrain-y: DVC refuses a pipeline where an output is another's "
                        "or lies inside it",
                        "outputs data/exp/x (pretrain-x) and data/exp (pretrain-y) overlap: DVC refuses a pipeline where an "
                        "output is another's or lies inside it"]
