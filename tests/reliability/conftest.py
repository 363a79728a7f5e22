"""The reliability suite: bad input, interruption and hostile content, tried against the real CLI.

    pytest tests/reliability                          # the CI budget
    TUNEBOOK_FUZZ_EXAMPLES=20000 pytest tests/reliability -k fuzz   # a longer fuzzing session

The slow tests share one small project, built once per session: the quickstart made smaller
(fewer pre-training steps, 320 training rows, a 40-item evaluation), run with `dvc repro` in a fresh
git repository, with a fake hub token and a fake judge API key in the environment and a fake
OpenAI-compatible judge on localhost. Tests that change a project work on a copy of it.

At the end the suite prints what it tried and whether anything was lost, e.g.
`reliability: 1500 mutated specs, 190 hand edits, 8 kills, 40 hostile inputs — nothing lost`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, tunebook_cmd
from tests.reliability.tally import COUNTS, ISSUE16_KINDS

FAKE_HF_TOKEN = "hf_FAKEtunebookReliabilityToken0123456789"
FAKE_JUDGE_KEY = "sk-FAKEtunebookJudgeKey-9876543210abcdef"
# pasted into the spec's description by a careless hand: compile warns, and it is redacted from then on
FAKE_SPEC_TOKEN = "ghp_FAKEtunebookPastedToken0123456789ab"
SECRETS = (FAKE_HF_TOKEN, FAKE_JUDGE_KEY, FAKE_SPEC_TOKEN)
PRETRAIN_STEPS = int(os.environ.get("TUNEBOOK_RELIABILITY_PRETRAIN_STEPS", "60"))

SPEC = """\
# The quickstart made smaller, for the reliability suite: same stages, minutes less.
name: mini
description: reliability project, the quickstart made small (token {token} pasted by mistake)
model: {base: builtin:tiny}
data:
  train:
    - source: data/tiny/subtraction_train.jsonl
  validation: {source: data/tiny/subtraction_test.jsonl, fields: {completion: answer}}
  limit: 320
method:
  kind: sft
  lora: {r: 8, alpha: 16, dropout: 0.0}
  lr: 5.0e-3
  epochs: 1
  batch_size: 16
  max_seq_length: 32
  log_every: 5
eval:
  general: {tasks: [tiny_facts_color], include_path: data/tiny/tasks, limit: 40}
  target:
    - {name: subtraction, source: data/tiny/subtraction_test.jsonl, extract: first_number, max_new_tokens: 4, limit: 40}
  judge:
    prompts: inputs/judge_prompts.jsonl
    max_new_tokens: 6
    judges:
      - {name: remote, kind: openai, model: fake-judge, url: "{url}", api_key_env: TUNEBOOK_FAKE_JUDGE_API_KEY, retries: 0, timeout_s: 20}
  checkpoints: final
