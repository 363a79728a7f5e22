"""Pairwise judging: a checkpoint's answers against the base model's, decided by one or more judges.

Every item is shown to every judge twice, candidate first and candidate second, so a judge that favours
a position cancels out (seed 004 reported raw single-order verdicts and had to fix an order-mapping bug
by hand). Verdicts are parsed with regular expressions, never strict JSON (seed 002: "Invalid \\escape"
in a judge's JSON); an answer that says nothing usable is counted as unparseable, not a crash.

Judges:
- `kind: hf` — a local causal LM, prompted with the template and decoded greedily: as one user turn
  through its own chat template when it has one (`chat` on the judge overrides; `system` adds a system
  prompt), else raw;
- `kind: openai` — an OpenAI-compatible `/chat/completions` endpoint; the API key is read from the
  environment variable the spec names (`api_key_env`) when a request is made, and never written
  anywhere: not in params, cells, caches, logs or exception messages.

Each (judge, prompt text) answer is cached in its own file below `<eval>/_cache/judge/`, so an
interrupted judging cell resumes without asking again; an unreachable endpoint is retried with
exponential backoff (bounded) and then fails the cell with a clear message, keeping what was judged.

    eval:
      judge: {prompts: data/prompts.jsonl, judges: [{name: tiny, model: "builtin:tiny"}]}
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar

from tunebook.compiler.errors import SpecError, SpecIssue
from tunebook.compiler.policy import key_name_problem, url_problem
from tunebook.compiler.schema import JUDGE_PLACEHOLDERS, JudgeEval, JudgeModel, ModelSpec
from tunebook.files import dict_sha256, write_json_atomic
from tunebook.reports.stats import cohen_kappa, proportion_stderr, wilson
from tunebook.runtime.cells import EvalCellError
from tunebook.runtime.chat import prompt_messages
from tunebook.runtime.generation import generate
from tunebook.runtime.models import device, load_model, load_tokenizer
from tunebook.runtime.suites.base import Reference, Setup
from tunebook.runtime.suites.rows import answers, load_prompts

DEFAULT_TEMPLATE = """\
Which response answers the question better?

Question:
{question}

Response A:
{answer_a}

Response B:
{answer_b}

