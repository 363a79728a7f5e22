"""End to end, as a user extends tunebook: a project outside this repository with its own plugin file (a
reward, an extractor and an answer transform), compiled and run by real `dvc repro` on the tiny model
(GRPO for 2 steps, then the eval and baseline stages); the plugin's functions are what ran, and an edit
of the plugin file makes DVC rerun the stages that use names, not the data stage.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import ROOT, sh, tunebook_cmd

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PLUGIN = '''\
"""This project's names: a marker reward, the last token as the answer, the answer after '####'."""

import json

from tunebook.plugins import answer_transform, extractor, reward


@reward("marker_quarter")
def marker_quarter(prompt, completion, answer, extract):
    with open("plugin_calls.jsonl", "a") as f:  # stages run in the project folder
        f.write(json.dumps({{"prompt": prompt, "answer": answer, "extracted": extract(completion)}}) + "\\n")
    return {value}


@extractor("last_token")
def last_token(text):
    words = text.split()
    return words[-1] if words else None


@answer_transform("after_hash")
def after_hash(answer):
    return answer.rsplit("####", 1)[-1].strip()
'''

SPEC = """\
name: plug
model: {base: builtin:tiny}
plugins: [plugins/mine.py]
data:
  train: [{source: data/sub_train.jsonl, format: verifiable}]
  validation: {source: data/sub_val.jsonl, format: verifiable}
method:
  kind: grpo
  max_steps: 2
  batch_size: 4
  max_seq_length: 32
  log_every: 1
  grpo: {rewards: [marker_quarter], extract: last_token, answer_transform: after_hash,
         num_generations: 2, max_completion_length: 4}
eval:
  target:
    - {name: sub, source: data/sub_val.jsonl, extract: last_token, answer_transform: after_hash, max_new_tokens: 4}
  checkpoints: final
"""


def rows(n: int, start: int) -> str:
    return "".join(json.dumps({"prompt": f"{a + 9}-{a}=", "answer": f"{a + 9} take away {a} is 9 #### 9"}) + "\n"
                   for a in range(start, start + n))


def test_a_plugin_runs_in_the_stages_and_an_edit_reruns_them(tmp_path, cli_env):
    root = tmp_path / "project"  # outside the repository: the plugin is found by its path, not installed
    for d in ("models/tiny", "data/tiny"):
        shutil.copytree(ROOT / d, root / d)  # the pre-trained tiny model, as pretrain-tiny would build it
    (root / "specs").mkdir()
    (root / "plugins").mkdir()
    (root / "data" / "sub_train.jsonl").write_text(rows(8, 1))
    (root / "data" / "sub_val.jsonl").write_text(rows(4, 20))
    (root / "plugins" / "mine.py").write_text(PLUGIN.format(value="0.25"))
    (root / "specs" / "plug.yaml").write_text(SPEC)
    sh(["git", "init", "-q"], root, cli_env)
    sh(["dvc", "init", "-q"], root, cli_env)
    sh(tunebook_cmd() + ["compile"], root, cli_env)
    sh(["dvc", "commit", "-f", "pretrain-tiny"], root, cli_env)  # the copied model stands for its stage

    out = sh(["dvc", "repro"], root, cli_env).stdout
    for stage in ("data-plug", "train-plug", "eval-plug", "report-plug"):
        assert f"Running stage '{stage}'" in out, stage
    assert "Running stage 'pretrain-tiny'" not in out

    # the reward ran in training and in the held-out evaluation, on answers the transform prepared
    calls = [json.loads(line) for line in (root / "plugin_calls.jsonl").read_text().splitlines()]
    assert {c["answer"] for c in calls} == {"9"}  # "... #### 9" prepared by after_hash
    prompts = {c["prompt"] for c in calls}
    assert prompts & {f"{a + 9}-{a}=" for a in range(1, 9)}  # training (GRPO: 2 steps see some of the 8)
    assert {f"{a + 9}-{a}=" for a in range(20, 24)} <= prompts  # the held-out reward (eval), every row
    rec = json.loads((root / "runs" / "plug" / "record.json").read_text())
    by = {(m["checkpoint"], m["task"], m["metric"]): m for m in rec["metrics"]}
    assert by[("final", "validation", "reward/marker_quarter")]["value"] == pytest.approx(0.25)
    # the target task scored with the plugin's extractor against the transformed answer, base and final
    for checkpoint in ("base", "final"):
        sub = by[(checkpoint, "sub", "accuracy")]
        assert sub["extra"]["extract"] == "last_token" and sub["n"] == 4
    samples = [s for s in rec["samples"] if s["task"] == "sub"]
    assert samples and all(s["target"] == "9" for s in samples)

    # an edit of the plugin reruns every stage that looks names up, and only those
    (root / "plugins" / "mine.py").write_text(PLUGIN.format(value="0.5"))
    status = sh(["dvc", "status"], root, cli_env).stdout
    changed = {line.strip().rstrip(":") for line in status.splitlines() if line and not line[0].isspace()}
    assert {"train-plug", "eval-plug"} <= changed and any(s.startswith("baseline-") for s in changed), status
    assert "data-plug" not in changed and "pretrain-tiny" not in changed, status
