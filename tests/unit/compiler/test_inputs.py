"""`tunebook compile` catches what the files on disk can tell (compiler/inputs.py): missing inputs,
columns, lm-eval task names, reward names; each at the spec's line, with a suggestion, and before
anything is written. Also the CLI's global flags after the subcommand, `schema -o -` and `init`
outside git.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tunebook.cli import main
from tunebook.compiler.inputs import first_columns, task_names_in
from tunebook.compiler.registries import answer_transforms, extractors, rewards

SPEC = """\
name: e
model: {base: Qwen/Qwen3-0.6B}
data:
  train:
    - source: data/train.jsonl
      fields: {prompt: question, completion: answer}
eval:
  general: {tasks: [tiny_one], include_path: tasks}
  target:
    - name: t
      source: data/test.csv
      prompt_field: q
      answer_field: a
"""
TASK = "task: tiny_one\ndataset_path: json\noutput_type: multiple_choice\n"
HAS_LM_EVAL = importlib.util.find_spec("lm_eval") is not None


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the CLI changes directory (-C); this puts the test's back afterwards
    (tmp_path / "specs").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "tasks").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"question": "1+1", "answer": "2"}\n{"question": "2+2", "answer": "4"}\n')
    (tmp_path / "data" / "test.csv").write_text("q,a\n1+1,2\n")
    (tmp_path / "tasks" / "tiny_one.yaml").write_text(TASK)
    (tmp_path / "specs" / "e.yaml").write_text(SPEC)
    return tmp_path


def tunebook(root: Path, *args: str):
    return CliRunner().invoke(main, ["-C", str(root), *args])


def edit(root: Path, old: str, new: str) -> None:
    p = root / "specs" / "e.yaml"
    assert old in p.read_text()
    p.write_text(p.read_text().replace(old, new))


def line_of(root: Path, text: str) -> int:
    return next(i for i, line in enumerate((root / "specs" / "e.yaml").read_text().splitlines(), 1) if text in line)


def test_the_valid_project_compiles(project):
    res = tunebook(project, "compile")
    assert res.exit_code == 0, res.output


def test_missing_data_file_is_caught_at_its_line_with_a_suggestion(project):
    edit(project, "source: data/train.jsonl", "source: data/trian.jsonl")
    res = tunebook(project, "compile")
    assert res.exit_code == 2
    line = line_of(project, "data/trian.jsonl")
    assert (f"specs/e.yaml:{line}: data.train.0.source: 'data/trian.jsonl' does not exist "
            "(did you mean 'data/train.jsonl'?)") in res.output
    assert "Traceback" not in res.output and not (project / "dvc.yaml").exists()


def test_an_input_not_there_yet_is_not_missing(project):
    # DVC tracks it (not pulled yet), or a stage of the pipeline writes it (builtin:tiny's data)
    (project / "data" / "train.jsonl").rename(project / "data" / "big.jsonl")
    (project / "data" / "big.jsonl.dvc").write_text("outs:\n- path: big.jsonl\n")
    (project / "data" / "big.jsonl").unlink()
    edit(project, "data/train.jsonl", "data/big.jsonl")
    edit(project, "model: {base: Qwen/Qwen3-0.6B}", "model: {base: builtin:tiny}\n  # data/tiny is pretrain-tiny's")
    edit(project, "  target:", "  target:\n    - {name: sub, source: data/tiny/subtraction_test.jsonl}")
    res = tunebook(project, "compile")
    assert res.exit_code == 0, res.output


def test_a_missing_input_outside_the_project_is_missing_not_a_crash(project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "gone" / "x.jsonl"
    edit(project, "source: data/train.jsonl", f"source: {outside}")
    (project / "specs" / "e.yaml").write_text((project / "specs" / "e.yaml").read_text() + "allow_external_inputs: true\n")
    res = tunebook(project, "compile")
    assert res.exit_code == 2 and f"data.train.0.source: '{outside}' does not exist" in res.output


def test_check_warns_about_a_missing_input_instead_of_failing(project):
    assert tunebook(project, "compile").exit_code == 0
    (project / "data" / "test.csv").unlink()  # a checkout where the data was not fetched
    res = tunebook(project, "compile", "--check")
    assert res.exit_code == 0, res.output
    assert "warning: specs/e.yaml" in res.output and "'data/test.csv' does not exist" in res.output


def test_missing_ok_writes_the_pipeline_before_the_data_is_there(project):
    (project / "data" / "test.csv").unlink()  # a study whose data is fetched later
    assert tunebook(project, "compile").exit_code == 2 and not (project / "dvc.yaml").exists()
    res = tunebook(project, "compile", "--missing-ok")
    assert res.exit_code == 0 and "warning: specs/e.yaml" in res.output and (project / "dvc.yaml").exists()
    edit(project, "prompt: question", "prompt: questoin")  # other mistakes still stop it
    assert tunebook(project, "compile", "--missing-ok").exit_code == 2


def test_fields_mapping_to_a_missing_column(project):
    edit(project, "prompt: question", "prompt: questoin")
    res = tunebook(project, "compile")
    assert res.exit_code == 2
    assert (f"specs/e.yaml:{line_of(project, 'questoin')}: data.train.0.fields.prompt: no column 'questoin' in "
            "data/train.jsonl (did you mean 'question'?)") in res.output


def test_format_that_the_columns_do_not_fit(project):
    edit(project, "      fields: {prompt: question, completion: answer}\n", "      format: preference\n")
    res = tunebook(project, "compile")
    assert res.exit_code == 2 and "data.train.0.format: format preference needs column 'prompt'" in res.output


def test_wrong_answer_field_is_caught_and_mints_no_baseline_stage(project):
    assert tunebook(project, "compile").exit_code == 0
    before = {f: (project / f).read_bytes() for f in ("dvc.yaml", "params.yaml")}
    edit(project, "answer_field: a", "answer_field: answer")
    res = tunebook(project, "compile")
    assert res.exit_code == 2
    assert f"specs/e.yaml:{line_of(project, 'answer_field')}: eval.target.0.answer_field: no column 'answer' in data/test.csv" in res.output
    assert {f: (project / f).read_bytes() for f in before} == before  # no second baseline-<key> stage


def test_unknown_local_task_is_caught(project):
    edit(project, "tasks: [tiny_one]", "tasks: [tiny_onee]")
    res = tunebook(project, "compile")
    if not HAS_LM_EVAL:
        assert res.exit_code == 0  # without lm-eval the check is skipped; the eval stage makes it
        return
    assert res.exit_code == 2
    assert "eval.general.tasks.0: unknown lm-eval task 'tiny_onee' (did you mean 'tiny_one'?)" in res.output


@pytest.mark.skipif(not HAS_LM_EVAL, reason="lm-eval is not installed")
def test_unknown_harness_task_is_caught_and_known_ones_pass(project):
    edit(project, "tasks: [tiny_one]", "tasks: [tiny_one, arc_easy, mmlu, arc_chalenge]")
    res = tunebook(project, "compile")
    assert res.exit_code == 2
    assert "eval.general.tasks.3: unknown lm-eval task 'arc_chalenge' (did you mean 'arc_challenge'?)" in res.output
    assert "tasks.1" not in res.output and "tasks.2" not in res.output


def test_task_index_is_read_without_importing_lm_eval_or_torch(root):
    code = ("import sys; from tunebook.compiler.inputs import lm_eval_tasks; names = lm_eval_tasks()\n"
            "assert names is None or {'arc_easy', 'mmlu', 'hellaswag'} <= names, len(names)\n"
            "assert not [m for m in ('torch', 'lm_eval') if m in sys.modules]\n")
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


def test_task_names_in_reads_every_form_lm_eval_registers(tmp_path):
    (tmp_path / "a.yaml").write_text('"task": "quoted_task"\n"tag": "quoted_tag"\n')
    (tmp_path / "b.yaml").write_text("group: a_group\ntask:\n  - quoted_task\n")
    (tmp_path / "c.yaml").write_text("task: plain  # a comment\ntag: [t1, 't2']\ndoc_to_text: !function utils.x\n")
    (tmp_path / "_template_yaml").write_text("tag:\n- t3\n  - t4\ndataset_path: x\n")
    (tmp_path / "README.md").write_text("task: not_a_task\n")
    assert task_names_in(tmp_path) == {"quoted_task", "quoted_tag", "a_group", "plain", "t1", "t2", "t3", "t4"}


def test_unknown_reward_is_caught_with_a_suggestion(project):
    edit(project, "eval:", "method:\n  kind: grpo\n  batch_size: 8\n  grpo: {rewards: [numeric_mach, format]}\neval:")
    edit(project, "      fields: {prompt: question, completion: answer}\n", "")
    res = tunebook(project, "compile")
    assert res.exit_code == 2
    assert (f"specs/e.yaml:{line_of(project, 'numeric_mach')}: method.grpo.rewards.0: unknown reward 'numeric_mach'"
            in res.output) and "did you mean 'numeric_match'?" in res.output


def test_judge_template_without_its_placeholders_and_a_missing_local_model(project):
    (project / "judge.txt").write_text("Q: {question}\nA: {answer_a}\nVerdict:")
    (project / "data" / "prompts.jsonl").write_text('{"prompt": "why"}\n')
    edit(project, "model: {base: Qwen/Qwen3-0.6B}", "model: {base: ./models/mine}")
    edit(project, "eval:", "eval:\n  judge: {prompts: data/prompts.jsonl, template: judge.txt, judges: [{name: j, model: builtin:tiny}]}")
    res = tunebook(project, "compile")
    assert res.exit_code == 2
    assert f"specs/e.yaml:{line_of(project, 'judge.txt')}: eval.judge.template: judge.txt lacks {{answer_b}}" in res.output
    assert "specs/e.yaml:2: model.base: './models/mine' does not exist" in res.output


def test_saved_dataset_folder_split_and_columns(project):
    pytest.importorskip("datasets")
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_dict({"question": ["1+1"], "answer": ["2"]}),
                 "test": Dataset.from_dict({"q": ["1+1"], "a": ["2"]})}).save_to_disk(str(project / "data" / "saved"))
    edit(project, "source: data/train.jsonl", "source: data/saved")
    edit(project, "source: data/test.csv", "source: data/saved\n      split: tset")
    res = tunebook(project, "compile")
    assert res.exit_code == 2
    assert "eval.target.0.split: data/saved has no split 'tset'; splits: train, test (did you mean 'test'?)" in res.output
    edit(project, "split: tset", "split: test")
    assert tunebook(project, "compile").exit_code == 0  # train has question/answer, test has q/a
    edit(project, "answer_field: a", "answer_field: answer")
    res = tunebook(project, "compile")
    assert res.exit_code == 2 and "eval.target.0.answer_field: no column 'answer' in data/saved" in res.output


def test_unknown_extractor_gets_a_suggestion(project):
    edit(project, "      answer_field: a\n", "      answer_field: a\n      extract: last_numbr\n")
    res = tunebook(project, "compile")
    assert res.exit_code == 2 and "(did you mean 'last_number'?)" in res.output


def test_registries_are_read_from_the_runtime_files_without_running_them():
    from tunebook.runtime.extract import ANSWER_TRANSFORMS, EXTRACTORS
    from tunebook.runtime.rewards import REWARDS

    assert set(rewards()) == set(REWARDS) and set(extractors()) == set(EXTRACTORS)
    assert set(answer_transforms()) == set(ANSWER_TRANSFORMS)


def test_first_columns_reads_only_a_head(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    assert first_columns(p) == ["a", "b"]
    (tmp_path / "b.json").write_text(json.dumps({"data": [{"x": 1}]}))
    assert first_columns(tmp_path / "b.json") == ["x"]
    (tmp_path / "c.txt").write_text("x")
    assert first_columns(tmp_path / "c.txt") is None


# --- the CLI ------------------------------------------------------------------------------------------
def test_global_flags_work_after_the_subcommand(project, tmp_path_factory):
    edit(project, "source: data/train.jsonl", "source: data/trian.jsonl")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    quiet = CliRunner().invoke(main, ["-C", str(elsewhere), "compile", "-C", str(project)])
    loud = CliRunner().invoke(main, ["compile", "-v", "-C", str(project)])
    assert quiet.exit_code == loud.exit_code == 2
    assert "does not exist" in quiet.output and "Traceback" not in quiet.output
    assert "Traceback" in loud.output


def test_schema_to_stdout(project):
    from tunebook.compiler.schema import file_schema_text

    res = tunebook(project, "schema", "-o", "-")
    assert res.exit_code == 0 and res.output == file_schema_text()
    assert not (project / "-").exists()


def test_init_outside_git_is_bad_input_without_a_traceback_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never find a repository above it
    res = tunebook(tmp_path, "init")
    assert res.exit_code == 2
    assert "not inside a git repository" in res.output and "git init" in res.output
    assert "rerun with" not in res.output and "Traceback" not in res.output
    assert not (tmp_path / "specs").exists() and not (tmp_path / ".dvc").exists()


# --- a path that is not there is not taken for a hub id (issue 15) ----------------------------------------
def test_a_mistyped_model_folder_is_no_such_folder_with_the_folder_meant(project):
    (project / "models" / "my-model").mkdir(parents=True)
    edit(project, "model: {base: Qwen/Qwen3-0.6B}", "model: {base: modles/my-model}")
    res = tunebook(project, "compile")
    assert res.exit_code == 2
    assert ("specs/e.yaml:2: model.base: 'modles/my-model' does not exist: no such folder, and 'modles' looks like a "
            "mistyped 'models/' rather than a hub organisation (did you mean 'models/my-model'?)") in res.output
    edit(project, "modles/my-model", "models/my-modle")  # the folder above is there: a path, whatever comes after
    res = tunebook(project, "compile")
    assert res.exit_code == 2 and ("model.base: 'models/my-modle' does not exist: no such folder (a path, not a hub id: "
                                   "'models/' is a folder of this project) (did you mean 'models/my-model'?)") in res.output
    edit(project, "models/my-modle", "models/my-model")
    assert tunebook(project, "compile").exit_code == 0


def test_a_hub_id_whose_organisation_is_no_project_folder_stays_a_hub_id(project):
    from tunebook.compiler.inputs import model_is_path

    for hub in ("Qwen/Qwen3-0.6B", "HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2", "meta-llama/Llama-3.2-1B"):
        assert model_is_path(hub, project) is None, hub
    assert model_is_path("/scratch/models/x", project) is None  # storage only the machines running the stages see
    for path in ("./x", "../x", "data/x", "dat/x", "tsks/x", "models/x.gguf", "x.GGUF"):
        assert model_is_path(path, project), path


def test_a_mistyped_data_folder_gets_every_part_corrected(project):
    edit(project, "source: data/train.jsonl", "source: dat/trian.jsonl")
    res = tunebook(project, "compile")
    assert res.exit_code == 2
    assert "data.train.0.source: 'dat/trian.jsonl' does not exist (did you mean 'data/train.jsonl'?)" in res.output


def test_a_local_gguf_model_must_be_there(project):
    edit(project, "model: {base: Qwen/Qwen3-0.6B}", "model: {base: models/small.Q4_K_M.gguf}")
    res = tunebook(project, "compile")
    assert res.exit_code == 2 and "model.base: 'models/small.Q4_K_M.gguf' does not exist: no such GGUF file" in res.output
