"""A hand edit of the generated dvc.yaml or params.yaml is detected, never silently overwritten.

Random edits of the compiled files: values changed, keys added or removed, garbage appended, the
header removed or forged, the file truncated or replaced by binary, an alias bomb. Whatever the edit,
`tunebook compile` refuses (exit 3) and leaves the file byte-identical, naming it; `--force` restores
the compiled version. Reformatting alone (another YAML style, comments, the header kept) is not an
edit: compile rewrites the canonical form without complaint.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunebook.compiler.write import MARK
from tests.reliability.tally import tried
from tests.reliability.specgen import QUICKSTART, dump, nasty_values, paths_of
from tunebook.cli import main

EXAMPLES = max(50, int(os.environ.get("TUNEBOOK_FUZZ_EXAMPLES", "1500")) // 8)


@pytest.fixture(scope="module")
def compiled():
    root = Path(tempfile.mkdtemp(prefix="tunebook-edits-"))
    (root / "specs").mkdir()
    (root / "specs/fuzz.yaml").write_bytes(dump(QUICKSTART))
    assert CliRunner().invoke(main, ["-C", str(root), "compile"]).exit_code == 0
    pristine = {n: (root / n).read_bytes() for n in ("dvc.yaml", "params.yaml")}
    yield root, pristine
    shutil.rmtree(root, ignore_errors=True)


def split_header(text: str) -> tuple[str, str]:
    lines = text.splitlines(keepends=True)
    n = next(i for i, ln in enumerate(lines) if ln.startswith(MARK)) + 1
    return "".join(lines[:n]), "".join(lines[n:])


@st.composite
def semantic_edit(draw, text: str) -> bytes:
    """An edit that changes what the file says, or breaks the promise its header makes."""
    header, body = split_header(text)
    data = yaml.safe_load(body)
    op = draw(st.sampled_from(["value", "value", "delete", "add", "append", "drop-header", "forge-header",
                               "truncate", "binary", "bomb", "empty"]))
    if op in ("value", "delete", "add"):
        edited = copy.deepcopy(data)
        path = draw(st.sampled_from(paths_of(edited)))
        parent = edited
        for p in path[:-1]:
            parent = parent[p]
        if op == "value":
            new = draw(nasty_values.filter(lambda v: v != parent[path[-1]] or type(v) is not type(parent[path[-1]])))
            parent[path[-1]] = new
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in parent))] = draw(nasty_values)
        else:
            parent.append(draw(nasty_values))
        return header.encode() + dump(edited)
    if op == "append":
        return (text + draw(st.sampled_from(["extra: 1\n", "stages: {}\n", "- x\n", "  lr: 9\n"]))).encode()
    if op == "drop-header":
        return body.encode()
    if op == "forge-header":
        return (header.replace(MARK, MARK + "0") + body).encode()
    if op == "truncate":
        return text.encode()[: draw(st.integers(0, len(text) - 1))]
    if op == "binary":
        return draw(st.binary(min_size=1, max_size=200))
    if op == "bomb":
        return (header + 'a0: &a0 [x,x,x,x,x,x,x,x,x]\n'
                + "".join(f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))).encode()
    return b""


@st.composite
def cosmetic_edit(draw, text: str) -> bytes:
    """Same content, another style: what DVC or an editor may do to the file."""
    header, body = split_header(text)
    data = yaml.safe_load(body)
    style = draw(st.sampled_from(["flow", "indent", "sorted", "comments"]))
    if style == "flow":
        out = yaml.safe_dump(data, default_flow_style=True, sort_keys=False, width=80)
    elif style == "indent":
        out = yaml.safe_dump(data, indent=4, sort_keys=False)
    elif style == "sorted":
        out = yaml.safe_dump(data, sort_keys=True)
    else:
        out = "".join(ln + ("  # a note\n" if ln.endswith(":") else "\n") for ln in body.splitlines())
    return (header + out).encode()


def same_content(edit: bytes, pristine: bytes) -> bool:
    """Does the edited file still say exactly what was compiled, under the same header? (Worked out
    independently of compiler/write.py: compare the parsed data, not hashes.)"""
    try:
        text = edit.decode("utf-8")
        mark = [ln for ln in text.splitlines()[:5] if ln.startswith(MARK)]
        return mark == [ln for ln in pristine.decode().splitlines()[:5] if ln.startswith(MARK)] and \
            strictly_equal(yaml.safe_load(text), yaml.safe_load(pristine))
    except (UnicodeDecodeError, yaml.YAMLError):
        return False


def strictly_equal(a, b) -> bool:
    """== that also compares types: 0 is not False, 1.0 is not 1."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strictly_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strictly_equal(x, y) for x, y in zip(a, b))
    return a == b


def generated(root: Path) -> dict[str, bytes]:
    return {n: (root / n).read_bytes() for n in ("dvc.yaml", "params.yaml")}


@settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("TUNEBOOK_FUZZ_RANDOM") != "1",
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(data=st.data(), name=st.sampled_from(["dvc.yaml", "params.yaml"]), cosmetic=st.booleans())
def test_hand_edits_are_refused_and_files_left_alone(compiled, data, name, cosmetic):
    root, pristine = compiled
    for n, b in pristine.items():
        (root / n).write_bytes(b)
    text = pristine[name].decode()
    edit = data.draw(cosmetic_edit(text) if cosmetic else semantic_edit(text))
    (root / name).write_bytes(edit)
    before = generated(root)

    check = CliRunner().invoke(main, ["-C", str(root), "compile", "--check"])
    result = CliRunner().invoke(main, ["-C", str(root), "compile"])
    output = result.stdout + result.stderr
    assert "Traceback" not in output + check.stdout + check.stderr
    if cosmetic or same_content(edit, pristine[name]):
        assert result.exit_code == 0, output
        assert generated(root) == pristine, "a reformatted file was not brought back to the compiled form"
    else:
        assert check.exit_code == 3, check.stdout + check.stderr
        assert result.exit_code == 3, output
        assert f"{name} was changed after `tunebook compile` wrote it" in result.stderr, output
        assert "\n  " in result.stderr, f"the message does not show what changed: {output}"
        assert generated(root) == before, "an edited file was overwritten"
        forced = CliRunner().invoke(main, ["-C", str(root), "compile", "--force"])
        assert forced.exit_code == 0, forced.output
        assert generated(root) == pristine
    tried("hand edits")


def test_a_typed_value_edit_is_shown_as_a_diff(compiled):
    """A value typed into params.yaml (tunebook's style kept, so not DVC's writing): the message shows
    old and new. The same change written by `dvc exp run -S` is a variant (tests/unit/compiler/test_write.py)."""
    root, pristine = compiled
    for n, b in pristine.items():
        (root / n).write_bytes(b)
    header, body = split_header(pristine["params.yaml"].decode())
    params = yaml.safe_load(body)
    params["fuzz"]["method"]["lr"] = 0.01
    (root / "params.yaml").write_text(header + yaml.safe_dump(params, sort_keys=False))
    result = CliRunner().invoke(main, ["-C", str(root), "compile"])
    assert result.exit_code == 3
    assert "fuzz.method.lr: file has 0.01, specs give 0.005" in result.stderr, result.stderr
    assert "Nothing was written" in result.stderr
    tried("hand edits")
