"""Pairwise judging: verdict parsing (seed 002/004 formats), the order mapping, statistics, an
OpenAI-compatible judge against a real HTTP server on 127.0.0.1, retries and resumption, a local HF
judge, and the judge cell inside a checkpoint sweep. The API key must never leak."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tunebook.compiler.schema import JudgeEval, JudgeModel
from tunebook.reports.stats import wilson
from tunebook.runtime import evaluate
from tunebook.runtime.suites import judge
from tunebook.runtime.suites.judge import HTTPJudge, JudgeUnavailable, agreement, eval_judge, outcome, parse_verdict, summarize

from .eval_helpers import REPO, make_project

SECRET = "sk-test-DO-NOT-LEAK-4242"


@pytest.mark.parametrize("text, expected", [
    ("A", "A"), ("B.", "B"), ("**B**", "B"), ("Response B", "B"), ("Response A\nIt is more precise.", "A"),
    ("[[A]]", "A"), ("Reasoning first... [[B]]", "B"), ("[[C]]", "tie"), ("[[tie]]", "tie"),
    ("tie", "tie"), ("It's a tie.", "tie"), ("Both responses are equally good.", "tie"),
    ('{"winner": "B", "reason": "matches \\d+ better"}', "B"),  # invalid JSON escape (seed 002): still read
    ('```json\n{"winner": "Response A"}\n```', "A"), ('{"winner": "tie"}', "tie"),
    ("Verdict: B", "B"), ("After comparing both, I prefer Response A.", "A"),
    ("Response A is better than Response B.", "A"), ("B is clearly better", "B"),
    # garbage is unparseable, not a guess
    ("A car is driving towards the base of a tower", None), ("the color of bakipu is gold", None),
    ("lorem ipsum", None), ("", None), ("   ", None), ('{"winner": null}', None),
])
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


def test_order_mapping_seed_004():
    """Seed 004: the judge said "Response B" and the script credited the wrong model. With the candidate
    shown second, "B" is the candidate's win; shown first, it is a loss."""
    assert outcome(parse_verdict("Response B"), "candidate_second") == 1.0
    assert outcome(parse_verdict("Response B"), "candidate_first") == 0.0
    assert outcome(parse_verdict("Response A"), "candidate_first") == 1.0
    assert outcome("tie", "candidate_second") == 0.5 and outcome(None, "candidate_first") is None


def test_wilson_and_kappa_known_values():
    from tunebook.reports import stats

    assert judge.wilson is stats.wilson and judge.cohen_kappa is stats.cohen_kappa  # one implementation (issue 13): the one checked against statsmodels
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = wilson(10, 13)  # seed 004's "77 % win rate" on 13 prompts
    assert lo == pytest.approx(0.4970, abs=1e-3) and hi == pytest.approx(0.9182, abs=1e-3)
    assert wilson(5, 5)[1] == 1.0 and wilson(0, 5)[0] == 0.0
    assert agreement([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.5)
    assert agreement([1, 1], [1, 1]) is None  # one category only: chance agreement is 1, kappa undefined
    assert agreement([1, None, 0], [1, 0, 0]) == pytest.approx(1.0)  # items one rater skipped are left out


def test_summarize_cancels_position_bias_and_counts_ties_half():
    fair = [(1.0, 1.0), (1.0, 1.0), (0.0, 0.0), (0.5, 0.5), (1.0, None)]
    first = [(1.0, 0.0)] * 5  # always picks the response shown first
    s = summarize({"fair": fair})
    assert (s["wins"], s["losses"], s["ties"], s["unparseable"]) == (2, 1, 1, 1)
    assert s["win_rate"] == pytest.approx((2 + 0.5) / 4)
    assert s["position_consistency"] == 1.0 and s["kappa"] is None
    s = summarize({"first": first})
    assert (s["wins"], s["losses"], s["ties"]) == (0, 0, 5)  # a pure position bias is a tie, not a win
    assert s["judges"]["first"]["position_consistency"] == 0.0 and s["judges"]["first"]["prefers_first"] == 1.0
    both = summarize({"fair": fair, "first": first})
    assert both["kappa_pairs"] == {"fair~first": pytest.approx(both["kappa"])}


# --- a real OpenAI-compatible server on 127.0.0.1 ---------------------------------------------------


class Server:
    """Threaded stdlib HTTP server; `respond(body) -> (status, reply)` decides each answer."""

    def __init__(self, respond):
        self.respond, self.calls = respond, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.calls.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                status, reply = outer.respond(body, self.headers.get("Authorization"))
                data = json.dumps(reply).encode() if not isinstance(reply, bytes) else reply
                self.send_response(status, "Unauthorized " + (self.headers.get("Authorization") or "") if status == 401 else None)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.srv.server_port}/v1"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@contextlib.contextmanager
