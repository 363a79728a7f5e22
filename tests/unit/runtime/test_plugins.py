"""The stages' side of plugins (runtime/plugins.py): a project's file imported by path, once, its names
registered beside the built-ins; an import error named by file and line; fingerprints that see an edit."""

from __future__ import annotations

import sys

import pytest

from tunebook.compiler.errors import SpecError
from tunebook.runtime import plugins
from tunebook.runtime.extract import ANSWER_TRANSFORMS, EXTRACTORS
from tunebook.runtime.rewards import REWARDS, bind

PLUGIN = '''\
from tunebook.plugins import answer_transform, extractor, reward


@reward("{p}_quarter")
def quarter(completion, answer, extract):
    return 0.25


@extractor("{p}_last_word")
def last_word(text):
    return text.split()[-1] if text.split() else None


@answer_transform("{p}_after_hash")
def after_hash(answer):
    return answer.rsplit("#", 1)[-1].strip()
'''


@pytest.fixture
def forget():
    """Each test's plugin names and modules are dropped afterwards, so tests do not see each other's."""
    before = {id(r): set(r) for r in (REWARDS, EXTRACTORS, ANSWER_TRANSFORMS)}
    mods = set(sys.modules)
    yield
    for r in (REWARDS, EXTRACTORS, ANSWER_TRANSFORMS):
        for name in set(r) - before[id(r)]:
            del r[name]
    for m in set(sys.modules) - mods:
        sys.modules.pop(m)
        plugins.LOADED.pop(m, None)


def write(root, rel: str, text: str):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_plugin_registers_its_names_once_and_the_fingerprint_sees_its_file(tmp_path, forget):
    write(tmp_path, "plugins/mine.py", PLUGIN.format(p="t1"))
    plugins.load(tmp_path, ["plugins/mine.py"])
    plugins.load(tmp_path, ["plugins/mine.py"])  # a second load imports nothing twice
    assert "tunebook_plugin_plugins_mine" in sys.modules
    assert bind("t1_quarter", "t1_last_word", "t1_after_hash")("any thing", "#x") == 0.25
    assert EXTRACTORS["t1_last_word"]("the answer is cat") == "cat" and ANSWER_TRANSFORMS["t1_after_hash"]("a # b") == "b"
    code = plugins.code(["t1_quarter", "numeric_match"], "first_number")
    assert list(code["plugins"]) == ["plugins/mine.py"] and len(code["plugins"]["plugins/mine.py"]) == 64
    assert plugins.code(["numeric_match"], "first_number", "gsm8k_hash") == {}  # built-ins only: as before plugins


def test_an_import_error_names_the_file_and_line(tmp_path, forget):
    write(tmp_path, "plugins/bad.py", "import os\n\nx = undefined_name\n")
    with pytest.raises(SpecError) as e:
        plugins.load(tmp_path, ["plugins/bad.py"])
    assert str(e.value) == "plugins/bad.py:3: plugin failed to import: NameError: name 'undefined_name' is not defined"
    assert "tunebook_plugin_plugins_bad" not in sys.modules


def test_a_plugin_redefining_a_built_in_fails_naming_both_definitions(tmp_path, forget):
    write(tmp_path, "p.py", 'from tunebook.plugins import reward\n\n\n@reward("numeric_match")\ndef mine(completion, answer, extract):\n    return 1.0\n')
    with pytest.raises(SpecError, match=r"p.py:4: plugin failed to import: ValueError: reward 'numeric_match' is defined twice: "
                                         r"at .*p.py:4 \(mine\) and at .*runtime/rewards.py:\d+ \(numeric_match\)"):
        plugins.load(tmp_path, ["p.py"])
    assert REWARDS["numeric_match"].__module__ == "tunebook.runtime.rewards"


def test_a_missing_plugin_is_a_spec_error_at_its_key(tmp_path, forget):
    with pytest.raises(SpecError, match="params.yaml: plugins.0: plugin 'nope.py' does not exist"):
        plugins.load(tmp_path, ["nope.py"])