Reply with one word: A, B or tie.
Verdict:"""
PLACEHOLDERS = JUDGE_PLACEHOLDERS  # the compiler checks templates for them at compile time


def load_template(root: Path, template: str | None) -> str:
    if template is None:
        return DEFAULT_TEMPLATE
    path = root / template
    if not path.is_file():
        raise SpecError([SpecIssue("params.yaml", "eval.judge.template", f"'{template}' does not exist")])
    text = path.read_text()
    missing = [p for p in PLACEHOLDERS if p not in text]
    if missing:
        raise SpecError([SpecIssue("params.yaml", "eval.judge.template", f"{template} lacks {', '.join(missing)}")])
    return text


def fill(template: str, question: str, answer_a: str, answer_b: str) -> str:
    """One pass, so an answer containing '{answer_b}' is not substituted again (str.format would also
    trip over braces in code answers)."""
    values = {"question": question, "answer_a": answer_a, "answer_b": answer_b}
    return re.sub(r"\{(question|answer_a|answer_b)\}", lambda m: values[m.group(1)], template)


# ---------------------------------------------------------------------------------------------------
# verdicts

_WHO = r"(?:response|assistant|answer|output|model)?\s*"


def _label(text: str) -> str | None:
    """'A', 'Response B', '[[A]]', 'tie' ... -> 'A' | 'B' | 'tie' | None."""
    t = re.sub(r"^(?:response|assistant|answer|output|model)\s+", "", text.strip().strip("[]()\"'.:* ").lower())
    if t in ("a", "b"):
        return t.upper()
    if t in ("tie", "draw", "equal", "both", "neither", "c"):  # [[C]] is MT-Bench's tie
        return "tie"
    return None


_VERDICT_RULES = [
    # JSON-ish: {"winner": "B", ...} — by regex, so invalid escapes elsewhere do not matter
    re.compile(r"\"(?:winner|verdict|better|preferred|choice)\"\s*:\s*\"?([^\",}\n]*)", re.IGNORECASE),
    # MT-Bench style [[A]] / [[B]] / [[C]] / [[tie]]
    re.compile(r"\[\[\s*([^\]]{1,20})\s*\]\]"),
    # an explicit verdict: "Verdict: B", "Winner: Response A", "I prefer Response B", "choose A"
    re.compile(r"(?i:verdict|winner|better response|better answer|prefer(?:red)?|choose|choice)\s*(?:is|:|=)?\s*"
               + r"(?i:" + _WHO + r")\(?\b(A|B|(?i:tie|draw))\b"),
    # "Response A is better", "B is clearly superior"
    re.compile(r"(?:(?i:response|assistant|answer|output)\s+)?\b(A|B)\b\)?\s+(?i:is|was)\s+(?i:clearly\s+|much\s+|slightly\s+)?"
               r"(?i:better|superior|preferred|more helpful|the winner)"),
]
_TIE = re.compile(r"\b(?:tie|draw|equally (?:good|bad|helpful)|both (?:are )?(?:equally|equal)|neither)\b", re.IGNORECASE)
# A bare letter: "A", "B.", "**A**", "Response B\n..." — but not the article of "A car is ..."
_BARE = re.compile(r"^\W*(?:(?i:response|assistant|answer)\s+)?(A|B)(?=[^\w\s]|\s*$|\s*\n)")


def parse_verdict(text: str) -> str | None:
    """'A', 'B', 'tie' or None (unparseable). Rules in order; the first that yields a label wins."""
    if not text or not text.strip():
        return None
    for i, rule in enumerate(_VERDICT_RULES):
        found = list(rule.finditer(text))
        if found:
            label = _label(found[-1 if i == 1 else 0].group(1))  # the last [[X]]: judges reason first
            if label:
                return label
    if _TIE.search(text):
        return "tie"
    m = _BARE.match(text)
    return m.group(1) if m else None


# Orders: which side the candidate is shown on. The mapping from a verdict to the candidate's outcome
# lives here and only here (seed 004's bug was doing it in several places).
ORDERS = {"candidate_first": "A", "candidate_second": "B"}


def outcome(verdict: str | None, order: str) -> float | None:
    """The candidate's score from one verdict: 1 win, 0.5 tie, 0 loss, None unparseable."""
    if verdict is None:
        return None
    if verdict == "tie":
        return 0.5
    return 1.0 if verdict == ORDERS[order] else 0.0


# ---------------------------------------------------------------------------------------------------
# statistics


