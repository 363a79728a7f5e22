"""SIGKILL during `tunebook compile` never leaves a half-written dvc.yaml or params.yaml.

A subprocess compiles two versions of a 100-experiment project in a loop, on a simulated slow disk
(fsync takes 20 ms), and is killed with SIGKILL at random moments or the moment a temporary file
shows a write under way. After every
kill each file must be whole: exactly one of the two versions, byte for byte, with a valid header
hash. The next `tunebook compile` must then succeed (a killed compile is not a hand edit), finish the
pair and clean up the killed one's temporary files.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tunebook.compiler import compile_specs, discover, load_specs, render_pipeline
from tunebook.compiler.write import MARK, _digest
from tests.reliability.conftest import base_env
from tests.reliability.tally import tried
from tunebook.cli import main

KILLS = int(os.environ.get("TUNEBOOK_RELIABILITY_KILLS", "4"))
EXPERIMENTS = 100
BASE = """\
model: {base: org/model}
data: {train: [{source: data/train.jsonl}]}
method: {lr: 1.0e-4, lora: {r: 8, alpha: 16}}
eval:
  general: {tasks: [arc_easy, hellaswag]}
"""
LOOP = """
import glob, os, sys, time
from tunebook.cli import main
_fsync = os.fsync  # a slow disk: each fsync takes 20 ms, so kills land mid-write often
os.fsync = lambda fd: (time.sleep(0.02), _fsync(fd))[1]
root, a, b = sys.argv[1:4]
signal_out = os.fdopen(os.dup(1), "w")  # our progress lines; the command's own output is discarded
sys.stdout = open(os.devnull, "w")
for i in range(1_000_000):
    main.main(["-C", root, "compile", *sorted(glob.glob((a, b)[i % 2] + "/e*.yaml"))], standalone_mode=False)
    print("wrote", i, file=signal_out, flush=True)
"""


def make_version(root: Path, folder: str, target: str) -> Path:
    d = root / folder
    d.mkdir()
    (d / "_base.yaml").write_text(BASE + f"  target: [{{name: t, source: {target}}}]\n")
    for i in range(EXPERIMENTS):
        (d / f"e{i:03d}.yaml").write_text(f"extends: _base.yaml\nname: e{i:03d}\nmethod: {{lr: {1e-4 * (1 + i):.6g}, seed: {i}}}\n")
    return d


def whole(text: str) -> bool:
    recorded = next((ln[len(MARK):].strip() for ln in text.splitlines()[:5] if ln.startswith(MARK)), None)
    return recorded is not None and _digest(yaml.safe_load(text)) == recorded


@pytest.fixture
def two_versions(tmp_path):
    (tmp_path / "data").mkdir()
    for name in ("train", "a", "b"):  # compile checks the inputs exist and have the columns named
        (tmp_path / "data" / f"{name}.jsonl").write_text('{"prompt": "1+1=", "completion": "2", "answer": "2"}\n')
    a = make_version(tmp_path, "specs_a", "data/a.jsonl")
    b = make_version(tmp_path, "specs_b", "data/b.jsonl")
    texts = {}
    for name, d in (("a", a), ("b", b)):
        texts[name] = render_pipeline(compile_specs(load_specs(discover(d), tmp_path)))
    assert texts["a"]["dvc.yaml"] != texts["b"]["dvc.yaml"] and texts["a"]["params.yaml"] != texts["b"]["params.yaml"]
    return tmp_path, a, b, texts


def test_sigkill_mid_compile_leaves_each_file_whole(two_versions):
    root, a, b, texts = two_versions
    rng = random.Random(8)
    mid_write = 0
    for kill in range(KILLS):
        proc = subprocess.Popen([sys.executable, "-c", LOOP, str(root), str(a), str(b)], env=base_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = proc.stdout.readline()  # one full compile first
            if kill % 2:  # then kill at a random moment...
                time.sleep(rng.uniform(0.05, 1.0))
            else:  # ...or the moment a temporary file shows that a write is under way
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not any(n.endswith(".tmp") for n in os.listdir(root)):
                    pass
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert first.startswith("wrote"), proc.stderr.read()
        assert proc.returncode == -signal.SIGKILL
        tried("kills")
        leftovers = sorted(p.name for p in root.glob(".*.tmp"))
        mid_write += bool(leftovers)
        for name in ("dvc.yaml", "params.yaml"):
            data = (root / name).read_text()
            assert data in (texts["a"][name], texts["b"][name]), f"kill {kill}: {name} is neither version"
            assert whole(data), f"kill {kill}: {name} header hash does not match"

        # the next compile is not fooled into "edited by hand", finishes the pair, cleans up
        result = CliRunner().invoke(main, ["-C", str(root), "compile", *map(str, discover(a))])
        assert result.exit_code == 0, result.output
        assert not list(root.glob(".*.tmp")), f"temporary files left: {leftovers}"
        for name in ("dvc.yaml", "params.yaml"):
            assert (root / name).read_text() == texts["a"][name]
    print(f"{KILLS} kills, {mid_write} of them mid-write")
    assert mid_write >= 1, "no kill landed while a file was being written: the test did not test that"
