"""The general suite through lm-eval on the real tiny model: the preset, unknown tasks with a
did-you-mean, local tasks scored with their primary metric and harness recorded, and the fingerprint
inputs (config hash, lm-eval version, local task files)."""

from __future__ import annotations

import shutil

import pytest

from tunebook.compiler.errors import SpecError
from tunebook.compiler.schema import PRESETS, GeneralEval, ModelSpec
from tunebook.runtime.suites import general

from .eval_helpers import REPO


@pytest.fixture(scope="module")
def tiny():
    from tunebook.runtime.models import load_model, load_tokenizer

    spec = ModelSpec(base="builtin:tiny")
    return load_model(REPO, spec).eval(), load_tokenizer(REPO, spec)


def test_forgetting_10_preset_expands_with_primary_metrics_and_round_trips():
    g = GeneralEval(preset="forgetting-10", tasks=["tiny_facts_color"], primary_metrics={"boolq": "acc_norm"})
    assert g.tasks[:10] == list(PRESETS["forgetting-10"]) and g.tasks[10:] == ["tiny_facts_color"]
    assert g.primary_metrics["ifeval"] == "prompt_level_strict_acc" and g.primary_metrics["mmlu"] == "acc"
    assert g.primary_metrics["boolq"] == "acc_norm"  # the spec's choice wins over the preset's
    assert g.num_fewshot == 0
    assert GeneralEval.model_validate(g.model_dump(mode="json")) == g  # params.yaml re-validates unchanged
    with pytest.raises(ValueError, match="tasks"):
        GeneralEval()
    with pytest.raises(ValueError, match="not in `tasks`"):
        GeneralEval(tasks=["a"], primary_metrics={"b": "acc"})


LOCAL = GeneralEval(tasks=["tiny_facts_color"], include_path="data/tiny/tasks", limit=12,
                    primary_metrics={"tiny_facts_color": "acc_norm"})


@pytest.fixture(scope="module")
def tm():
    return general.task_manager(REPO, LOCAL)  # ~8 s of indexing: shared


def test_unknown_task_says_did_you_mean_and_the_preset_tasks_are_all_known(tm):
    g = GeneralEval(preset="forgetting-10", tasks=["arc_chalenge"])
    with pytest.raises(SpecError) as e:
        general.check_tasks(tm, g.tasks)
    issues = e.value.issues
    assert len(issues) == 1  # the ten preset tasks resolve; only the typo is reported
    assert "arc_chalenge" in issues[0].message and "arc_challenge" in (issues[0].hint or "")


def test_general_suite_on_local_tasks_marks_primary_metric_and_records_harness(tiny, tm, capfd, caplog):
    model, tok = tiny
    res = general.eval_general(model, tok, LOCAL, tm, "base")
    printed = capfd.readouterr()
    assert "Running loglikelihood" not in printed.err + printed.out  # the sweep's own progress line is enough
    # issue 12: lm-eval's warnings about how it is called ("Overwriting default num_fewshot", "Passed an
    # already-initialized model") leaked into every eval stage's log
    # (progress bars are TQDM_DISABLE's, which a stage sets before any library is imported)
    assert [ln for ln in (printed.err + printed.out).splitlines() if ln.strip() and "%|" not in ln] == []
    assert [r.getMessage() for r in caplog.records if r.name.startswith("lm_eval")] == []
    by_metric = {m["metric"]: m for m in res["metrics"]}
    assert set(by_metric) == {"acc", "acc_norm"}
    assert by_metric["acc_norm"]["extra"]["primary"] is True and by_metric["acc"]["extra"]["primary"] is False
    assert by_metric["acc"]["n"] == 12 and len(by_metric["acc"]["samples"]) == 12
    assert res["lm_eval"]["version"] == general.lm_eval_version() is not None
    info = res["lm_eval"]["tasks"]["tiny_facts_color"]
    assert info["datasets"][0]["path"] == "json" and len(info["config_sha256"]) == 64 and not res["warnings"]


def test_config_hash_ignores_the_temp_folder_but_not_the_data(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"q": 1}\n')
    cfg = {"task": "t", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
           "metadata": {"config_source": "/tmp/tunebook-tasks-abc/t.yaml"}}
    moved = {**cfg, "metadata": {"config_source": "/tmp/tunebook-tasks-xyz/t.yaml"}}
    assert general._config_identity(cfg)[0] == general._config_identity(moved)[0]
    h = general._config_identity(cfg)[0]
    data.write_text('{"q": 2}\n')
    assert general._config_identity(cfg)[0] != h


def test_general_cell_inputs_follow_lm_eval_version_and_local_task_files(tmp_path, monkeypatch):
    shutil.copytree(REPO / "data" / "tiny" / "tasks", tmp_path / "tasks")
    g = GeneralEval(tasks=["tiny_facts_color"], include_path="tasks")
    before = general.general_inputs(tmp_path, g)
    assert before["lm_eval"] == general.lm_eval_version() is not None
    with monkeypatch.context() as m:
        m.setattr(general, "lm_eval_version", lambda: "9.9.9")
        assert general.general_inputs(tmp_path, g) != before  # a new harness is never silently reused
    assert general.general_inputs(tmp_path, g) == before
    with (tmp_path / "tasks" / "tiny_facts_color.jsonl").open("a") as f:
        f.write('{"query": "q", "choices": ["a", "b"], "label": 0}\n')
    assert general.general_inputs(tmp_path, g) != before  # nor an edited local task