def agreement(a: list, b: list) -> float | None:
    """Cohen's kappa of two judges' decisions over the items both decided (None: undecided); None when
    there are none or kappa is undefined."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        return None
    return cohen_kappa([x for x, _ in pairs], [y for _, y in pairs])


def _decision(score: float | None) -> str | None:
    return None if score is None else "win" if score > 0.5 else "loss" if score < 0.5 else "tie"


def summarize(per_judge: dict[str, list[tuple[float | None, float | None]]]) -> dict:
    """Win/loss/tie from {judge: [(candidate-first score, candidate-second score) per item]}.

    Per judge, an item scores the mean of its two orders (both must parse); across judges, the mean of
    the judges that parsed. The item is a win above 0.5, a loss below, a tie at 0.5; the win rate
    counts ties as half.
    """
    n_items = len(next(iter(per_judge.values())))
    judge_scores, judges = {}, {}
    for name, pairs in per_judge.items():
        scores = [None if a is None or b is None else (a + b) / 2 for a, b in pairs]
        both = [(a, b) for a, b in pairs if a is not None and b is not None]
        decided = [_decision(s) for s in scores]
        judge_scores[name] = scores
        judges[name] = {"wins": decided.count("win"), "losses": decided.count("loss"), "ties": decided.count("tie"),
                        "unparseable": decided.count(None),
                        "unparseable_verdicts": sum(v is None for p in pairs for v in p),
                        "position_consistency": sum(a == b for a, b in both) / len(both) if both else None,
                        # share of non-tie verdicts that picked the response shown first
                        "prefers_first": _first_share(pairs)}
        judges[name]["win_rate"] = _rate(scores)
    items = []
    for i in range(n_items):
        got = [judge_scores[j][i] for j in judge_scores if judge_scores[j][i] is not None]
        items.append(sum(got) / len(got) if got else None)
    decided = [_decision(s) for s in items]
    names = sorted(per_judge)
    kappas = {f"{a}~{b}": agreement([_decision(s) for s in judge_scores[a]], [_decision(s) for s in judge_scores[b]])
              for i, a in enumerate(names) for b in names[i + 1:]}
    defined = [k for k in kappas.values() if k is not None]
    both = [(a, b) for pairs in per_judge.values() for a, b in pairs if a is not None and b is not None]
    return {"items": items, "wins": decided.count("win"), "losses": decided.count("loss"), "ties": decided.count("tie"),
            "unparseable": decided.count(None), "win_rate": _rate(items),
            "position_consistency": sum(a == b for a, b in both) / len(both) if both else None,
            "kappa": (sum(defined) / len(defined) if defined else None) if kappas else None,
            "kappa_pairs": kappas, "judges": judges}


def _rate(scores: list[float | None]) -> float | None:
    got = [s for s in scores if s is not None]
    wins, ties = sum(s > 0.5 for s in got), sum(s == 0.5 for s in got)
    return (wins + ties / 2) / len(got) if got else None


def _first_share(pairs) -> float | None:
    # candidate-first score 1 or candidate-second score 0 both mean "the first response won"
    firsts = [a == 1.0 for a, _ in pairs if a in (0.0, 1.0)] + [b == 0.0 for _, b in pairs if b in (0.0, 1.0)]
    return sum(firsts) / len(firsts) if firsts else None


# ---------------------------------------------------------------------------------------------------
# judges


def judge_chat(spec: JudgeModel, tok) -> bool:
    """Whether a local judge is asked through its chat template: as the spec says, else when its tokenizer
    has one. Judges are instruct models, and an instruct model prompted raw reads the judge prompt as text
    to continue rather than a question to answer; a base model without a template is prompted raw."""
    if spec.chat is not None:
        return spec.chat
    return bool(getattr(tok, "chat_template", None))


class HFJudge:
    """A local causal LM asked for a verdict (greedy). The tiny model makes a fine dumb judge for tests.
    With chat (judge_chat) the filled template is one user turn, after the judge's system prompt if given."""

    def __init__(self, root: Path, spec: JudgeModel, model=None, tok=None):
        mspec = ModelSpec(base=spec.model, revision=spec.revision)
        self.spec = spec
        self.model = model if model is not None else load_model(root, mspec).to(device()).eval()
        self.tok = tok if tok is not None else load_tokenizer(root, mspec)
        self.chat = judge_chat(spec, self.tok)
        if spec.system is not None and not self.chat:
            raise SpecError([SpecIssue("params.yaml", "eval.judge.judges", f"judge '{spec.name}': a system prompt needs "
                                       f"a chat template, and {spec.model}'s tokenizer has none")])
        self.format = "chat" if self.chat else "raw"

    def ask(self, prompt: str) -> str:
        return generate(self.model, self.tok, [prompt], self.spec.max_new_tokens, 1, chat=self.chat,
                        system=self.spec.system)[0][0]


class JudgeUnavailable(EvalCellError):
    """The endpoint stayed unreachable (or refused us) after the retries."""


