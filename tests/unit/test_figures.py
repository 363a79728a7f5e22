"""bench/figures.py: the README figures blocks are what the run records say. The real-model example's
block (examples/smollm2/README.md) is checked against its committed records, so an edited record, a
hand-typed figure or a change in how the reports compute a row fails here; the quickstart's block keeps
its marker and needs `make demo`'s records, so it is checked there (`make demo` runs --check)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import figures

PROJECT = "examples/smollm2"
EXAMPLE = figures.ROOT / PROJECT


def _records(root: Path, names) -> bool:
    return all((root / "runs" / n / "record.json").exists() for n in names)


def test_the_example_lists_all_four_experiments():
    assert figures.project_experiments(EXAMPLE) == ["arith-chat", "arith-completion", "arith-dpo", "arith-grpo"]


def test_the_examples_readme_block_is_written_from_its_records():
    names = figures.project_experiments(EXAMPLE)
    if not _records(EXAMPLE, names):
        pytest.skip(f"the records of {PROJECT} are not all here: `dvc repro` there first")
    begin = figures.project_begin(PROJECT)
    new = figures.block(EXAMPLE, names, begin)
    readme = (EXAMPLE / "README.md").read_text()
    assert begin in readme, "the example's README has no figures block for --project"
    assert figures.replace_block(readme, new, begin) == readme, \
        f"`python -m bench.figures --project {PROJECT} --write` and commit: the README differs from the records"
    for name in names:
        assert f"| **{name}** |" in new


def test_the_cli_checks_a_project(capsys):
    names = figures.project_experiments(EXAMPLE)
    if not _records(EXAMPLE, names):
        pytest.skip(f"the records of {PROJECT} are not all here")
    assert figures.main(["--project", PROJECT, "--check"]) == 0
    assert "match" in capsys.readouterr().out


def test_the_root_block_keeps_its_marker_and_experiments():
    """--project leaves the root README's block as it was: the same marker, the same experiments."""
    readme = (figures.ROOT / "README.md").read_text()
    assert figures.BEGIN in readme and figures.END in readme
    assert figures.EXPERIMENTS == ("quickstart", "quickstart-kl")
    assert figures.project_begin(PROJECT) != figures.BEGIN


def test_replace_block_refuses_a_readme_without_the_markers():
    with pytest.raises(SystemExit, match="no figures block"):
        figures.replace_block("# a readme\n", "x", figures.project_begin(PROJECT))
    text = f"a\n{figures.project_begin(PROJECT)}\nold\n{figures.END}\nb\n"
    assert figures.replace_block(text, "NEW", figures.project_begin(PROJECT)) == "a\nNEW\nb\n"


def test_experiments_need_a_project():
    with pytest.raises(SystemExit):
        figures.main(["--experiments", "arith-chat"])