"""
JUDGE_PROMPTS = ["7-3=", "12-5=", "9-9=", "20-1="]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    stats = terminalreporter.stats
    reports = [r for key in ("passed", "failed", "error") for r in stats.get(key, []) if hasattr(r, "nodeid")]
    ours = [r for r in reports if "tests/reliability/" in r.nodeid]
    if not ours:
        return
    failed = {r.nodeid for r in ours if r.outcome == "failed"}
    # kill-and-resume tests of training and evaluation live with their stages; count those that ran
    others = {r.nodeid for r in stats.get("passed", []) if getattr(r, "when", "") == "call"
              and "tests/unit/runtime/" in r.nodeid and "kill" in r.nodeid.split("::")[-1]}
    kills = f"{COUNTS['kills']} kills" + (f" (+{len(others)} kill-and-resume tests in tests/unit/runtime)" if others else "")
    verdict = "nothing lost" if not failed else f"{len(failed)} test(s) FAILED — see above"
    # the classes of issue 16, each counted by its own tests (tally.ISSUE16_KINDS), shown when tried
    more = "".join(f", {COUNTS[k]} {k}" for k in ISSUE16_KINDS if COUNTS[k])
    terminalreporter.write_line(f"reliability: {COUNTS['mutated specs']} mutated specs, {COUNTS['hand edits']} hand edits, "
                                f"{kills}, {COUNTS['hostile inputs']} hostile inputs{more} — {verdict}")


# --- running the CLI and dvc -----------------------------------------------------------------------
def base_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def sh(args, cwd, env, check=True, timeout=900, log: Path | None = None):
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if log is not None:  # what a user's terminal would have shown: grepped for secrets later
        with log.open("a") as f:
            f.write(f"$ {' '.join(map(str, args))}\n{res.stdout}{res.stderr}")
    if check and res.returncode != 0:
        raise AssertionError(f"{args} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


# --- a fake OpenAI-compatible judge ----------------------------------------------------------------
@dataclass
class FakeJudge:
    url: str
    keys_seen: list = field(default_factory=list)
    echo_key: bool = False  # reply with the bearer token inside the verdict (a hostile endpoint)


@pytest.fixture(scope="session")
def fake_judge():
    state = FakeJudge(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            auth = self.headers.get("Authorization", "")
            state.keys_seen.append(auth.removeprefix("Bearer "))
            prompt = body.get("messages", [{}])[0].get("content", "")
            verdict = "A" if len(prompt) % 2 else "B"  # deterministic, so two runs agree
            content = f"{verdict} ({auth})" if state.echo_key else verdict
            out = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()


# --- the shared project ----------------------------------------------------------------------------
@dataclass
class Project:
    root: Path
    env: dict
    log: Path  # stdout and stderr of every command run in it

    def run(self, args, check=True, timeout=900):
        return sh(args, self.root, self.env, check=check, timeout=timeout, log=self.log)

    def tunebook(self, *args, check=True):
        return self.run(tunebook_cmd() + list(args), check=check)


def secret_env(fake_judge: FakeJudge) -> dict:
    env = base_env()
    env["HF_TOKEN"] = FAKE_HF_TOKEN
    env["HUGGING_FACE_HUB_TOKEN"] = FAKE_HF_TOKEN
    env["TUNEBOOK_FAKE_JUDGE_API_KEY"] = FAKE_JUDGE_KEY
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def init_project(root: Path, env: dict, judge_url: str, log: Path) -> Project:
    """A user's project as `tunebook compile` leaves it, committed; not yet run."""
    root.mkdir(parents=True, exist_ok=True)
    p = Project(root, env, log)
    p.run(["git", "init", "-q"])
    p.run(["git", "config", "user.email", "t@example.com"])
    p.run(["git", "config", "user.name", "t"])
    p.run(["dvc", "init", "-q"])
    shutil.copy(ROOT / ".gitignore", root / ".gitignore")  # the project's own ignore rules
    (root / "specs").mkdir()
    (root / "specs/mini.yaml").write_text(SPEC.replace("{url}", judge_url).replace("{token}", FAKE_SPEC_TOKEN))
    (root / "inputs").mkdir()
    (root / "inputs/judge_prompts.jsonl").write_text("".join(json.dumps({"prompt": q}) + "\n" for q in JUDGE_PROMPTS))
    p.tunebook("compile")
    # smaller pre-training, as a user would with `-S` or an edit of params.yaml (like tests/e2e)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["builtin"]["tiny"]["pretrain"]["steps"] = PRETRAIN_STEPS
    params["builtin"]["tiny"]["pretrain"]["warmup_steps"] = min(10, PRETRAIN_STEPS)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    p.run(["git", "add", "-A"])
    p.run(["git", "commit", "-qm", "init"])
    return p


@dataclass
class Built:
    project: Project
    lock: str  # dvc.lock right after the first run
    record: dict
    files: dict[str, bytes]  # every file right after the first run (outputs only, not .git/.dvc)


def snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith((".git/", ".dvc/")):
            out[rel] = path.read_bytes()
    return out


def _built(p: Project) -> Built:
    root = p.root
    return Built(p, (root / "dvc.lock").read_text(), json.loads((root / "runs/mini/record.json").read_text()), snapshot(root))


@pytest.fixture(scope="session")
def built(tmp_path_factory, fake_judge) -> Built:
    """The small project after one clean `dvc repro` (pre-training is the slow part: done once)."""
    root = tmp_path_factory.mktemp("reliability") / "a"
    p = init_project(root, secret_env(fake_judge), fake_judge.url, root.parent / "a.log")
    p.run(["dvc", "repro"])
    return _built(p)


@pytest.fixture(scope="session")
def second(built, tmp_path_factory, fake_judge) -> Built:
    """A second project, run from nothing the first one made. Not alongside the first: measured on
    two shared cores, both pipelines at once took 7.5 minutes, one after the other 3.7."""
    root = tmp_path_factory.mktemp("reliability-b") / "b"
    p = init_project(root, secret_env(fake_judge), fake_judge.url, root.parent / "b.log")
    p.run(["dvc", "repro"])
    return _built(p)


def copy_project(built: Built, dest: Path) -> Project:
    """A copy of the built project (cache included) for a test that changes it."""
    shutil.copytree(built.project.root, dest, symlinks=True)
    return Project(dest, built.project.env, built.project.log)
