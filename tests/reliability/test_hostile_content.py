"""Hostile or careless content stays data: never template, markup, a path out of the project, code.

- Text from specs, data and model outputs that looks like Jinja or HTML renders literally in the
  experiment log (`reports.render.write_report`): `{{ 7*7 }}` never becomes 49.
- Paths in specs cannot leave the project (`../`, absolute paths, symlinks, `~`) unless the spec
  sets `allow_external_inputs: true`; outputs are named after the experiment, whose pattern keeps
  them inside. `dvc exp run -S` cannot smuggle such a path past the compiler either.
- Specs load with a safe YAML loader: `!!python/object` tags are refused, nothing is executed.
- `trust_remote_code` shows in the log whenever the record says it was on.
- Error messages echo spec text escaped, so a key cannot rewrite the user's terminal.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tunebook.compiler import SpecError, load_spec
from tunebook.reports.render import write_report
from tunebook.runtime.context import experiment_context
from tests.conftest import tunebook_cmd
from tests.reliability.conftest import base_env
from tests.reliability.tally import tried
from tunebook.cli import main

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/records/quickstart_like.json"
JINJA = ["{{ 7*7 }}", "{{ 'PW' ~ 'NED' }}", "{% set x = 'PW' ~ 'N3D' %}{{ x }}", "{{ ''.__class__.__mro__ }}",
         "{# comment #}", "{{ cycler.__init__.__globals__.os.popen('id').read() }}"]
HTML = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "</td></tr></table><b>x</b>"]
MARKDOWN = ["a | b | c", "line\nbreak\n## Fake heading", "[click](javascript:alert(1))", "```\nfence break\n```",
            "![img](http://evil.example/x.png)", "_under_ *star* `tick`"]
HOSTILE = JINJA + HTML + MARKDOWN


def hostile_record(tmp_path: Path, trust_remote_code: bool = False, strings=None, name: str = "hostile") -> Path:
    """The fixture record with a hostile string in every free-text field a run can fill."""
    rec = json.loads(FIXTURE.read_text())
    h = iter(strings or HOSTILE * 4)
    rec["title"] = next(h)
    rec["spec_file"] = next(h)
    rec["model"]["base"] = next(h)
    rec["model"]["trust_remote_code"] = trust_remote_code
    rec["notes"] = [next(h), next(h)]
    rec["environment"]["torch"] = next(h)
    rec["data"]["sources"][0]["source"] = next(h)
    rec["data"]["sources"][0]["split"] = next(h)
    renamed = {}
    for m in rec["metrics"]:  # rename tasks consistently, so baseline and final still pair up
        m["task"] = renamed.setdefault(m["task"], next(h))
    for s in rec["samples"]:
        s["task"] = renamed.get(s["task"], s["task"])
        s["prompt"], s["output"], s["target"], s["extracted"] = next(h), next(h), next(h), next(h)
    path = tmp_path / f"runs/{name}/record.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(rec))
    return path


def outside_fences(markdown: str) -> str:
    """The markdown with fenced blocks removed (inside a fence, text is shown as code)."""
    out, fence = [], None
    for line in markdown.splitlines():
        m = re.match(r"^(`{3,})", line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None and line.startswith(fence) and line.strip("`") == "":
            fence = None
        elif fence is None:
            out.append(line)
    return "\n".join(out)


def test_hostile_record_text_renders_literally(tmp_path):
    record = hostile_record(tmp_path)
    out = write_report(record, tmp_path / "reports/hostile.md")
    text = out.read_text()
    assert "PWNED" not in text and "PWN3D" not in text and "uid=" not in text and "<class" not in text  # nothing ran
    assert "{{ 7" in text and "{% set" in text  # shown, not swallowed
    body = outside_fences(text)
    # the same record with harmless words in the same places: any extra "49" came from `{{ 7*7 }}`
    benign = write_report(hostile_record(tmp_path, strings=[f"w{i}" for i in range(100)], name="benign"),
                          tmp_path / "reports/benign.md").read_text()
    assert text.count("49") == benign.count("49"), "a `{{ 7*7 }}` was evaluated"
    for tag in ("<script>", "<img", "</td>", "<b>"):
        assert tag not in body, f"raw HTML {tag} outside a code block"
    assert "&lt;script&gt;" in body
    assert not re.search(r"(?<!\\)\]\((javascript|http)", body), "a link was injected (an unescaped `](`)"
    assert "\n## Fake heading" not in body and "\n```\nfence break" not in text
    for line in body.splitlines():  # a table row keeps its columns: no unescaped pipe from the data
        if line.startswith("| ") and "a " in line and " b " in line:
            assert "a \\| b \\| c" in line, line
    tried("hostile inputs", len(HOSTILE))


def test_rendering_is_deterministic_and_leaves_the_record_alone(tmp_path):
    record = hostile_record(tmp_path)
    before = record.read_bytes(), record.stat().st_mtime_ns
    first = write_report(record, tmp_path / "reports/a.md").read_bytes()
    second = write_report(record, tmp_path / "reports/b.md").read_bytes()
    assert first == second
    assert (record.read_bytes(), record.stat().st_mtime_ns) == before, "rendering changed the record"


@pytest.mark.parametrize("on", [True, False])
def test_trust_remote_code_is_shown_in_the_log(tmp_path, on):
    out = write_report(hostile_record(tmp_path, trust_remote_code=on), tmp_path / "reports/x.md").read_text()
    model_line = next(ln for ln in out.splitlines() if ln.startswith("| Model |"))
    assert f"trust\\_remote\\_code {'true' if on else 'false'}" in model_line or \
        f"trust_remote_code {'true' if on else 'false'}" in model_line, model_line


def test_report_cli_keeps_a_hostile_experiment_name_inside_logs(tmp_path):
    rec = json.loads(FIXTURE.read_text())
    rec["experiment"] = "../../escaped{{ 7*7 }}"
    (tmp_path / "r.json").write_text(json.dumps(rec))
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "report", "--record", str(tmp_path / "r.json")])
    assert result.exit_code in (0, 2), result.output
    written = [p for p in tmp_path.parent.glob("**/*escaped*")]
    assert all(p.resolve().is_relative_to((tmp_path / "logs").resolve()) for p in written), written
    tried("hostile inputs")


# --- paths in specs --------------------------------------------------------------------------------
SPEC = """\
name: {name}
model: {{base: {base}}}
data:
  train:
    - source: {source}
