"""YAML bombs, deep nesting and very large files are refused quickly, with bounded memory.

Each hostile file goes through a real `tunebook compile` subprocess whose peak memory (RSS, from
wait4) and wall time are measured: a "billion laughs" document that would expand to 10^9 values, a
long string aliased thousands of times, 200,000 nested brackets (libyaml's C composer overflows the
stack on those, a segfault rather than an error), a sparse 2 GiB file, /dev/zero, a FIFO.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunebook.compiler.errors import SpecError
from tunebook.compiler.yamlio import parse_yaml
from tests.conftest import tunebook_cmd
from tests.reliability.conftest import base_env
from tests.reliability.tally import tried

SPEC_HEAD = "name: bomb\nmodel: {base: builtin:tiny}\ndata: {train: [{source: data/x.jsonl}]}\n"


def laughs(levels: int = 10) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE = {
    # 10^10 values once expanded, 1 KiB on disk; placed under a real key so the schema would keep it
    "billion-laughs": SPEC_HEAD + laughs() + "eval: {general: {tasks: *a9}}\n",
    # 400 KB aliased 2,000 times where the schema takes it: 800 MB of params.yaml, few nodes
    "aliased-string": SPEC_HEAD + 'description: &d "' + "x" * 400_000 + '"\n'
                      + "eval: {general: {tasks: [" + ",".join(["*d"] * 2000) + "]}}\n",
    "deep-flow": SPEC_HEAD + "description: " + "[" * 200_000 + "]" * 200_000 + "\n",
    "deep-block": SPEC_HEAD + "description:\n" + "".join(" " * (i + 1) + "- \n" for i in range(300)) + " " * 302 + "x\n",
    "recursive-alias": SPEC_HEAD + "eval: &e {general: {tasks: [a]}, target: [*e]}\n",
    "many-keys": SPEC_HEAD + "".join(f"k{i}: {i}\n" for i in range(60_000)),
}
LIMIT_S = float(os.environ.get("TUNEBOOK_LIMIT_S", "20"))  # generous: CI machines are shared
LIMIT_RSS_MIB = 100  # a compile of a normal spec peaks near 35 MiB


# Runs a command and reports its own peak RSS. A fresh launcher is needed: a child forked straight
# from pytest would count pytest's memory (Linux carries the high-water mark across fork and exec).
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(f"MEASURED {os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}", file=sys.stderr)
"""


def run_measured(root: Path, args: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """(result, seconds, peak RSS in MiB) of one command."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", LAUNCHER, *args], cwd=root, env=base_env(), capture_output=True,
                         text=True, timeout=120)
    seconds = time.perf_counter() - t0
    stderr, _, measured = res.stderr.rpartition("MEASURED ")
    code, rss_kib = map(int, measured.split())
    return subprocess.CompletedProcess(args, code, res.stdout, stderr), seconds, rss_kib / 1024


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_yaml_is_refused_fast_with_bounded_memory(tmp_path, name):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs/bomb.yaml").write_text(HOSTILE[name])
    res, seconds, rss = run_measured(tmp_path, tunebook_cmd() + ["compile"])
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])  # -11 would be the segfault
    assert "specs/bomb.yaml" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "dvc.yaml").exists() and not (tmp_path / "params.yaml").exists()
    assert seconds < LIMIT_S, f"{name}: {seconds:.1f}s"
    assert rss < LIMIT_RSS_MIB, f"{name}: peak RSS {rss:.0f} MiB"
    tried("hostile inputs")


def test_huge_and_endless_files_are_refused_without_reading_them(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    with (specs / "huge.yaml").open("wb") as f:  # sparse: 2 GiB that cost nothing on disk
        f.truncate(2 << 30)
    (specs / "zero.yaml").symlink_to("/dev/zero")
    os.mkfifo(specs / "fifo.yaml")  # opening it would block forever
    (specs / "dir.yaml").mkdir()
    res, seconds, rss = run_measured(tmp_path, tunebook_cmd() + ["compile"])
    assert res.returncode == 2, res.stderr
    for name, why in [("huge", "larger than"), ("zero", "not a regular file"), ("fifo", "not a regular file"),
                      ("dir", "is a directory")]:
        assert any(f"specs/{name}.yaml" in ln and why in ln for ln in res.stderr.splitlines()), (name, res.stderr)
    assert seconds < LIMIT_S and rss < LIMIT_RSS_MIB, (seconds, rss)
    tried("hostile inputs", 4)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_in_process_parse_refuses_in_well_under_a_second(name):
    t0 = time.perf_counter()
    with pytest.raises(SpecError) as e:
        parse_yaml(HOSTILE[name], "bomb.yaml")
    assert time.perf_counter() - t0 < 2.0
    msg = str(e.value)
    assert msg.startswith("bomb.yaml") and any(w in msg for w in ("alias", "nested", "recursive", "larger", "values")), msg


def test_a_normal_spec_still_parses_and_a_big_generated_file_is_not_a_bomb():
    data, lines = parse_yaml(SPEC_HEAD + "x: &x [1, 2]\ny: *x\n", "ok.yaml")  # aliases themselves are fine
    assert data["y"] == [1, 2] and lines[("y",)] == 5
    # ~130,000 values, more than a spec may have: a params.yaml of many experiments still parses
    big = "".join(f"e{i}: {{lr: 0.001, seed: {i}, tasks: [a, b, c]}}\n" for i in range(12_000))
    assert len(parse_yaml(big, "params.yaml", max_bytes=256 << 20)[0]) == 12_000
    with pytest.raises(SpecError):
        parse_yaml(big, "spec.yaml")
