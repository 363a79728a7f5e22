"""Bad specs never crash `tunebook compile` and never half-write its outputs.

Thousands of mutated specs (wrong types, missing and unknown keys, broken YAML, huge numbers, unicode,
deep nesting, `extends:` cycles, binary garbage) go through the real command, in-process through
click's test runner for speed and a handful through a real subprocess. Every one must end with exit
code 0 or 2, without a traceback, with a message that names the file (and the key, when a key was
changed); dvc.yaml and params.yaml must be either exactly what the specs compile to or byte-identical
to what they were before.

    TUNEBOOK_FUZZ_EXAMPLES=20000 pytest tests/reliability/test_fuzz_compile.py   # fuzz longer
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunebook.compiler.errors import printable
from tunebook.compiler.write import MARK, _digest
from tests.conftest import tunebook_cmd
from tests.reliability.conftest import base_env
from tests.reliability.specgen import BASES, QUICKSTART, delete_at, dump, nasty_values, paths_of, set_at
from tests.reliability.tally import tried
from tunebook.cli import main

EXAMPLES = int(os.environ.get("TUNEBOOK_FUZZ_EXAMPLES", "1500"))
GENERATED = ("dvc.yaml", "params.yaml")

@st.composite
def structural(draw):
    """A valid spec with one key deleted, replaced, added or wrapped: (files, key path changed)."""
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    changed = []
    for _ in range(draw(st.integers(1, 3))):
        if not paths_of(doc):
            break
        path = draw(st.sampled_from(paths_of(doc)))
        op = draw(st.sampled_from(["delete", "replace", "replace", "add", "wrap"]))
        target = doc
        for p in path[:-1]:
            target = target[p]
        if op == "delete":
            delete_at(doc, path)
        elif op == "replace":
            set_at(doc, path, draw(nasty_values))
        elif op == "add" and isinstance(target, dict):
            key = draw(st.one_of(st.text(min_size=1, max_size=12), st.sampled_from(["learnig_rate", "lora_r", "extends", "1"])))
            target[key] = draw(nasty_values)
            path = path[:-1] + (key,)
        else:
            set_at(doc, path, draw(st.sampled_from([[target[path[-1]]], {"value": target[path[-1]]}])))
        changed.append(path)
    return {"specs/fuzz.yaml": dump(doc)}, changed


@st.composite
def textual(draw):
    """Valid YAML damaged as text: truncated, spliced with garbage, or replaced by bytes."""
    data = dump(draw(st.sampled_from(BASES)))
    op = draw(st.sampled_from(["truncate", "insert", "splice", "binary", "tag", "bomb", "indent"]))
    if op == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif op in ("insert", "splice"):
        at = draw(st.integers(0, len(data)))
        junk = draw(st.one_of(st.binary(min_size=1, max_size=40),
                              st.sampled_from([b"[", b"{", b"]]", b": :", b"&a", b"*a", b"\t", b"!!binary x", b"%YAML 9.9\n---\n",
                                               b"\xff\xfe", b"\x00", b"? ", b"---\n", b"...\n", b"<<: *x\n", "\u00e9".encode()])))
        data = data[:at] + junk + data[at + (draw(st.integers(0, 20)) if op == "splice" else 0):]
    elif op == "binary":
        data = draw(st.binary(max_size=300))
    elif op == "tag":
        tag = draw(st.sampled_from([b"!!python/object/apply:os.system ['echo pwned']", b"!!python/name:os.system",
                                    b"!!python/object:builtins.dict {}", b"!custom x", b"!!set {a, b}", b"!!omap [a: 1]"]))
        data = data + b"\nextra: " + tag + b"\n"
    elif op == "bomb":
        levels = draw(st.integers(3, 12))
        lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
        data = data + ("\n" + "\n".join(lines) + "\n").encode()
    elif op == "indent":
        lines = data.split(b"\n")
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        lines[i] = b" " * draw(st.integers(1, 7)) + lines[i]
        data = b"\n".join(lines)
    return {"specs/fuzz.yaml": data}, []


@st.composite
def inheritance(draw):
    """`extends:` gone wrong: cycles, self-reference, missing, escaping, non-strings, deep chains."""
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    base = {k: v for k, v in doc.items() if k != "name"}
    kind = draw(st.sampled_from(["cycle", "self", "missing", "escape", "absolute", "type", "nul", "chain", "ok", "list"]))
    files = {"specs/_base.yaml": dump(base)}
    child = {"name": doc["name"]}
    if kind == "cycle":
        files["specs/_base.yaml"] = dump({"extends": "_mid.yaml", **base})
        files["specs/_mid.yaml"] = dump({"extends": "_base.yaml"})
        child["extends"] = "_base.yaml"
    elif kind == "self":
        child["extends"] = "fuzz.yaml"
    elif kind == "missing":
        child["extends"] = draw(st.sampled_from(["_nope.yaml", "sub/dir.yaml", ""]))
    elif kind == "escape":
        child["extends"] = "../../" * draw(st.integers(1, 6)) + "etc/passwd"
    elif kind == "absolute":
        child["extends"] = draw(st.sampled_from(["/etc/passwd", "/dev/zero", "/proc/self/environ", "/"]))
    elif kind == "type":
        child["extends"] = draw(nasty_values)
    elif kind == "nul":
        child["extends"] = "_base.yaml\x00.txt"
    elif kind == "chain":
        n = draw(st.integers(2, 40))
        for i in range(n):
            files[f"specs/_c{i}.yaml"] = dump({"extends": f"_c{i + 1}.yaml" if i + 1 < n else "_base.yaml"})
        child["extends"] = "_c0.yaml"
    elif kind == "list":
        child["extends"] = ["_base.yaml"] * draw(st.integers(1, 5))
    else:
        child["extends"] = "_base.yaml"
        if draw(st.booleans()):
            path = draw(st.sampled_from(paths_of(base)))
            set_at(base, path, draw(nasty_values))
            files["specs/_base.yaml"] = dump(base)
    files["specs/fuzz.yaml"] = dump(child)
    return files, []


mutated = st.one_of(structural(), structural(), textual(), inheritance())


def generated(root: Path) -> dict[str, bytes | None]:
    return {n: (root / n).read_bytes() if (root / n).exists() else None for n in GENERATED}


ISSUE = re.compile(r"^(?:error: )?(?P<file>[^:\s]+?)(?::(?P<line>\d+))?: (?:(?P<key>[^\s:]+): )?(?P<msg>.+)$")


def check_outcome(root: Path, files: dict, changed: list[tuple], code: int, output: str, before: dict) -> None:
    """The properties every compile must have, whatever it was given."""
    assert "Traceback" not in output, output
    assert code in (0, 2), f"exit {code}: {output}"
    after = generated(root)
    if code == 2:
        assert after == before, "a refused spec changed dvc.yaml or params.yaml"
        issues = [m for ln in output.splitlines() if (m := ISSUE.match(ln))]
        named = [m for m in issues if m["file"] in files]
        assert named, f"no error names the spec file: {output}"
        if changed:  # keys were changed: an error names one of them (or a parent or child), or it is about the whole file
            keys = {printable(".".join(map(str, path))) for path in changed}

            def related(key: str) -> bool:
                # the key, a parent or child of it, or a key in the same block (a check across fields, e.g.
                # a task name that a removed `include_path` defined, reports at the field it checks)
                return any(key == k or key.startswith(k + ".") or k.startswith(key + ".")
                           or ("." in k and key.startswith(k.rsplit(".", 1)[0] + ".")) for k in keys)

            assert any(m["key"] is None or related(m["key"]) for m in named), f"changed {sorted(keys)}: {output}"
    else:
        for name, data in after.items():
            assert data is not None, f"{name} missing after a successful compile"
            text = data.decode("utf-8")
            recorded = next(ln[len(MARK):].strip() for ln in text.splitlines()[:5] if ln.startswith(MARK))
            assert _digest(yaml.safe_load(text)) == recorded, f"{name}: header hash does not match its content"


# The inputs the two base specs read: compile checks that they exist and have the columns named
# (compiler/inputs.py), so a mutation is refused for what it changed, not for absent data.
ROW = '{"prompt": "p", "q": "q", "completion": "c", "answer": "1", "category": "a"}\n'
INPUTS = {"data/a.jsonl": ROW, "data/gsm.jsonl": ROW, "data/p.jsonl": ROW, "data/tiny/subtraction_train.jsonl": ROW,
          "data/tiny/subtraction_test.jsonl": ROW, "data/tiny/tasks/tiny_facts_color.yaml": "task: tiny_facts_color\n",
          "data/tiny/tasks/tiny_facts_city.yaml": "task: tiny_facts_city\n"}


def write_inputs(root: Path) -> None:
    for name, text in INPUTS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.fixture(scope="module")
def project():
    root = Path(tempfile.mkdtemp(prefix="tunebook-fuzz-"))
    write_inputs(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def write_specs(root: Path, files: dict[str, bytes]) -> None:
    specs = root / "specs"
    if specs.exists():
        shutil.rmtree(specs)
    specs.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("TUNEBOOK_FUZZ_RANDOM") != "1",
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(case=mutated)
def test_mutated_specs_exit_0_or_2_and_never_half_write(project, case):
    files, changed = case
    write_specs(project, files)
    before = generated(project)
    result = CliRunner().invoke(main, ["-C", str(project), "compile"])
    output = result.stdout + result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {result.exception!r}:\n{output}")
    check_outcome(project, files, changed, result.exit_code, output, before)
    tried("mutated specs")


HANDFUL = {
    "binary": {"specs/fuzz.yaml": bytes(range(256)) * 4},
    "python-tag": {"specs/fuzz.yaml": b"name: fuzz\nmodel: !!python/object/apply:os.system ['touch pwned']\n"},
    "cycle": {"specs/fuzz.yaml": b"extends: _a.yaml\nname: fuzz\n", "specs/_a.yaml": b"extends: fuzz.yaml\n"},
    "deep": {"specs/fuzz.yaml": b"name: fuzz\nmodel: " + b"[" * 200_000 + b"]" * 200_000 + b"\n"},
    "bomb": {"specs/fuzz.yaml": ("name: fuzz\n" + "a0: &a0 [x,x,x,x,x,x,x,x,x]\n"
                                 + "".join(f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))).encode()},
    "wrong-type": {"specs/fuzz.yaml": dump({**QUICKSTART, "method": {**QUICKSTART["method"], "lr": "fast"}})},
    "valid": {"specs/fuzz.yaml": dump(QUICKSTART)},
}


@pytest.mark.parametrize("name", sorted(HANDFUL))
def test_a_handful_through_a_real_subprocess(tmp_path, name):
    files = HANDFUL[name]
    write_inputs(tmp_path)
    write_specs(tmp_path, files)
    before = generated(tmp_path)
    res = subprocess.run(tunebook_cmd() + ["compile"], cwd=tmp_path, env=base_env(), capture_output=True, text=True, timeout=60)
    key = [("method", "lr")] if name == "wrong-type" else []
    check_outcome(tmp_path, files, key, res.returncode, res.stdout + res.stderr, before)
    assert not (tmp_path / "pwned").exists()
    assert (res.returncode == 0) == (name == "valid"), res.stderr
    tried("mutated specs")
