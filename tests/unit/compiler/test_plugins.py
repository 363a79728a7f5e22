"""A project's plugin files (`plugins:`): `tunebook compile` reads the names they define without running
them and checks the spec's names against built-ins and plugins, each problem at the spec's line; the
plugin is a DVC dependency of the stages that look names up, and params stay as they were without one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tunebook.cli import main
from tunebook.compiler.registries import answer_transforms, definitions, extractors, rewards

SPEC = """\
name: e
model: {base: Qwen/Qwen3-0.6B}
plugins: [plugins/mine.py]
data:
  train:
    - source: data/train.jsonl
method:
  kind: grpo
  batch_size: 8
  grpo: {rewards: [exact_words, format], extract: last_word, answer_transform: after_hash}
eval:
  target:
    - name: t
      source: data/test.jsonl
      extract: last_word
      answer_transform: after_hash
"""
PLUGIN = '''\
import tunebook.plugins
from tunebook.plugins import answer_transform, extractor, reward

raise RuntimeError("compile must never run a plugin")


@reward("exact_words")
def exact_words(completion, answer, extract):
    return float(extract(completion) == answer)


@extractor("last_word")
def last_word(text):
    words = text.split()
    return words[-1] if words else None


@tunebook.plugins.answer_transform("after_hash")
def after_hash(answer):
    return answer.rsplit("#", 1)[-1].strip()
'''


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for d in ("specs", "data", "plugins"):
        (tmp_path / d).mkdir()
    rows = '{"prompt": "say hi", "answer": "# hi"}\n'
    (tmp_path / "data" / "train.jsonl").write_text(rows)
    (tmp_path / "data" / "test.jsonl").write_text(rows)
    (tmp_path / "plugins" / "mine.py").write_text(PLUGIN)
    (tmp_path / "specs" / "e.yaml").write_text(SPEC)
    return tmp_path


def tunebook(root: Path, *args: str):
    return CliRunner().invoke(main, ["-C", str(root), *args])


def edit(path: Path, old: str, new: str) -> None:
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_plugin_names_compile_without_running_the_plugin_and_it_is_a_dep_of_the_stages_that_use_names(project):
    res = tunebook(project, "compile")
    assert res.exit_code == 0, res.output
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    users = {name for name, st in stages.items() if "plugins/mine.py" in st.get("deps", [])}
    assert users == {"train-e", "eval-e", next(n for n in stages if n.startswith("baseline-"))}
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["e"]["plugins"] == ["plugins/mine.py"]
    assert params["e"]["eval"]["target"][0]["answer_transform"] == "after_hash"
    assert params["baselines"][params["e"]["baseline"]]["plugins"] == ["plugins/mine.py"]


def test_without_plugins_params_and_keys_are_as_before(project):
    """No `plugins:` and no transform: nothing new in params.yaml (existing stages stay up to date)."""
    spec = project / "specs" / "e.yaml"
    spec.write_text(SPEC.replace("plugins: [plugins/mine.py]\n", "").replace(", extract: last_word, answer_transform: after_hash", "")
                    .replace("exact_words", "exact_match").replace("      extract: last_word\n      answer_transform: after_hash\n", ""))
    res = tunebook(project, "compile")
    assert res.exit_code == 0, res.output
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert "plugins" not in params["e"] and "answer_transform" not in params["e"]["method"]["grpo"]
    assert "answer_transform" not in params["e"]["eval"]["target"][0] and "plugins" not in params["baselines"][params["e"]["baseline"]]


def test_an_unknown_name_gets_a_suggestion_from_built_ins_and_plugins(project):
    spec = project / "specs" / "e.yaml"
    edit(spec, "rewards: [exact_words, format]", "rewards: [exact_wrds, format]")
    edit(spec, "      answer_transform: after_hash\n", "      answer_transform: after_hsh\n")
    res = tunebook(project, "compile")
    assert res.exit_code == 2
    assert (f"specs/e.yaml:{line_of(spec, 'exact_wrds')}: method.grpo.rewards.0: unknown reward 'exact_wrds'" in res.output
            and "did you mean 'exact_words'?" in res.output)
    assert (f"specs/e.yaml:{line_of(spec, 'after_hsh')}: eval.target.0.answer_transform: unknown answer transform 'after_hsh'"
            in res.output and "did you mean 'after_hash'?" in res.output)
    assert not (project / "dvc.yaml").exists()


def test_a_name_no_plugin_defines_says_where_one_would_go(project):
    edit(project / "specs" / "e.yaml", "      extract: last_word\n", "      extract: zzzz\n")
    res = tunebook(project, "compile")
    assert res.exit_code == 2 and "eval.target.0.extract: unknown extractor 'zzzz'" in res.output
    assert "@extractor(\"zzzz\")" in res.output and "plugins:" in res.output


def test_a_plugin_may_not_redefine_a_built_in(project):
    edit(project / "plugins" / "mine.py", '@reward("exact_words")', '@reward("exact_match")')
    res = tunebook(project, "compile")
    assert res.exit_code == 2
    line = line_of(project / "plugins" / "mine.py", '@reward("exact_match")')
    assert (f"specs/e.yaml:3: plugins.0: reward 'exact_match' at plugins/mine.py:{line} is already defined (built in)"
            in res.output)


def test_two_plugins_may_not_define_the_same_name(project):
    (project / "plugins" / "other.py").write_text('from tunebook.plugins import extractor\n\n\n@extractor("last_word")\ndef w(t):\n    return t\n')
    edit(project / "specs" / "e.yaml", "plugins: [plugins/mine.py]", "plugins: [plugins/mine.py, plugins/other.py]")
    res = tunebook(project, "compile")
    assert res.exit_code == 2
    assert "plugins.1: extractor 'last_word' at plugins/other.py:4 is already defined (at plugins/mine.py:" in res.output


def test_a_missing_plugin_file_is_an_error_at_its_line_even_under_check(project):
    edit(project / "specs" / "e.yaml", "plugins: [plugins/mine.py]", "plugins:\n  - plugins/mien.py")
    for args in (("compile",), ("compile", "--check")):
        res = tunebook(project, *args)
        assert res.exit_code == 2, res.output
        assert "specs/e.yaml:4: plugins.0: 'plugins/mien.py' does not exist (did you mean 'plugins/mine.py'?)" in res.output


def test_a_plugin_that_does_not_parse_is_an_error_naming_its_file_and_line(project):
    edit(project / "plugins" / "mine.py", "def last_word(text):", "def last_word(text)")
    line = line_of(project / "plugins" / "mine.py", "def last_word(text)")
    res = tunebook(project, "compile")
    assert res.exit_code == 2
    assert f"specs/e.yaml:3: plugins.0: plugins/mine.py:{line}: does not parse" in res.output


def test_a_plugin_outside_the_project_is_refused(project):
    edit(project / "specs" / "e.yaml", "plugins: [plugins/mine.py]", "plugins: [../mine.py]")
    res = tunebook(project, "compile")
    assert res.exit_code == 2 and "plugins.0: '../mine.py' is outside the project" in res.output


def test_definitions_are_read_from_source_in_file_order():
    found = definitions(PLUGIN)
    assert [(d.kind, d.name) for d in found] == [("reward", "exact_words"), ("extractor", "last_word"),
                                                 ("answer transform", "after_hash")]
    assert "exact_match" in rewards() and "exact" in extractors() and answer_transforms() == ("gsm8k_hash", "boxed")