class HTTPJudge:
    """An OpenAI-compatible chat endpoint: POST {url}/chat/completions, greedy, one user message (after the
    judge's system message when it has one)."""

    RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
    format = "chat"  # the endpoint renders the messages through its own template

    def __init__(self, spec: JudgeModel, sleep=time.sleep, root: Path | None = None):
        self.spec, self.sleep = spec, sleep
        self.endpoint = spec.url.rstrip("/") + "/chat/completions"
        self.dead: str | None = None  # once unreachable, later cells fail at once instead of re-waiting
        self.root = Path(root) if root is not None else Path.cwd()  # stages run in the project root

    def _key(self) -> str | None:
        # the secrets policy once more, right where a key would be read (compiler/policy.py): whatever
        # params.yaml now says, no other variable is read and no other host is sent one
        name = self.spec.api_key_env
        problem = (key_name_problem(name) and f"api_key_env {key_name_problem(name)}") if name is not None else None
        problem = problem or (f"url {p}" if (p := url_problem(self.spec.url, self.root, name is not None)) else None)
        if problem:
            raise JudgePolicyError(f"judge '{self.spec.name}': {problem}")
        if name is None:
            return None
        key = os.environ.get(name)
        if not key:
            raise JudgeUnavailable(f"judge '{self.spec.name}': environment variable {name} is not set (it holds the API key)")
        return key

    def _safe(self, text: str, key: str | None) -> str:
        """Error text from a server or library, with the key cut out in case it was echoed back."""
        return (text.replace(key, "***") if key else text)[:300]

    def ask(self, prompt: str) -> str:
        if self.dead:
            raise JudgeUnavailable(self.dead)
        key = self._key()
        body = json.dumps({"model": self.spec.model, "messages": prompt_messages(prompt, self.spec.system),
                           "temperature": 0, "max_tokens": self.spec.max_new_tokens}).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        last = ""
        for attempt in range(self.spec.retries + 1):
            if attempt:
                self.sleep(self.spec.backoff_s * 2 ** (attempt - 1))
            try:
                req = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
                with _NO_REDIRECTS.open(req, timeout=self.spec.timeout_s) as resp:
                    # an endpoint that echoes the key must not get it into cached verdicts or the record
                    reply = _content(json.loads(resp.read().decode("utf-8", "replace")))
                    return reply.replace(key, "***") if key else reply
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} {self._safe(e.reason or '', key)}"
                if e.code not in self.RETRY_STATUS:  # 400/401/403/404: asking again will not help
                    hint = f" (check {self.spec.api_key_env})" if e.code in (401, 403) and self.spec.api_key_env else ""
                    self.dead = f"judge '{self.spec.name}' at {self.endpoint}: {last}{hint}"
                    raise JudgeUnavailable(self.dead) from None
            except (urllib.error.URLError, OSError, ValueError) as e:  # refused, timeout, reset, bad JSON
                last = self._safe(str(getattr(e, "reason", e)), key)
        self.dead = f"judge '{self.spec.name}' at {self.endpoint}: unreachable after {self.spec.retries + 1} tries ({last})"
        raise JudgeUnavailable(self.dead) from None


class JudgePolicyError(PermissionError):
    """A judge the secrets policy refuses (compiler/policy.py): never retried, never skipped."""


class _Refuse(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the Authorization header to wherever the endpoint points: not followed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, "redirect refused (a judge's key goes to its url only)", headers, fp)


_NO_REDIRECTS = urllib.request.build_opener(_Refuse)


