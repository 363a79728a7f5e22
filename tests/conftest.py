"""Shared test helpers. The project root is importable (pytest pythonpath = .)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def like_a_terminal() -> None:
    """preexec_fn for a child that a test will Ctrl-C: SIGINT as a terminal's foreground job has it.
    A suite started in the background (`make test-cluster &`, nohup) inherits SIGINT ignored, and
    Python then installs no KeyboardInterrupt handler: the Ctrl-C would never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sh(args, cwd, env, check=True, timeout=900):
    """Run a command as a user would; with check, a failure shows its exit code and the ends of its output."""
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{args} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def tunebook_cmd() -> list[str]:
    """The CLI as a user runs it, from this checkout (not from whatever is installed)."""
    return [sys.executable, "-m", "tunebook"]


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def cli_env(tmp_path) -> dict:
    """Environment for subprocess runs: this checkout first on PYTHONPATH, venv bin on PATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    return env


_START = os.getcwd()


@pytest.fixture(autouse=True)
def _back_to_start():
    """`tunebook -C` changes directory, and CliRunner runs the CLI in this process: each test starts where
    pytest did, never in a folder an earlier test removed."""
    yield
    os.chdir(_START)
