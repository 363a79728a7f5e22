"""Records: refused cleanly, never colliding, never injecting (issue 16, classes 6-8).

- A bad record ends `tunebook report` with exit 2 naming the file and the field, quickly and in bounded
  memory, and writes nothing: no log, no plots folder (reports/intake.py, reports/render.py).
- Experiment names map to log files injectively or are refused; a record other than the pipeline's own
  `runs/<exp>/record.json` never overwrites a pipeline experiment's log or plots without --force.
- Record text cannot change the log's structure (headings, lists, rules), make links of bare URLs,
  put control or bidi characters into the markdown, make an SVG invalid XML, or a CSV cell a formula.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from markdown_it import MarkdownIt

from tests.reliability.tally import tried
from tunebook.cli import main

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/records/quickstart_like.json"


def base() -> dict:
    return json.loads(FIXTURE.read_text())


def report(root: Path, record, *args, raw: bytes | None = None, name: str = "r.json"):
    path = root / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw if raw is not None else json.dumps(record).encode())
    return CliRunner().invoke(main, ["-C", str(root), "report", "--record", str(path), *args])


def nothing_written(root: Path) -> bool:
    return not (root / "logs").exists() or not any((root / "logs").rglob("*"))


# --- class 6: bad records refused cleanly ----------------------------------------------------------------
def _set(rec: dict, path: str, value) -> dict:
    node = rec
    *parts, last = path.split(".")
    for p in parts:
        node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
    node[int(last) if last.isdigit() else last] = value
    return rec


def _nested(depth: int):
    v: object = 1
    for _ in range(depth):
        v = {"a": v}
    return v


BAD = {  # name: (how to spoil the fixture record, the field the error must name)
    "timings NaN": (lambda r: _set(r, "timings.data", float("nan")), "timings.data"),
    "timings Infinity": (lambda r: _set(r, "timings.training", float("inf")), "timings.training"),
    "extra -Infinity": (lambda r: _set(r, "metrics.0.extra.ci_low", float("-inf")), None),
    "environment NaN": (lambda r: _set(r, "environment.threads", float("nan")), "environment.threads"),
    "revision int": (lambda r: _set(r, "model.revision", 12345), "model.revision"),
    "revision list": (lambda r: _set(r, "model.revision", ["main"]), "model.revision"),
    "base object": (lambda r: _set(r, "model.base", {"x": 1}), "model.base"),
    "huge int step": (lambda r: _set(r, "checkpoints.0.step", 10 ** 30), "checkpoints.0.step"),
    "huge int env": (lambda r: _set(r, "environment.cpus", 10 ** 40), "environment.cpus"),
    "nesting 40": (lambda r: _set(r, "environment.deep", _nested(40)), "environment.deep"),
    "5000-char experiment": (lambda r: _set(r, "experiment", "x" * 5000), "experiment"),
    "5000-char task": (lambda r: _set(r, "metrics.0.task", "t" * 5000), "metrics.0.task"),
    "5000-char key": (lambda r: _set(r, "environment." + "k" * 5000, 1), "environment"),
    "win rate 1.5": (lambda r: _set(r, "metrics.0.extra.reference", "base") and _set(r, "metrics.0.value", 1.5), "metrics.0"),
    "negative n": (lambda r: _set(r, "metrics.0.n", -3), "metrics.0.n"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_record_is_refused_naming_the_field(tmp_path, case):
    spoil, field = BAD[case]
    rec = spoil(base())
    raw = json.dumps(rec, allow_nan=True).encode() if case != "huge int step" else None
    result = report(tmp_path, rec, raw=raw)
    assert result.exit_code == 2, (result.exit_code, result.output[-2000:])
    assert "Traceback" not in result.output
    if field:
        assert field in result.stderr, result.stderr[-2000:]
    assert nothing_written(tmp_path), list((tmp_path / "logs").rglob("*"))
    tried("bad records")


RAW = {  # name: (bytes of the file, what the error says)
    "bad UTF-8": (lambda t: t.replace(b'"quickstart"', b'"quick\xff\xfestart"', 1), "not valid UTF-8"),
    "lone surrogate in a value": (lambda t: t.replace(b'"quickstart"', b'"quick\\ud800start"', 1), "lone surrogate"),
    "lone surrogate in a key": (lambda t: t.replace(b'"environment": {', b'"environment": {"\\udfff": 1, ', 1), "lone surrogate"),
    "duplicate top-level key": (lambda t: t.rstrip()[:-1] + b', "experiment": "other"}', "appears twice"),
    "duplicate nested key": (lambda t: t.replace(b'"environment": {', b'"environment": {"torch": "1", "torch": "2", ', 1), "appears twice"),
    "5000-deep nesting": (lambda t: t.replace(b'"environment": {', b'"environment": {"d": ' + b"[" * 5000 + b"]" * 5000 + b", ", 1), "nested deeper"),
    "100k-deep nesting": (lambda t: t.replace(b'"environment": {', b'"environment": {"d": ' + b"[" * 100_000 + b"]" * 100_000 + b", ", 1), "nested deeper"),
    "5000-digit int": (lambda t: t.replace(b'"environment": {', b'"environment": {"n": ' + b"9" * 5000 + b", ", 1), "digits"),
    "1e400": (lambda t: t.replace(b'"environment": {', b'"environment": {"x": 1e400, ', 1), "not a finite number"),
    "truncated": (lambda t: t[: len(t) // 2], "not valid JSON"),
    "NUL bytes": (lambda t: b"\x00" * 100, "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(RAW))
def test_a_malformed_record_file_is_refused(tmp_path, case):
    spoil, says = RAW[case]
    text = json.dumps(base(), indent=1).encode()
    result = report(tmp_path, None, raw=spoil(text))
    assert result.exit_code == 2, (result.exit_code, result.output[-2000:])
    assert says in result.stderr, result.stderr[-2000:]
    assert nothing_written(tmp_path)
    tried("bad records")


@pytest.mark.parametrize("what,n", [("metrics", 100_000), ("samples", 100_000)])
def test_a_record_too_large_is_refused_quickly(tmp_path, what, n):
    rec = base()
    one = {k: v for k, v in rec[what][0].items() if k not in ("samples", "sample_ids")}
    rec[what] = [dict(one, task=f"t{i}") for i in range(n)]
    start = time.perf_counter()
    result = report(tmp_path, rec)
    took = time.perf_counter() - start
    assert result.exit_code == 2 and f"{what}:" in result.stderr, result.stderr[-1000:]
    assert took < 20, f"{took:.1f} s to refuse {n} {what}"
    tried("bad records")


def test_a_failed_render_leaves_no_orphan_plots_folder(tmp_path, monkeypatch):
    import tunebook.reports.render as render

    def boom(*a, **kw):
        raise RuntimeError("template failed")

    monkeypatch.setattr(render, "render", boom)
    result = report(tmp_path, base())
    assert result.exit_code == 1
    assert nothing_written(tmp_path), list((tmp_path / "logs").rglob("*"))
    tried("bad records")


# --- class 7: names map to files injectively --------------------------------------------------------------
@pytest.mark.parametrize("name", ["review", "", ".", "..", "Ünï", "ünï", "a/b", "../x", "a\\b", "x" * 129, "a..b", ".hidden",
                                  "CON\x00", "Upper", "a b"])
def test_a_name_that_cannot_be_a_file_is_refused(tmp_path, name):
    result = report(tmp_path, dict(base(), experiment=name))
    assert result.exit_code == 2, result.output
    assert "experiment" in result.stderr, result.stderr
    assert nothing_written(tmp_path) and not (tmp_path / "reports").exists()
    tried("name collisions")


def test_distinct_names_write_distinct_files(tmp_path):
    names = ["a_b", "a-b", "a.b", "ab", "a_b_", "a__b", "r3view", "reviews"]
    for n in names:
        assert report(tmp_path, dict(base(), experiment=n), name=f"{n}.json").exit_code == 0
    logs = sorted(p.name for p in (tmp_path / "logs").glob("*.md"))
    assert logs == sorted(f"{n}.md" for n in names), logs
    tried("name collisions", len(names))


@pytest.fixture
def pipeline(tmp_path):
    """A project whose pipeline has experiment `exp1`, its record run and its log rendered."""
    (tmp_path / "params.yaml").write_text("exp1: {description: x}\nbaselines: {}\n")
    own = tmp_path / "runs/exp1/record.json"
    own.parent.mkdir(parents=True)
    own.write_text(json.dumps(dict(base(), experiment="exp1")))
    assert CliRunner().invoke(main, ["-C", str(tmp_path), "report", "exp1"]).exit_code == 0
    return tmp_path, (tmp_path / "logs/exp1.md").read_bytes()


@pytest.mark.parametrize("how", ["--record", "-o logs/other.md", "record of another name", "params only"])
def test_a_hand_brought_record_never_overwrites_a_pipeline_log(pipeline, how):
    root, before = pipeline
    hostile = dict(base(), experiment="exp1", title="IMPOSTOR")
    if how == "--record":
        result = report(root, hostile)
    elif how == "-o logs/other.md":
        result = report(root, hostile, "-o", str(root / "logs/other.md"))
    elif how == "record of another name":  # runs/evil/record.json claiming to be exp1
        (root / "runs/evil").mkdir()
        (root / "runs/evil/record.json").write_text(json.dumps(hostile))
        result = CliRunner().invoke(main, ["-C", str(root), "report", "evil"])
    else:  # exp2 is compiled (in params.yaml) but has not run yet: its log is still the pipeline's to write
        (root / "params.yaml").write_text("exp1: {}\nexp2: {}\n")
        result = report(root, dict(hostile, experiment="exp2"))
        assert result.exit_code == 2 and "--force" in result.stderr, result.output
        assert not (root / "logs/exp2.md").exists()
        tried("name collisions")
        return
    assert result.exit_code == 2 and "--force" in result.stderr, result.output
    assert (root / "logs/exp1.md").read_bytes() == before
    assert all("IMPOSTOR" not in p.read_text(errors="replace") for p in (root / "logs").rglob("*") if p.is_file())
    tried("name collisions")


def test_force_lets_a_hand_brought_record_replace_the_log(pipeline):
    root, before = pipeline
    result = report(root, dict(base(), experiment="exp1", title="Replaced on purpose"), "--force")
    assert result.exit_code == 0, result.output
    assert "Replaced on purpose" in (root / "logs/exp1.md").read_text()


def test_a_hand_brought_record_elsewhere_is_fine(pipeline):
    root, before = pipeline
    result = report(root, dict(base(), experiment="imported-1"))
    assert result.exit_code == 0, result.output
    assert (root / "logs/imported-1.md").exists() and (root / "logs/exp1.md").read_bytes() == before


# --- class 8: structure and format injection --------------------------------------------------------------
STRUCTURE = ["# Fake heading", "## Another", "---", "***", "___", "1. ordered", "12) ordered", "- bullet", "+ plus", "* star",
             "> quote", "    indented code", "=====", "| a | b |", "<!-- comment -->", "[x]: http://evil.example/ref"]
URLS = ["http://evil.example/x", "https://evil.example/login?u=1", "www.evil.example", "see HTTP://EVIL.EXAMPLE now", "ftp://files.example/a"]
CONTROL = ["esc\x1b[2J\x1b]0;pwned\x07", "nul\x00byte", "bidi\u202eevil\u202c", "iso\u2066x\u2069", "zw\u200bsp", "bom\ufeffx",
           "c1\x85\x9b", "bs\x08\x08", "ff\x0cvt\x0b", "nonchar\ufffe\uffff"]
MD = MarkdownIt("commonmark").enable("table")


def spoiled(texts: list[str]) -> dict:
    rec = base()
    it = itertools.cycle(texts)
    rec["title"] = next(it)
    rec["notes"] = list(texts)
    rec["model"]["base"] = next(it)
    renamed = {}
    for m in rec["metrics"]:
        m["task"] = renamed.setdefault(m["task"], next(it))
    for s in rec["samples"]:
        s["task"] = renamed.get(s["task"], s["task"])
        s["output"], s["prompt"] = next(it), next(it)
    return rec


def structure(markdown: str) -> list[str]:
    return [t.type for t in MD.parse(markdown) if t.type.endswith("_open") or t.type in ("hr", "code_block", "fence", "html_block")]


@pytest.mark.parametrize("group", ["structure", "urls"])
def test_record_text_cannot_change_the_logs_structure(tmp_path, group):
    texts = STRUCTURE if group == "structure" else URLS
    assert report(tmp_path / "h", spoiled(texts)).exit_code == 0
    assert report(tmp_path / "b", spoiled([f"word{i}" for i in range(len(texts))])).exit_code == 0
    hostile = next((tmp_path / "h/logs").glob("*.md"))
    benign = next((tmp_path / "b/logs").glob("*.md"))
    h, b = hostile.read_text(), benign.read_text()
    assert structure(h) == structure(b), "record text changed the log's block structure"
    inline = lambda text: [c.type for t in MD.parse(text) if t.children for c in t.children if c.type.endswith("_open") or c.type == "image"]
    assert inline(h) == inline(b), "record text made a link or emphasis"
    body = re.sub(r"(?ms)^(`{3,})[^\n]*\n.*?^\1$", "", h)  # a fenced block shows code, not links
    for m in re.finditer(r"(?i)(?:[a-z]+://|www\.)", body):
        assert False, f"a bare URL GitHub would link: {body[max(0, m.start() - 20):m.end() + 20]!r}"
    tried("injections", len(texts))


def test_control_and_bidi_characters_never_reach_a_file(tmp_path):
    result = report(tmp_path, spoiled(CONTROL))
    assert result.exit_code == 0, result.output
    files = [p for p in (tmp_path / "logs").rglob("*") if p.is_file()]
    assert any(p.suffix == ".svg" for p in files) and any(p.suffix == ".md" for p in files)
    bad = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff\ufffe\uffff]")
    for p in files:
        text = p.read_bytes().decode("utf-8")
        assert not bad.search(text), f"{p.name}: {bad.search(text).group()!r}"
        if p.suffix == ".svg":
            ET.fromstring(p.read_bytes())  # well-formed XML
    assert "\\u001b" in (tmp_path / "logs").joinpath(next(p.name for p in files if p.suffix == ".md")).read_text()
    tried("injections", len(CONTROL))


@pytest.mark.parametrize("task", ["=HYPERLINK(\"http://evil.example\",\"x\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A2)",
                                  "\t=1+1", "\r=1+1"])
def test_csv_cells_are_never_formulas(tmp_path, task):
    rec = base()
    first = next(m["task"] for m in rec["metrics"] if m["suite"] == "target")
    for m in rec["metrics"]:
        if m["task"] == first:
            m["task"] = task
    for s in rec["samples"]:
        if s["task"] == first:
            s["task"] = task
    for c in rec["checkpoints"]:
        c["name"] = c["name"]
    assert report(tmp_path, rec).exit_code == 0
    csvs = list((tmp_path / "logs").rglob("*.csv"))
    assert csvs
    import csv

    for p in csvs:
        for row in csv.reader(p.open(newline="")):
            for cell in row:
                assert not cell.startswith(("=", "+", "@", "\t", "\r")) and not re.match(r"-[^0-9.]", cell) and \
                    not (cell.startswith("-") and not re.fullmatch(r"-[0-9.e+-]+", cell)), f"{p.name}: {cell!r}"
    tried("injections")
