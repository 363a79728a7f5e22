"""Spec loading: validation, located errors with suggestions, `extends:` inheritance."""

from __future__ import annotations

import pytest

from tunebook.compiler import SpecError, load_spec, load_specs
from tunebook.compiler.load import discover

from .spec_helpers import MINIMAL, write


def test_minimal_spec_gets_defaults(tmp_path):
    ls = load_spec(write(tmp_path, "exp.yaml", MINIMAL), tmp_path)
    assert ls.spec.method.kind == "sft" and ls.spec.method.lora.r == 8
    assert ls.file == "exp.yaml" and len(ls.sha256) == 64


def test_typo_names_file_line_path_and_suggestion(tmp_path):
    text = MINIMAL + "method:\n  kind: sft\n  learnig_rate: 1.0e-5\n"
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, "exp.yaml", text), tmp_path)
    [issue] = e.value.issues
    assert (issue.file, issue.line, issue.path) == ("exp.yaml", 8, "method.learnig_rate")
    assert "unknown key 'learnig_rate'" in issue.message
    # the suggestion reaches `lr` through the transformers name `learning_rate`
    assert issue.hint == "did you mean 'lr'?"


def test_all_errors_are_gathered(tmp_path):
    text = MINIMAL + "method:\n  lr: -1\n  batch_size: zero\n  epochs: 1\nexpect:\n  forgeting: {warn: 0, fail: 0}\n"
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, "exp.yaml", text), tmp_path)
    paths = {i.path for i in e.value.issues}
    assert {"method.lr", "method.batch_size", "expect.forgeting"} <= paths
    assert any(i.hint == "did you mean 'forgetting'?" for i in e.value.issues)


def test_bad_yaml_is_located(tmp_path):
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, "exp.yaml", "name: x\nmodel: [unclosed\n"), tmp_path)
    assert e.value.issues[0].line is not None and "not valid YAML" in e.value.issues[0].message


def test_weights_must_sum_to_one(tmp_path):
    text = MINIMAL.replace("    - source: data/train.jsonl\n",
                           "    - {source: a.jsonl, weight: 0.8}\n    - {source: b.jsonl, weight: 0.3}\n")
    with pytest.raises(SpecError, match="sum to 1.1"):
        load_spec(write(tmp_path, "exp.yaml", text), tmp_path)


def test_sample_ratio_bounds(tmp_path):
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, "exp.yaml", MINIMAL + "  sample_ratio: 1.5\n"), tmp_path)
    assert e.value.issues[0].path == "data.sample_ratio"


def test_extends_deep_merges_child_wins(tmp_path):
    write(tmp_path, "_base.yaml", MINIMAL + "method:\n  lr: 1.0e-5\n  lora: {r: 8, alpha: 16}\n")
    child = write(tmp_path, "child.yaml", "extends: _base.yaml\nname: child\nmethod:\n  lora: {r: 4}\n")
    s = load_spec(child, tmp_path).spec
    assert s.name == "child" and s.method.lr == 1e-5 and s.method.lora.r == 4 and s.method.lora.alpha == 16


def test_error_in_inherited_value_points_at_parent(tmp_path):
    write(tmp_path, "_base.yaml", MINIMAL + "method:\n  lr: fast\n")
    child = write(tmp_path, "child.yaml", "extends: _base.yaml\nname: child\n")
    with pytest.raises(SpecError) as e:
        load_spec(child, tmp_path)
    assert (e.value.issues[0].file, e.value.issues[0].line) == ("_base.yaml", 7)


def test_extends_cycle_is_an_error(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\n" + MINIMAL)
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(SpecError, match="inheritance cycle"):
        load_spec(tmp_path / "a.yaml", tmp_path)


def test_duplicate_names_across_specs(tmp_path):
    a = write(tmp_path, "a.yaml", MINIMAL)
    b = write(tmp_path, "b.yaml", MINIMAL)
    with pytest.raises(SpecError, match="also used by"):
        load_specs([a, b], tmp_path)


def test_alias_bomb_is_refused_quickly(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefg", "bcdefgh"))
    with pytest.raises(SpecError, match="alias bomb"):
        load_spec(write(tmp_path, "bomb.yaml", bomb), tmp_path)


def test_unsafe_tags_are_refused(tmp_path):
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(write(tmp_path, "x.yaml", "name: !!python/object/apply:os.system ['echo hi']\n"), tmp_path)


def test_underscore_files_are_bases_not_experiments(tmp_path):
    write(tmp_path, "_base.yaml", MINIMAL)
    write(tmp_path, "real.yaml", MINIMAL)
    assert [p.name for p in discover(tmp_path)] == ["real.yaml"]


def test_unquoted_on_key_means_on(tmp_path):
    """YAML 1.1 reads `on:` as the boolean true; early_stopping takes it as the user meant it."""
    text = MINIMAL + "method:\n  early_stopping: {on: loss, every: 5}\n"
    s = load_spec(write(tmp_path, "exp.yaml", text), tmp_path).spec
    assert s.method.early_stopping.on == "loss" and s.method.early_stopping.every == 5
