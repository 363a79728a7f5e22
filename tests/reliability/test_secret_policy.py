"""Secrets cannot leave (issue 16, classes 4-5): which variable a judge may read, which host it may send
it to, and what happens to a pasted token (compiler/policy.py, checked again in runtime/suites/judge.py).

- `api_key_env` is a NAME like *_API_KEY or *_TOKEN, not another service's credential; a value that
  looks like a token is refused and never echoed.
- a judge `url` carries no credentials; loopback is free, another host only if the project lists it
  (tunebook.toml or TUNEBOOK_JUDGE_HOSTS: places a spec cannot write), and then over https.
- free text that looks like a secret is a compile warning and reaches params.yaml redacted.
- the runtime judge applies the same policy to params.yaml edited behind the compiler's back, reads no
  variable and sends nothing when it refuses, and does not follow a redirect with the key.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.reliability.tally import tried
from tunebook.cli import main

ROW = '{"prompt": "1+1=", "completion": "2", "answer": "2"}\n'
TOKENS = ["hf_FAKEabcdefghijklmnopqrstuvwxyz0123", "sk_live_FAKE0123456789abcdefABCDEF", "sk-FAKEproj0123456789abcdefABCDEF",
          "ghp_FAKE0123456789abcdefABCDEFghijklmn", "AKIAFAKE0123456789AB", "xoxb-FAKE-0123456789-abcdef",
          "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJmYWtlIn0.FAKEsignature0123", "AIzaFAKE0123456789abcdefABCDEFghijklmn"]


def spec(judge: str, description: str = "judged") -> str:
    return f"""\
name: x
description: {json.dumps(description)}
model: {{base: builtin:tiny}}
data: {{train: [{{source: data/d.jsonl}}]}}
eval:
  judge:
    prompts: data/d.jsonl
    judges:
      - {judge}
