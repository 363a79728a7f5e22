"""params.yaml after `dvc exp run -S`: compared as data, a variant is said to be one, a hand edit is refused.

DVC rewrites params.yaml through its own `apply_overrides` (ruamel: `key:` for null, its own wrapping);
these tests call that very function, so they see the file exactly as `dvc exp run -S` leaves it.
"""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from tunebook.cli import main
from tunebook.compiler import StaleError, write_pipeline

from .spec_helpers import EVAL, MINIMAL, pipeline

dvc_hydra = pytest.importorskip("dvc.utils.hydra")


def dvc_set(path, *overrides: str) -> None:
    """What `dvc exp run -S <override>` does to params.yaml before it runs anything."""
    dvc_hydra.apply_overrides(path, list(overrides))


@pytest.fixture(autouse=True)
def _cwd(tmp_path):
    # `tunebook -C` changes directory (an earlier test's, since deleted); DVC's overrides need a real cwd
    os.chdir(tmp_path)
    yield
    os.chdir(ROOT)


@pytest.fixture
def compiled(tmp_path):
    p = pipeline(tmp_path, MINIMAL + EVAL)
    write_pipeline(tmp_path, p)
    return tmp_path, p


def test_dvc_reformatting_alone_passes_check(compiled):
    root, p = compiled
    params = root / "params.yaml"
    before = params.read_text()
    dvc_set(params, "exp.method.lr=0.0001")  # the value it already has: only the formatting changes
    assert params.read_text() != before and "revision: null" not in params.read_text()
    assert write_pipeline(root, p, check=True).notes == []


def test_a_dvc_exp_variant_passes_check_with_a_note(compiled):
    root, p = compiled
    params = root / "params.yaml"
    dvc_set(params, "exp.method.lr=1e-2", "exp.method.max_steps=5")
    variant = params.read_text()
    result = write_pipeline(root, p, check=True)
    (note,) = result.notes
    assert "`dvc exp` variant, not a hand edit" in note
    assert "exp.method.lr=0.01 (spec: 0.0001)" in note and "exp.method.max_steps=5 (spec: None)" in note
    assert "tunebook compile --force" in note
    # compile keeps it (the specs did not change: nothing to compile), --force returns to the specs
    assert write_pipeline(root, p) == [] and params.read_text() == variant
    assert write_pipeline(root, p, force=True) == ["params.yaml"] and "lr: 0.0001" in params.read_text()


def test_cli_check_shows_the_note_and_exits_0(tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs/exp.yaml").write_text(MINIMAL + EVAL)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/train.jsonl").write_text('{"prompt": "1-1=", "completion": "0"}\n')  # compile checks it exists
    assert CliRunner().invoke(main, ["-C", str(tmp_path), "compile"]).exit_code == 0
    dvc_set(tmp_path / "params.yaml", "exp.method.lr=0.02")
    res = CliRunner().invoke(main, ["-C", str(tmp_path), "compile", "--check"])
    assert res.exit_code == 0, res.output
    assert "variant, not a hand edit: exp.method.lr=0.02" in res.stderr


@pytest.mark.parametrize("edit", [
    lambda t: t.replace("lr: 0.0001", "lr: 0.5"),  # a typed value, in tunebook's style: an editor did it
    lambda t: t.replace("lr: 0.0001", "lr: fast").replace(": null", ":"),  # DVC's style, but a type changed
])
def test_a_hand_edit_still_exits_3_and_check_names_a_command_that_works(compiled, edit):
    root, p = compiled
    params = root / "params.yaml"
    text = edit(params.read_text())
    params.write_text(text)
    with pytest.raises(StaleError) as check:
        write_pipeline(root, p, check=True)
    assert "params.yaml was changed after `tunebook compile` wrote it" in str(check.value)
    assert "exp.method.lr: file has" in str(check.value)
    assert "`tunebook compile --force`" in str(check.value)  # not plain `tunebook compile`, which refuses
    with pytest.raises(StaleError, match="Nothing was written"):
        write_pipeline(root, p)
    assert params.read_text() == text
    write_pipeline(root, p, force=True)  # the command --check named works
    write_pipeline(root, p, check=True)


@pytest.mark.parametrize("override", [
    "exp.spec_sha256=abc",  # the compiler's bookkeeping, not an experiment value
    "builtin.tiny.seed=7",  # not an experiment's section: changes every experiment's base model
    "+exp.method.learnig_rate=0.1",  # a key the specs do not have
])
def test_dvc_overrides_outside_an_experiments_values_are_not_variants(compiled, override):
    root, p = compiled
    dvc_set(root / "params.yaml", override)
    with pytest.raises(StaleError, match="in DVC's style, but not only in an experiment's values"):
        write_pipeline(root, p, check=True)


def test_variant_and_changed_specs_need_force(compiled, tmp_path):
    """Specs changed since the variant's file was compiled: the two cannot be told apart, so compile
    refuses, and --check says `--force`, the command that then works."""
    root, _ = compiled
    dvc_set(root / "params.yaml", "exp.method.lr=0.02")
    changed = pipeline(tmp_path, MINIMAL + EVAL + "expect: {target_gain: 0.2}\n")
    with pytest.raises(StaleError) as check:
        write_pipeline(root, changed, check=True)
    assert "`dvc exp run -S` or `dvc exp apply`), and specs/ changed since" in str(check.value)
    assert "`tunebook compile --force`" in str(check.value)
    with pytest.raises(StaleError):
        write_pipeline(root, changed)
    write_pipeline(root, changed, force=True)
    write_pipeline(root, changed, check=True)


def test_spec_change_alone_sends_to_plain_compile(compiled, tmp_path):
    root, _ = compiled
    changed = pipeline(tmp_path, MINIMAL + EVAL + "expect: {target_gain: 0.2}\n")
    with pytest.raises(StaleError, match=r"Fix: `tunebook compile`\.$"):
        write_pipeline(root, changed, check=True)
    write_pipeline(root, changed)  # works, as --check said