eval:
  target: [{{name: t, source: {target}}}]
"""


ROW = '{"prompt": "1+1=", "completion": "2", "answer": "2"}\n'  # fits the train source and the eval target


def compile_spec(root: Path, text: str):
    (root / "specs").mkdir(exist_ok=True)
    (root / "specs/x.yaml").write_text(text)
    return CliRunner().invoke(main, ["-C", str(root), "compile"])


@pytest.mark.parametrize("field,value", [
    ("source", "../outside.jsonl"), ("source", "/etc/passwd"), ("source", "data/../../outside.jsonl"),
    ("source", "~/secrets.jsonl"), ("target", "../../eval.jsonl"), ("base", "/opt/models/llama"),
    ("source", "link/passwd"), ("target", "data/escape.jsonl"),
])
def test_input_paths_cannot_leave_the_project_without_opt_in(tmp_path, field, value):
    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    (root / "data/ok.jsonl").write_text(ROW)
    (root / "link").symlink_to("/etc")  # a symlinked folder pointing outside
    (root / "data/escape.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    args = {"name": "x", "base": "builtin:tiny", "source": "data/ok.jsonl", "target": "data/ok.jsonl", field: value}
    text = SPEC.format(**args)
    result = compile_spec(root, text)
    assert result.exit_code == 2, result.output
    key = {"source": "data.train.0.source", "target": "eval.target.0.source", "base": "model.base"}[field]
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if value in ln)
    assert f"specs/x.yaml:{line}: {key}: '{value}'" in result.stderr, result.stderr
    assert "allow_external_inputs: true" in result.stderr
    assert not (root / "dvc.yaml").exists()
    # the explicit opt-in lets the same input in (compile still wants it there, where the stages read it);
    # the outputs stay where they were
    for raw in (args["source"], args["target"]):
        if not (root / raw).exists():
            (root / raw).parent.mkdir(parents=True, exist_ok=True)
            (root / raw).write_text(ROW)
    result = compile_spec(root, text + "allow_external_inputs: true\n")
    assert result.exit_code == 0, result.output
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    outs = [next(iter(o)) if isinstance(o, dict) else o for st in dvc["stages"].values() for o in st.get("outs", [])]
    assert all(not o.startswith(("/", "..")) for o in outs), outs
    tried("hostile inputs")


@pytest.mark.parametrize("name", ["../evil", "a/b", "x\n", "/abs", "baselines", "builtin", "tiny", "review", "x" * 65, "..", "Ünï"])
def test_experiment_names_keep_outputs_inside(tmp_path, name):
    result = compile_spec(tmp_path, SPEC.format(name=json.dumps(name), base="builtin:tiny", source="d.jsonl", target="d.jsonl"))
    assert result.exit_code == 2, result.output
    assert "specs/x.yaml:1: name:" in result.stderr, result.stderr
    tried("hostile inputs")


def test_extends_cannot_reach_outside_the_project(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    (tmp_path / "_outside.yaml").write_text("model: {base: builtin:tiny}\n")
    result = compile_spec(root, "extends: ../../_outside.yaml\nname: x\ndata: {train: [{source: d.jsonl}]}\n")
    assert result.exit_code == 2, result.output
    assert "specs/x.yaml:1: extends: '../../_outside.yaml' is outside the project" in result.stderr, result.stderr
    tried("hostile inputs")


def test_dvc_exp_run_set_cannot_smuggle_a_path_past_the_compiler(tmp_path):
    """`dvc exp run -S 'x.data.train.0.source=/etc/passwd'` edits params.yaml directly: the stage refuses."""
    (tmp_path / "d.jsonl").write_text(ROW)
    assert compile_spec(tmp_path, SPEC.format(name="x", base="builtin:tiny", source="d.jsonl", target="d.jsonl")).exit_code == 0
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["x"]["data"]["train"][0]["source"] = "/etc/passwd"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SpecError) as e:
        experiment_context(tmp_path, "x")
    assert "params.yaml: x.data.train.0.source: '/etc/passwd' is outside the project" in str(e.value)
    result = subprocess.run(tunebook_cmd() + ["run", "data", "x"], cwd=tmp_path, env=base_env(), capture_output=True, text=True)
    assert result.returncode == 2 and "outside the project" in result.stderr, result.stderr
    tried("hostile inputs")


# --- YAML tags, terminals ----------------------------------------------------------------------------
@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    "!!python/name:os.system",
    "!!python/object:pathlib.Path {{}}",
    "!!python/module:os",
])
def test_python_tags_are_refused_and_nothing_runs(tmp_path, tag):
    marker = tmp_path / "pwned"
    spec = tmp_path / "x.yaml"
    spec.write_text(f"name: x\nmodel: {tag.format(marker=marker)}\ndata: {{train: [{{source: d.jsonl}}]}}\n")
    with pytest.raises(SpecError) as e:
        load_spec(spec, tmp_path)
    assert "x.yaml:2: not valid YAML: could not determine a constructor for the tag" in str(e.value)
    assert not marker.exists()
    tried("hostile inputs")


def test_error_messages_cannot_rewrite_the_terminal(tmp_path):
    text = 'name: x\nmodel: {base: builtin:tiny}\ndata: {train: [{source: d.jsonl}]}\n"\\e]0;pwned\\a\\e[2J": 1\n'
    result = compile_spec(tmp_path, text)
    assert result.exit_code == 2
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "\\x1b]0;pwned\\x07" in result.stderr, result.stderr
    tried("hostile inputs")


def test_an_echoing_judge_endpoint_cannot_put_the_key_in_a_verdict(fake_judge, monkeypatch):
    """A judge endpoint that echoes the Authorization header back in its reply: the answer that is
    cached and recorded must not carry the key."""
    from tunebook.compiler.schema import JudgeModel
    from tunebook.runtime.suites.judge import HTTPJudge
    from tests.reliability.conftest import FAKE_JUDGE_KEY

    monkeypatch.setenv("TUNEBOOK_FAKE_JUDGE_API_KEY", FAKE_JUDGE_KEY)
    monkeypatch.setitem(os.environ, "NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(fake_judge, "echo_key", True)
    judge = HTTPJudge(JudgeModel(name="j", kind="openai", model="m", url=fake_judge.url,
                                 api_key_env="TUNEBOOK_FAKE_JUDGE_API_KEY", retries=0))
    answer = judge.ask("Which is better? A or B")
    assert fake_judge.keys_seen[-1] == FAKE_JUDGE_KEY  # the key was sent...
    tried("hostile inputs")
    assert FAKE_JUDGE_KEY not in answer  # ...and does not come back into what is stored


def test_a_symlink_into_the_projects_own_dvc_cache_is_not_leaving_it(tmp_path):
    """With `dvc cache dir /shared` and `cache.type symlink`, every DVC-tracked input is a symlink out
    of the project into the cache: that is the project's own data, not an escape."""
    root, cache = tmp_path / "proj", tmp_path / "shared-cache"
    (root / ".dvc").mkdir(parents=True)
    (root / ".dvc/config").write_text(f"[cache]\n    dir = {cache}\n    type = symlink\n")
    (cache / "files/md5/ab").mkdir(parents=True)
    (cache / "files/md5/ab/cdef").write_text(ROW)
    (root / "data").mkdir()
    (root / "data/train.jsonl").symlink_to(cache / "files/md5/ab/cdef")
    result = compile_spec(root, SPEC.format(name="x", base="builtin:tiny", source="data/train.jsonl", target="data/train.jsonl"))
    assert result.exit_code == 0, result.output
    (root / "data/other.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")  # but anywhere else still is
    result = compile_spec(root, SPEC.format(name="x", base="builtin:tiny", source="data/other.jsonl", target="data/train.jsonl"))
    assert result.exit_code == 2 and "is a symlink to" in result.stderr, result.output