"""


def compile_in(root: Path, text: str, env: dict | None = None):
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data/d.jsonl").write_text(ROW)
    (root / "specs").mkdir(exist_ok=True)
    (root / "specs/x.yaml").write_text(text)
    return CliRunner(env=env).invoke(main, ["-C", str(root), "compile"])


def judge(url: str = "http://127.0.0.1:8000/v1", key: str | None = "JUDGE_API_KEY") -> str:
    return "{name: j, kind: openai, model: m, url: " + json.dumps(url) + (f", api_key_env: {json.dumps(key)}" if key else "") + "}"


@pytest.mark.parametrize("name", ["HOME", "PATH", "AWS_SECRET_ACCESS_KEY", "SSH_AUTH_SOCK", "judge_api_key", "HF_TOKEN",
                                  "GITHUB_TOKEN", "AWS_SESSION_TOKEN", "HUGGING_FACE_HUB_TOKEN", "DATABASE_PASSWORD"])
def test_a_judge_reads_only_a_key_variable_of_its_own(tmp_path, name):
    result = compile_in(tmp_path, spec(judge(key=name)))
    assert result.exit_code == 2, result.output
    assert "eval.judge.judges.0.api_key_env" in result.stderr, result.stderr
    assert not (tmp_path / "params.yaml").exists()
    tried("secret leaks")


@pytest.mark.parametrize("token", TOKENS)
def test_a_pasted_token_is_refused_as_a_name_and_never_echoed(tmp_path, token):
    result = compile_in(tmp_path, spec(judge(key=token)))
    assert result.exit_code == 2, result.output
    assert token not in result.output and token[6:] not in result.output, result.output
    assert not (tmp_path / "params.yaml").exists()
    tried("secret leaks")


@pytest.mark.parametrize("url", [
    "http://user:FAKEpw42@127.0.0.1:8000/v1", "https://FAKEsecret@api.example.com/v1", "http://127.0.0.1:8000/v1?api_key=abc",
    "http://127.0.0.1/v1?token=abc", "http://127.0.0.1/v1?x=1&access_token=abc", "http://127.0.0.1/v1?sig=abc",
    "http://127.0.0.1/v1/hf_FAKEabcdefghijklmnopqrstuvwxyz0123", "http://127.0.0.1/v1#sk-FAKEproj0123456789abcdefABCDEF",
])
def test_credentials_in_a_url_are_refused(tmp_path, url):
    result = compile_in(tmp_path, spec(judge(url=url)))
    assert result.exit_code == 2, result.output
    assert "eval.judge.judges.0.url" in result.stderr, result.stderr
    for part in ("FAKEpw42", "FAKEsecret", "FAKEabcdefghij", "FAKEproj"):
        if part in url:
            assert part not in result.stderr, result.stderr
    assert not (tmp_path / "params.yaml").exists()
    tried("secret leaks")


@pytest.mark.parametrize("url", ["https://evil.example.com/v1", "http://169.254.169.254/latest", "http://0.0.0.0:80/v1",
                                 "http://localhost.evil.example.com/v1", "http://127.0.0.1.nip.io/v1", "ftp://127.0.0.1/v1",
                                 "file:///etc/passwd", "https://[2001:db8::1]/v1"])
def test_a_remote_host_needs_the_projects_leave(tmp_path, url):
    result = compile_in(tmp_path, spec(judge(url=url)))
    assert result.exit_code == 2, result.output
    assert "eval.judge.judges.0.url" in result.stderr, result.stderr
    tried("secret leaks")


def test_the_project_not_the_spec_allows_a_host(tmp_path):
    url = "https://api.example.com/v1"
    assert compile_in(tmp_path, spec(judge(url=url))).exit_code == 2
    # a spec cannot grant it: there is no such key in a spec
    assert compile_in(tmp_path, spec(judge(url=url)) + "judge_hosts: [api.example.com]\n").exit_code == 2
    (tmp_path / "tunebook.toml").write_text('[judges]\nhosts = ["api.example.com"]\n')
    assert compile_in(tmp_path, spec(judge(url=url))).exit_code == 0
    (tmp_path / "tunebook.toml").unlink()
    assert compile_in(tmp_path, spec(judge(url=url)), env={"TUNEBOOK_JUDGE_HOSTS": "api.example.com"}).exit_code == 0
    # allowed, but a key over plain http to another machine is not
    result = compile_in(tmp_path, spec(judge(url="http://api.example.com/v1")), env={"TUNEBOOK_JUDGE_HOSTS": "api.example.com"})
    assert result.exit_code == 2 and "plain http" in result.stderr, result.output
    tried("secret leaks", 3)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "http://localhost:1234/v1", "http://[::1]:8000/v1", "http://127.1.2.3/v1"])
def test_loopback_is_free(tmp_path, url):
    assert compile_in(tmp_path, spec(judge(url=url))).exit_code == 0


@pytest.mark.parametrize("token", TOKENS[:5])
def test_a_token_in_free_text_warns_and_is_redacted(tmp_path, token):
    result = compile_in(tmp_path, spec(judge(), description=f"run with {token} please"))
    assert result.exit_code == 0, result.output
    assert "looks like it holds" in result.stderr and token not in result.output, result.output
    params = (tmp_path / "params.yaml").read_text()
    assert token not in params and "[redacted]" in params
    tried("secret leaks")


# --- the runtime judge ----------------------------------------------------------------------------------
class _Server:
    def __init__(self, redirect_to: str | None = None):
        self.auth: list[str] = []
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                state.auth.append(self.headers.get("Authorization", ""))
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.end_headers()
                    return
                out = json.dumps({"choices": [{"message": {"content": "A"}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.mark.parametrize("name,url", [("HOME", None), ("AWS_SECRET_ACCESS_KEY", None), ("JUDGE_API_KEY", "https://evil.example.com/v1"),
                                      ("JUDGE_API_KEY", "http://u:p@{host}/v1")])
def test_the_runtime_judge_refuses_what_params_yaml_was_edited_to(tmp_path, monkeypatch, name, url):
    from tunebook.compiler.schema import JudgeModel
    from tunebook.runtime.suites.judge import HTTPJudge, JudgePolicyError

    server = _Server()
    try:
        monkeypatch.setenv(name, "FAKE-value-that-must-not-leave")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        target = (url or server.url).replace("{host}", server.url.split("//")[1].split("/")[0])
        j = HTTPJudge(JudgeModel.model_construct(name="j", kind="openai", model="m", url=target, api_key_env=name,
                                                 max_new_tokens=4, timeout_s=5, retries=0, backoff_s=0), root=tmp_path)
        with pytest.raises(JudgePolicyError):
            j.ask("which?")
        assert server.auth == [], "a request was made"
    finally:
        server.close()
    tried("secret leaks")


def test_a_redirect_does_not_carry_the_key(tmp_path, monkeypatch):
    from tunebook.compiler.schema import JudgeModel
    from tunebook.runtime.suites.judge import HTTPJudge, JudgeUnavailable

    sink = _Server()
    hop = _Server(redirect_to=sink.url.replace("127.0.0.1", "localhost") + "/stolen")
    try:
        monkeypatch.setenv("JUDGE_API_KEY", "FAKE-key-for-redirect")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        j = HTTPJudge(JudgeModel(name="j", kind="openai", model="m", url=hop.url, api_key_env="JUDGE_API_KEY", retries=0),
                      root=tmp_path)
        with pytest.raises(JudgeUnavailable, match="redirect"):
            j.ask("which?")
        assert hop.auth == ["Bearer FAKE-key-for-redirect"] and sink.auth == [], (hop.auth, sink.auth)
    finally:
        hop.close()
        sink.close()
    tried("secret leaks")


def test_params_yaml_names_only_the_variable(tmp_path):
    assert compile_in(tmp_path, spec(judge())).exit_code == 0
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["x"]["eval"]["judge"]["judges"][0]["api_key_env"] == "JUDGE_API_KEY"
    assert os.environ.get("JUDGE_API_KEY") is None or os.environ["JUDGE_API_KEY"] not in (tmp_path / "params.yaml").read_text()
