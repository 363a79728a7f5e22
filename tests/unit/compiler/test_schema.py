"""The JSON Schema of spec files (specs/schema.json) against a real validator, as editors use it.

Every shipped spec and base file (specs/, studies/*/specs/, `_` bases and files with `extends:`
included) is read as an editor reads it, YAML 1.2 through ruamel (what check-jsonschema and
yaml-language-server parse with), before any merging, and checked by the `jsonschema` package. Where
a complete spec is concerned, the schema and `tunebook compile` give the same verdict.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from tunebook.compiler import SpecError, load_spec
from tunebook.compiler.schema import file_schema, file_schema_text
from tests.conftest import ROOT

SPEC_DIRS = [ROOT / "specs", *sorted(p / "specs" for p in (ROOT / "studies").iterdir() if (p / "specs").is_dir())]
FILES = [p for d in SPEC_DIRS for p in sorted(d.glob("*.yaml"))]
VALIDATOR = jsonschema.Draft202012Validator(file_schema())


def editor_view(text: str):
    return YAML(typ="safe", pure=True).load(text)


def schema_errors(text: str) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(editor_view(text))]


def test_schema_is_valid_and_the_shipped_copies_are_current():
    jsonschema.Draft202012Validator.check_schema(file_schema())
    # the schema files editors point at (`# yaml-language-server: $schema=...`)
    copies = [d / "schema.json" for d in SPEC_DIRS if (d / "schema.json").exists()]
    assert ROOT / "specs" / "schema.json" in copies
    for copy in copies:
        assert copy.read_text() == file_schema_text(), f"{copy} is stale: run `tunebook schema -o {copy}`"


def test_every_shipped_file_is_checked():
    assert len(FILES) >= 32
    assert any(p.name.startswith("_") for p in FILES)
    assert any("\nextends:" in p.read_text() for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_file_passes_the_schema(path: Path):
    assert schema_errors(path.read_text()) == []


SPEC = """\
name: x
model: {base: builtin:tiny}
data:
  train: [{source: data/a.jsonl}]
"""

# (a line added to a complete spec, valid?): the schema and the CLI must say the same
CASES = [
    ("method: {lr: 1.0e-5}", True),
    ("method: {lr: 1e-5}", True),  # YAML 1.2 reads a number with an exponent and no dot as a number
    ('method: {lr: "1e-5"}', False),  # quoted, it is text: the editor's schema rejects it, so does the CLI
    ('method: {batch_size: "8"}', False),
    ("method: {packing: true}", True),
    ("method: {packing: yes}", False),  # YAML 1.2 has no yes/no booleans: text, as the editor sees it
    ('method: {packing: "true"}', False),
    ("method: {lr: 2}", False),  # out of bounds
    ("method: {kind: ppo}", False),
    ("method: {learning_rate: 1.0e-5}", False),
    ("method: {early_stopping: {on: loss, every: 10}}", True),
    ("eval: {checkpoints: {every: 50}}", True),
    ("eval: {checkpoints: sometimes}", False),
    ("eval: {target: [{name: t}]}", False),  # a list item is complete: `source` is required
]


@pytest.mark.parametrize("extra, valid", CASES, ids=[c for c, _ in CASES])
def test_schema_and_cli_agree(tmp_path: Path, extra: str, valid: bool):
    text = SPEC + extra + "\n"
    (tmp_path / "x.yaml").write_text(text)
    try:
        load_spec(tmp_path / "x.yaml", tmp_path)
        cli = True
    except SpecError:
        cli = False
    assert (schema_errors(text) == [], cli) == (valid, valid)


def test_partial_base_and_extends_pass_the_schema_and_compile(tmp_path: Path):
    base = "model: {base: builtin:tiny}\nmethod:\n  lr: 1.0e-4\n  anchor: {coef: 0.1}\n"
    child = "extends: _base.yaml\nname: child\ndata:\n  train: [{source: a.jsonl}]\nmethod:\n  anchor: {type: js}\n"
    assert schema_errors(base) == [] and schema_errors(child) == []
    (tmp_path / "_base.yaml").write_text(base)
    (tmp_path / "child.yaml").write_text(child)
    spec = load_spec(tmp_path / "child.yaml", tmp_path).spec
    assert spec.method.anchor.coef == 0.1 and spec.method.anchor.type == "js"
    # what the schema cannot know, a key the merge never supplies, the CLI reports
    assert schema_errors("name: y\n") == []
    with pytest.raises(SpecError, match="required key is missing"):
        (tmp_path / "y.yaml").write_text("name: y\n")
        load_spec(tmp_path / "y.yaml", tmp_path)


def test_schema_still_rejects_typos_and_bad_extends():
    assert any("learnig_rate" in e for e in schema_errors("method: {learnig_rate: 1.0e-5}\n"))
    assert schema_errors("extends: [_a.yaml, _b.yaml]\n") == []
    assert schema_errors("extends: 3\n") != []
