"""Every shipped study spec (studies/*/specs/*.yaml) validates, compiles, and has a smoke miniature that
validates and compiles too; each study's committed dvc.yaml and params.yaml are what its specs compile
to. No torch, no DVC runs: the miniatures run end to end in tests/e2e/test_studies_smoke.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunebook.compiler import compile_specs, discover, load_spec, load_specs, write_pipeline
from tunebook.compiler.schema import Spec
from tunebook.compiler.smoke import STANDINS, TINY, build, miniature, miniatures, overlay_builtin, representatives
from tests.conftest import ROOT

STUDIES = sorted(p for p in (ROOT / "studies").iterdir() if (p / "specs").is_dir())
SPECS = [p for study in STUDIES for p in discover(study / "specs")]


def _id(p: Path) -> str:
    return f"{p.parent.parent.name}/{p.name}"


def test_there_are_five_studies_with_experiments():
    assert [s.name[:3] for s in STUDIES] == ["000", "001", "002", "003", "004"]
    assert all(discover(s / "specs") for s in STUDIES)


@pytest.mark.parametrize("path", SPECS, ids=_id)
def test_spec_validates_and_its_miniature_runs_on_the_tiny_model(path: Path):
    study = path.parent.parent
    ls = load_spec(path, study)
    assert ls.spec.model.base != TINY, "a study spec is the full-scale experiment"
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=../../../specs/schema.json")
    assert f"tunebook -C studies/{study.name} smoke" in text  # opens with the command that runs it

    mini = miniature(ls, study)
    smoke = Spec.model_validate(mini.spec)
    assert smoke.name == ls.spec.name and smoke.description.startswith("SMOKE")
    roles = [smoke.model.base] + ([smoke.method.teacher.base] if smoke.method.teacher else [])
    roles += [smoke.eval.reward.model] if smoke.eval.reward else []
    roles += [j.model for j in smoke.eval.judge.judges] if smoke.eval.judge else []
    assert set(roles) == {TINY}
    assert not smoke.eval.judge or all(j.kind == "hf" for j in smoke.eval.judge.judges)  # no endpoint is called
    inputs = [s.source for s in smoke.data.train] + [t.source for t in smoke.eval.target]
    inputs += [smoke.data.validation.source] if smoke.data.validation else []
    inputs += [ps.prompts for ps in (smoke.eval.reward, smoke.eval.judge) if ps]
    assert all(p.startswith(STANDINS) and p in mini.files for p in inputs)
    # every stage kind of the full experiment is still there
    assert smoke.method.kind == ls.spec.method.kind
    for block in ("anchor", "early_stopping", "grpo", "teacher", "dpo"):
        assert (getattr(smoke.method, block) is None) == (getattr(ls.spec.method, block) is None), block
    for suite in ("general", "reward", "judge"):
        assert (getattr(smoke.eval, suite) is None) == (getattr(ls.spec.eval, suite) is None), suite
    assert [t.name for t in smoke.eval.target] == [t.name for t in ls.spec.eval.target]
    assert smoke.eval.loss == ls.spec.eval.loss
    # every replacement is written down
    assert any(n.startswith("model ") for n in mini.notes)


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.name)
def test_committed_full_pipeline_is_up_to_date(study: Path):
    """`tunebook -C studies/<name> compile --check`: the committed dvc.yaml/params.yaml are the full ones."""
    loaded = load_specs(discover(study / "specs"), study)
    write_pipeline(study, compile_specs(loaded), check=True)  # StaleError if not
    assert (study / ".dvc").is_dir(), "each study is its own DVC project (dvc init --subdir)"


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.name)
def test_smoke_project_compiles_to_a_valid_dvc_pipeline(study: Path, tmp_path: Path):
    from dvc.schema import COMPILED_MULTI_STAGE_SCHEMA  # the schema dvc itself validates dvc.yaml with

    loaded = load_specs(discover(study / "specs"), study)
    built = build(loaded, study, tmp_path)
    names, files = built.names, built.files
    assert sorted(names) == sorted(ls.spec.name for ls in loaded)
    assert set(built.run) <= set(names) and built.run
    assert all((tmp_path / f).is_file() for f in files)
    dvc = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    COMPILED_MULTI_STAGE_SCHEMA(dvc)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["builtin"]["tiny"]["pretrain"]["steps"] == 150  # the short pre-training
    assert params["builtin"]["tiny"]["model"]["num_labels"] == 1  # so the tiny model is also a reward model
    # the full experiment's stage kinds, all of them, and nothing else
    kinds = {n.split("-", 1)[0] for n in dvc["stages"]}
    assert kinds >= {"pretrain", "data", "train", "eval", "report", "baseline"}
    assert ("teacher" in kinds) == any(ls.spec.method.teacher for ls in loaded)
    notes = (tmp_path / "SMOKE.md").read_text()
    assert all(f"## {n} " in notes for n in names)
    # rebuilt from the same specs: byte-identical
    before = {f: (tmp_path / f).read_bytes() for f in files}
    build(loaded, study, tmp_path)
    assert {f: (tmp_path / f).read_bytes() for f in files} == before


def test_study_readmes_show_their_commands():
    for study in STUDIES:
        readme = (study / "README.md").read_text()
        assert f"tunebook -C studies/{study.name} smoke" in readme, study.name
        assert "dvc repro" in readme, study.name


def test_overlay_keeps_the_rest_of_the_tiny_config():
    params = {"builtin": {"tiny": {"pretrain": {"steps": 700, "lr": 0.003}, "model": {"hidden_size": 128}}}}
    tiny = overlay_builtin(params)["builtin"]["tiny"]
    assert tiny == {"pretrain": {"steps": 150, "lr": 0.003}, "model": {"hidden_size": 128, "num_labels": 1}}


def test_a_source_of_unknown_format_is_refused_by_name(tmp_path: Path):
    from tunebook.compiler.errors import SpecError

    spec = tmp_path / "x.yaml"
    spec.write_text("name: x\nmodel: {base: org/model}\ndata:\n  train: [{source: hf:org/data}]\n")
    with pytest.raises(SpecError) as e:
        miniature(load_spec(spec, tmp_path), tmp_path)
    issue = e.value.issues[0]
    assert issue.path == "data.train.0.format" and "set `format:`" in str(issue)


def test_one_experiment_runs_per_code_path():
    """Experiments that differ only in values share a smoke run; every method, extraction and suite
    still runs in one of them."""
    runs = {}
    for study in STUDIES:
        minis = miniatures(load_specs(discover(study / "specs"), study), study)
        runs[study.name[:3]] = sorted(set(representatives(minis).values()))
    assert runs["000"] == ["twix-exp1-aggressive", "twix-exp2-conservative", "twix-exp3-kl", "twix-exp4-mix-kl-warmup"]
    # GT-SFT is one path; SF-SFT and GRPO differ by how answers are read (GSM8K and MATH's smoke teacher both anchor)
    assert runs["001"] == ["grpo-gsm8k", "grpo-math", "grpo-triviaqa", "gt-sft-gsm8k", "sf-sft-gsm8k", "sf-sft-triviaqa"]
    assert runs["003"] == ["aqua-cot50", "arc-cot50-ppo", "gsm8k-cot100"]  # letters, letters with PPO, numbers
    assert runs["004"] == ["brie-in-domain"]


def test_a_dpo_spec_on_gpus_with_a_stratified_mix_gets_a_miniature(tmp_path: Path):
    """Paths the five studies do not take: DPO (preference stand-ins), resources, stratify, an
    early-stopping metric the tiny tasks do not report."""
    spec = tmp_path / "x.yaml"
    spec.write_text("""\
name: x
model: {base: org/model, revision: main}
data:
  train:
    - {source: hf:org/prefs, weight: 0.5, fields: {prompt: q, chosen: good, rejected: bad}}
    - {source: hf:org/prefs2, weight: 0.5, format: preference}
  stratify: topic
  sample_ratio: 0.5
method:
  kind: dpo
  early_stopping: {"on": general, every: 100, metric: prompt_level_strict_acc}
eval: {general: {preset: forgetting-10}, checkpoints: {every: 500}}
resources: {gpus: 8, strategy: fsdp}
""")
    mini = miniature(load_spec(spec, tmp_path), tmp_path)
    smoke = Spec.model_validate(mini.spec)
    assert [s.format for s in smoke.data.train] == ["preference", "preference"]
    rows = [__import__("json").loads(line) for line in mini.files[smoke.data.train[0].source].splitlines()]
    assert set(rows[0]) == {"q", "good", "bad", "topic"}  # the source's own columns, and the strata column
    assert len(rows) == 48  # 48 rows x weight 0.5 / sample ratio 0.5
    assert smoke.resources is None and any("8 GPU(s)" in n for n in mini.notes)
    assert smoke.method.early_stopping.metric == "acc" and smoke.eval.checkpoints.every == 4