def server(respond):
    s = Server(respond)
    try:
        yield s
    finally:
        s.close()


def chat(text: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


FORMATS = ["{}", "[[{}]]", "Response {}", '{{"winner": "{}", "why": "\\\\escape"}}']


def length_judge(body, auth):
    """Prefers the longer response (a tie when equal), answering in a rotating verdict format."""
    assert auth == f"Bearer {SECRET}"
    prompt = body["messages"][0]["content"]
    a, b = re.search(r"Response A:\n(.*)\n\nResponse B:\n(.*)\n\nReply", prompt, re.S).groups()
    v = "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"
    return 200, chat(FORMATS[len(prompt) % len(FORMATS)].format(v))


PROMPTS = ["q1", "q2", "q3", "q4", "q5"]
CANDIDATE = ["long answer", "long answer", "long answer", "s", "same"]
REFERENCE = ["short", "short", "short", "longer", "mesa"]  # "mesa": as long as "same", a tie


def http_spec(url: str, **kw) -> JudgeEval:
    j = {"name": "api", "kind": "openai", "model": "judge-1", "url": url, "api_key_env": "JUDGE_API_KEY", **kw}
    return JudgeEval(prompts="p.jsonl", judges=[j])


def run_judge(spec, tmp_path):
    judges = judge.make_judges(tmp_path, spec)
    return eval_judge(judges, spec, judge.DEFAULT_TEMPLATE, PROMPTS, CANDIDATE, REFERENCE, "final", tmp_path / "cache", 6)


def test_http_judge_both_orders_win_rate_and_no_key_anywhere(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("JUDGE_API_KEY", SECRET)
    with server(length_judge) as s:
        res = run_judge(http_spec(s.url), tmp_path)
    assert len(s.calls) == 2 * len(PROMPTS) and s.calls[0]["path"] == "/v1/chat/completions"
    assert s.calls[0]["body"]["temperature"] == 0 and s.calls[0]["body"]["model"] == "judge-1"
    assert [m["role"] for m in s.calls[0]["body"]["messages"]] == ["user"]  # no system prompt: the one user turn
    m = res["metrics"][0]
    assert (m["suite"], m["task"], m["metric"], m["checkpoint"]) == ("judge", "judge", "win_rate", "final")
    x = m["extra"]
    assert (x["wins"], x["losses"], x["ties"], x["unparseable"]) == (3, 1, 1, 0)
    assert m["value"] == pytest.approx(3.5 / 5) and m["n"] == 5
    assert x["ci_low"] < m["value"] < x["ci_high"] and x["position_consistency"] == 1.0
    assert m["samples"] == [1.0, 1.0, 1.0, 0.0, 0.5]
    leaked = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and SECRET in p.read_text()]
    assert not leaked and SECRET not in json.dumps(res) and SECRET not in "".join(capfd.readouterr())
    assert "api_key_env" not in json.dumps(res["judges"])

    # cached per item: with the server gone, judging again still works, from the cache alone
    assert run_judge(http_spec(s.url, retries=0), tmp_path)["metrics"] == res["metrics"]


def test_unreachable_endpoint_backs_off_then_fails_clearly(monkeypatch):
    monkeypatch.setenv("JUDGE_API_KEY", SECRET)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens here
    waits = []
    j = HTTPJudge(JudgeModel(name="api", kind="openai", model="m", url=f"http://127.0.0.1:{port}/v1",
                             api_key_env="JUDGE_API_KEY", retries=3, backoff_s=0.5, timeout_s=2), sleep=waits.append)
    with pytest.raises(JudgeUnavailable) as e:
        j.ask("which is better?")
    assert waits == [0.5, 1.0, 2.0]  # exponential, bounded by `retries`
    assert "unreachable after 4 tries" in str(e.value) and SECRET not in str(e.value)
    waits.clear()
    with pytest.raises(JudgeUnavailable):
        j.ask("again")
    assert waits == []  # known dead: the next item fails at once instead of waiting again


def test_rejected_key_is_not_retried_and_not_echoed(monkeypatch):
    monkeypatch.setenv("JUDGE_API_KEY", SECRET)
    with server(lambda body, auth: (401, {"error": f"bad key {auth}"})) as s:
        j = HTTPJudge(JudgeModel(name="api", kind="openai", model="m", url=s.url, api_key_env="JUDGE_API_KEY",
                                 backoff_s=0), sleep=lambda _: None)
        with pytest.raises(JudgeUnavailable) as e:
            j.ask("q")
    assert len(s.calls) == 1
    assert "HTTP 401" in str(e.value) and "JUDGE_API_KEY" in str(e.value) and SECRET not in str(e.value)
    monkeypatch.delenv("JUDGE_API_KEY")
    with pytest.raises(JudgeUnavailable, match="JUDGE_API_KEY is not set"):
        HTTPJudge(j.spec).ask("q")


def test_failure_midway_keeps_judged_items_and_a_rerun_asks_only_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_API_KEY", SECRET)
    state = {"up": 4}  # answers four requests, then 503s

    def flaky(body, auth):
        if state["up"] <= 0:
            return 503, {"error": "overloaded"}
        state["up"] -= 1
        return length_judge(body, auth)

    with server(flaky) as s:
        spec = http_spec(s.url, retries=2, backoff_s=0)
        with pytest.raises(JudgeUnavailable, match="unreachable after 3 tries"):
            run_judge(spec, tmp_path)
        assert len(list((tmp_path / "cache").rglob("*.json"))) == 4
        state["up"] = 100
        n_before = len(s.calls)
        res = run_judge(spec, tmp_path)
    assert len(s.calls) - n_before == 2 * len(PROMPTS) - 4
    assert res["metrics"][0]["extra"]["wins"] == 3


def test_garbage_judge_is_unparseable_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_API_KEY", SECRET)
    replies = iter([chat("I like turtles"), {"no": "choices"}] * 5)
    with server(lambda body, auth: (200, next(replies))) as s:
        res = run_judge(http_spec(s.url), tmp_path)
    assert [m["metric"] for m in res["metrics"]] == ["unparseable_rate"]  # no win rate from nothing
    assert res["metrics"][0]["value"] == 1.0 and res["metrics"][0]["extra"]["unparseable"] == 5


def test_two_judges_report_kappa(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_API_KEY", SECRET)
    with server(length_judge) as s1, server(lambda body, auth: (200, chat("A"))) as s2:
        spec = JudgeEval(prompts="p.jsonl", judges=[
            {"name": "len", "kind": "openai", "model": "m", "url": s1.url, "api_key_env": "JUDGE_API_KEY"},
            {"name": "first", "kind": "openai", "model": "m", "url": s2.url}])
        res = run_judge(spec, tmp_path)
    x = res["metrics"][0]["extra"]
    assert x["kappa"] == pytest.approx(0.0) and set(x["judges"]) == {"len", "first"}
    assert x["judges"]["first"]["prefers_first"] == 1.0 and x["judges"]["len"]["position_consistency"] == 1.0
    assert s2.calls[0]["auth"] is None  # no api_key_env, no Authorization header


def test_local_hf_judge_tiny_model(tmp_path, monkeypatch):
    spec = JudgeEval(prompts="p.jsonl", judges=[{"name": "tiny", "model": "builtin:tiny", "max_new_tokens": 4}])
    judges = judge.make_judges(REPO, spec)
    res = eval_judge(judges, spec, judge.DEFAULT_TEMPLATE, PROMPTS[:3], CANDIDATE[:3], REFERENCE[:3], "final", tmp_path, 2)
    metrics = {m["metric"]: m for m in res["metrics"]}
    assert metrics["unparseable_rate"]["n"] == 3
    if "win_rate" in metrics:  # whatever the dumb judge said, the counts add up
        e = metrics["win_rate"]["extra"]
        assert e["wins"] + e["losses"] + e["ties"] + e["unparseable"] == 3
    else:
        assert metrics["unparseable_rate"]["value"] == 1.0
    assert len(list(tmp_path.rglob("*.json"))) == 6  # one cached verdict per item and order
    assert res["judges"]["tiny"]["format"] == "chat"  # unset chat: the tiny tokenizer has a template
    monkeypatch.setattr(judge.HFJudge, "ask", lambda self, p: pytest.fail("asked again"))
    assert eval_judge(judges, spec, judge.DEFAULT_TEMPLATE, PROMPTS[:3], CANDIDATE[:3], REFERENCE[:3], "final", tmp_path, 2) == res


def test_openai_judge_sends_its_system_prompt_and_the_cell_says_how_judges_were_asked(tmp_path):
    with server(lambda body, auth: (200, chat("A"))) as s:
        spec = JudgeEval(prompts="p.jsonl", judges=[{"name": "j", "kind": "openai", "model": "m", "url": s.url,
                                                     "system": "You are a fair judge."}])
        res = run_judge(spec, tmp_path)
    msgs = s.calls[0]["body"]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user"] and msgs[0]["content"] == "You are a fair judge."
    assert msgs[1]["content"].startswith("Which response answers the question better?")
    assert res["judges"]["j"]["format"] == "chat" and res["judges"]["j"]["system"] == "You are a fair judge."
    assert res["metrics"][0]["extra"]["judges"]["j"]["format"] == "chat"


def test_template_placeholders_are_filled_once():
    text = judge.fill("Q {question} A {answer_a} B {answer_b}", "q", "{answer_b}", "x")
    assert text == "Q q A {answer_b} B x"


# --- the judge cell in a sweep ------------------------------------------------------------------------


def test_judge_cells_in_a_sweep_fail_soft_then_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_API_KEY", SECRET)
    state = {"up": False}

    def respond(body, auth):
        return (200, chat("[[A]]")) if state["up"] else (503, {"error": "down"})

    with server(respond) as s:
        root = make_project(tmp_path, {"judge": {"prompts": "prompts.jsonl", "max_new_tokens": 6, "judges": [
            {"name": "api", "kind": "openai", "model": "m", "url": s.url, "api_key_env": "JUDGE_API_KEY",
             "retries": 1, "backoff_s": 0}]}})
        (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"{a}-{b}="}) + "\n" for a, b in [(9, 3), (20, 7)]))
        from tunebook.runtime.context import experiment_context

        ctx = experiment_context(root, "exp")
        with pytest.raises(evaluate.EvalCellError, match="resumes") as e:
            evaluate.run(ctx)
        assert str(e.value).count("unreachable after 2 tries") == 3 and len(s.calls) == 2  # dead once, not per checkpoint
        out = root / "runs" / "exp" / "eval"
        assert {p.name for p in out.glob("*/loss.json")} and not list(out.glob("*/judge.json"))  # other cells kept
        losses = {p: p.stat().st_mtime_ns for p in out.glob("*/loss.json")}

        state["up"] = True
        evaluate.run(ctx)
    cells = sorted(str(p.relative_to(out)) for p in out.glob("*/judge.json"))
    assert cells == ["checkpoint-2/judge.json", "checkpoint-4/judge.json", "final/judge.json"]  # never base vs base
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/loss.json")} == losses
    cell = json.loads((out / "final" / "judge.json").read_text())
    from tunebook.reports.record import Metric, Sample

    assert [Metric.model_validate(m).metric for m in cell["metrics"]] == ["win_rate", "unparseable_rate"]
    assert all(Sample.model_validate(smp) for smp in cell["samples"])
    x = cell["metrics"][0]["extra"]
    assert x["ties"] == 2 and x["judges"]["api"]["prefers_first"] == 1.0  # "[[A]]" always: bias cancelled
    assert SECRET not in json.dumps(cell) and not any(SECRET in p.read_text() for p in out.rglob("*.json"))