def _content(reply: dict) -> str:
    try:
        return str(reply["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError):
        return ""  # a reply without a message is an unparseable verdict, not a crash


def make_judges(root: Path, spec: JudgeEval) -> dict:
    return {j.name: (HTTPJudge(j, root=root) if j.kind == "openai" else HFJudge(root, j)) for j in spec.judges}


# ---------------------------------------------------------------------------------------------------
# the judging cell


def judge_identity(spec: JudgeModel) -> dict:
    """What determines a judge's answer (not its timeouts, retries or key variable)."""
    return spec.model_dump(mode="json", exclude={"timeout_s", "retries", "backoff_s", "api_key_env"})


def ask_cached(judge, spec: JudgeModel, prompt: str, cache: Path) -> str:
    path = cache / spec.name / f"{dict_sha256([judge_identity(spec), prompt])[:40]}.json"
    try:
        return json.loads(path.read_text())["raw"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        pass
    raw = judge.ask(prompt)
    write_json_atomic(path, {"raw": raw, "judge": spec.name})
    return raw


def eval_judge(judges: dict, spec: JudgeEval, template: str, prompts: list[str], candidate: list[str],
               reference: list[str], checkpoint: str, cache: Path, keep: int) -> dict:
    per_judge: dict[str, list] = {}
    first_raw: list[str] = []
    for jspec in spec.judges:
        pairs = []
        for i, (q, cand, ref) in enumerate(zip(prompts, candidate, reference)):
            order_scores = []
            for order, (a, b) in (("candidate_first", (cand, ref)), ("candidate_second", (ref, cand))):
                raw = ask_cached(judges[jspec.name], jspec, fill(template, q, a, b), cache)
                if jspec is spec.judges[0] and order == "candidate_first":
                    first_raw.append(raw)
                order_scores.append(outcome(parse_verdict(raw), order))
            pairs.append(tuple(order_scores))
        per_judge[jspec.name] = pairs
    s = summarize(per_judge)
    # how each judge was asked (chat or raw), into the record beside its verdict counts; the identity,
    # and so the verdict cache, holds what the spec says (a local judge's unset `chat` follows its tokenizer)
    formats = {j.name: getattr(judges[j.name], "format", None) for j in spec.judges}
    for name, fmt in formats.items():
        if fmt:
            s["judges"][name]["format"] = fmt
    n = len(prompts)
    decided = n - s["unparseable"]
    extra = {k: s[k] for k in ("wins", "losses", "ties", "unparseable", "position_consistency", "kappa", "kappa_pairs", "judges")}
    extra.update(reference="base", orders=list(ORDERS), ties_count="half")
    metrics = [{"suite": "judge", "task": spec.name, "metric": "unparseable_rate", "checkpoint": checkpoint,
                "value": s["unparseable"] / n, "n": n, "higher_is_better": False,
                "extra": {"unparseable": s["unparseable"], "judges": list(judges)}}]
    if decided:  # with nothing decided there is no win rate (not 0, not 0.5)
        wr = s["win_rate"]
        lo, hi = wilson(wr * decided, decided)
        metrics.insert(0, {"suite": "judge", "task": spec.name, "metric": "win_rate", "checkpoint": checkpoint,
                           "value": wr, "stderr": proportion_stderr(wr, decided), "n": decided,
                           "higher_is_better": True,
                           # per-item scores line up across checkpoints only when every item was decided
                           "samples": s["items"] if not s["unparseable"] else None,
                           "extra": {**extra, "ci_low": lo, "ci_high": hi}})
    names = {"win": "win", "loss": "loss", "tie": "tie", None: "unparseable"}
    samples = [{"task": spec.name, "checkpoint": checkpoint, "prompt": q, "output": c, "target": r,
                "extracted": f"{names[_decision(sc)]} (judge: {raw.strip()[:80]!r})", "correct": None if sc is None else sc > 0.5}
               for q, c, r, sc, raw in zip(prompts, candidate, reference, s["items"], first_raw)][:keep]
    return {"metrics": metrics, "samples": samples,
            "judges": {j.name: {**judge_identity(j), **({"format": formats[j.name]} if formats[j.name] else {})}
                       for j in spec.judges}}


# ---------------------------------------------------------------------------------------------------
# the suite


class JudgeSuite:
    """The `judge` cell: each checkpoint's greedy answers against the base model's, judged pairwise.
    Not on the base itself (base vs base says nothing); the base's weights are in the fingerprint."""

    name: ClassVar[str] = "judge"
    on_base: ClassVar[bool] = False
    per_experiment: ClassVar[bool] = False
    against_base: ClassVar[bool] = True

    def __init__(self, setup: Setup):
        self.setup, self.spec = setup, setup.ev.judge
        self.prompts: list[str] = []
        self.template: str | None = None
        self.judges: dict | None = None

    def cells(self) -> list[str]:
        return ["judge"] if self.spec else []

    def check(self) -> None:
        self.prompts = load_prompts(self.setup.root, self.spec, "eval.judge")
        self.template = load_template(self.setup.root, self.spec.template)

    def inputs(self, cell: str) -> dict:
        return {"settings": self.spec.model_dump(mode="json"), "prompts": dict_sha256(self.prompts),
                "template": self.template}

    def run(self, cell: str, model, tok, checkpoint: str, weights_fp: str, reference: Reference) -> dict:
        s = self.setup
        self.judges = self.judges or make_judges(s.root, self.spec)
        candidate = answers(s.out, model, tok, weights_fp, self.spec, self.prompts)
        with reference.base_view() as base:
            ref = answers(s.out, base, tok, reference.base_fp, self.spec, self.prompts)
        return eval_judge(self.judges, self.spec, self.template, self.prompts, candidate, ref, checkpoint,
                          s.out / "_cache" / "judge", s.keep)
