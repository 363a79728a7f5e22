"""The experiment log: golden files, byte-for-byte determinism, hostile text, plots beside it.

Regenerate the golden files after an intended change with
    TUNEBOOK_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/reports/test_render.py
and read the diff before committing it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunebook.reports.markdown import safe_name
from tunebook.reports.compute import compute
from tunebook.reports.render import evaluated_note, write_report

from .conftest import FIXTURES, make, metric

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", ["quickstart_like", "seed000_exp2"])
def test_golden(name, tmp_path):
    out = write_report(FIXTURES / f"{name}.json", tmp_path / f"{name}.md").read_text()
    golden = GOLDEN / f"{name}.md"
    if os.environ.get("TUNEBOOK_UPDATE_GOLDEN"):
        golden.write_text(out)
    assert out == golden.read_text()


def test_same_record_same_bytes(tmp_path):
    record = FIXTURES / "quickstart_like.json"
    first = write_report(record, tmp_path / "a" / "log.md")
    plots = {p.name: p.read_bytes() for p in (tmp_path / "a" / "plots" / "quickstart").iterdir()}
    second = write_report(record, tmp_path / "b" / "log.md")
    assert first.read_bytes() == second.read_bytes()
    assert plots == {p.name: p.read_bytes() for p in (tmp_path / "b" / "plots" / "quickstart").iterdir()}


def test_plots_are_linked_relatively_and_nothing_is_written_beside_the_record(tmp_path):
    record = tmp_path / "runs" / "quickstart" / "record.json"
    record.parent.mkdir(parents=True)
    record.write_text((FIXTURES / "quickstart_like.json").read_text())
    log = write_report(record, tmp_path / "reports" / "quickstart.md").read_text()
    for name in ("general", "target", "loss"):
        assert f"](plots/quickstart/{name}.svg)" in log
    assert sorted(p.name for p in (tmp_path / "reports" / "plots" / "quickstart").iterdir()) == [
        "general.csv", "general.svg", "loss.svg", "target.csv", "target.svg", "training.csv"]
    assert [p.name for p in record.parent.iterdir()] == ["record.json"]


def test_header_lists_every_evaluated_checkpoint_issue15(tmp_path):
    """Every checkpoint evaluated must not read "Evaluated: final": the header lists them by step."""
    log = write_report(FIXTURES / "quickstart_like.json", tmp_path / "log.md").read_text()
    assert "| Evaluated | 3 checkpoints (steps 50, 100, 204; final = 204) |" in log
    log = write_report(FIXTURES / "seed000_exp2.json", tmp_path / "seed.md").read_text()
    assert "| Evaluated | final only |" in log


def test_evaluated_note_says_what_has_results():
    def note(**fields) -> str:
        record = make(**fields)
        return evaluated_note(record, compute(record))

    ckpts = [{"name": f"checkpoint-{s}", "step": s} for s in (10, 20, 30)] + [{"name": "final", "step": 40, "is_final": True}]
    every = [metric("t", "base", 0.5)] + [metric("t", c["name"], 0.5) for c in ckpts]
    assert note(checkpoints=ckpts, metrics=every) == "4 checkpoints (steps 10, 20, 30, 40; final = 40)"
    assert note(checkpoints=ckpts, metrics=every[:1] + every[-1:]) == "final only"
    assert note(checkpoints=ckpts, metrics=every[:3]) == "2 checkpoints (steps 10, 20); the final (final, step 40) was not evaluated"
    assert note(checkpoints=ckpts, metrics=every[:2]) == "checkpoint-10 only (step 10); the final (final, step 40) was not evaluated"
    assert note(metrics=[metric("t", "a", 0.5), metric("t", "b", 0.5)]) == "2 checkpoints (a, b)"  # steps unknown: names
    many = [{"name": f"c{s}", "step": s} for s in range(1, 13)]
    assert note(checkpoints=many, metrics=[metric("t", c["name"], 0.5) for c in many]) == "12 checkpoints (steps 1, 2, 3, …, 11, 12; final = 12)"
    assert note(metrics=[metric("t", "base", 0.5)]) == "the base model only"
    assert note() == "nothing"


def test_seed000_shows_drift_and_honest_unknowns(tmp_path):
    log = write_report(FIXTURES / "seed000_exp2.json", tmp_path / "log.md").read_text()
    assert "| data.sample_ratio | 0.25 | 1 | ❌ |" in log
    assert "| mt_bench_ru · average ↑ | 2.0357 | 1.4924 | -0.5433 (-26.7%) | unknown | 80 | ⚠️ CI unknown" in log
    assert "✅" not in log.split("## Results")[1].split("## ")[0]  # no unknown interval is called a success


def test_source_notes_in_the_data_manifest(tmp_path):
    """Every shape the data stage writes renders: a hub source named by branch, a file edited after
    `dvc add`, a file inside a pipeline output (dvc.lock entry, no `matches`)."""
    rec = json.loads((FIXTURES / "quickstart_like.json").read_text())
    rec["data"]["sources"] = [
        {"source": "hf:org/set", "revision": "main", "resolved_revision": "a" * 40, "pin": "not pinned in spec"},
        {"source": "data/edited.jsonl", "sha256": "b" * 64, "dvc": {"file": "data/edited.jsonl.dvc", "path": "data/edited.jsonl", "md5": "c" * 32, "matches": False}},
        {"source": "data/tiny/x.jsonl", "sha256": "d" * 64, "dvc": {"file": "dvc.lock", "stage": "pretrain-tiny", "path": "data/tiny", "md5": "e" * 32}},
    ]
    path = tmp_path / "record.json"
    path.write_text(json.dumps(rec))
    log = write_report(path, tmp_path / "log.md").read_text()
    assert "(from 'main', not pinned in spec)" in log and "(differs from data/edited.jsonl.dvc)" in log
    assert "| data/tiny/x.jsonl |" in log


HOSTILE = "{{ 7*7 }} {% raw %} <script>alert(1)</script> a|b\nsecond line ``` end"


def hostile_record(tmp_path: Path) -> Path:
    rec = json.loads((FIXTURES / "quickstart_like.json").read_text())
    rec.update(experiment="../../etc/evil {{ 7*7 }}", title=HOSTILE, notes=[HOSTILE],
               planned={"x|y": HOSTILE}, actual={"x|y": "1"}, environment={"gpu": HOSTILE})
    rec["samples"][0]["output"] = HOSTILE
    rec["samples"][0]["prompt"] = HOSTILE
    for m in rec["metrics"]:
        if m["task"] == "tiny_facts_city":
            m["task"] = "city|<b>{{ 7*7 }}</b>"
    path = tmp_path / "record.json"
    path.write_text(json.dumps(rec))
    return path


def test_hostile_text_renders_literally_and_escaped(tmp_path):
    log = write_report(hostile_record(tmp_path), tmp_path / "out" / "log.md").read_text()
    assert "{{ 7\\*7 }} {% raw %} &lt;script&gt;alert(1)&lt;/script&gt; a\\|b<br>second line \\`\\`\\` end" in log
    outside_fences = "".join(part for i, part in enumerate(log.split("````")) if i % 2 == 0)
    assert "<script>" not in outside_fences
    assert "````text\n" + HOSTILE + "\n````" in log  # the raw output, in a fence it cannot close
    assert "| x\\|y |" in log
    assert "city\\|&lt;b&gt;{{ 7\\*7 }}&lt;/b&gt; · acc" in log
    # every table row keeps its column count: escaped pipes do not split cells
    for table in log.split("\n\n"):
        rows = [r for r in table.splitlines() if r.startswith("|")]
        widths = {r.replace("\\|", "").count("|") for r in rows}
        assert len(widths) <= 1, table
    # the experiment name cannot steer where plots are written
    assert (tmp_path / "out" / "plots" / safe_name("../../etc/evil {{ 7*7 }}")).is_dir()
    assert not (tmp_path / "etc").exists()


def test_safe_name():
    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("quick-start_1.2") == "quick-start_1.2"
    assert safe_name("...") == "experiment"


def test_import_does_not_load_torch(root):
    code = "import tunebook.reports.render, tunebook.reports.review, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


def test_free_form_fields_of_the_wrong_type_do_not_crash(tmp_path):
    rec = json.loads((FIXTURES / "quickstart_like.json").read_text())
    rec["expect"] = {"target_gain": "high"}
    for m in rec["metrics"]:
        m["extra"] = {"extraction_failure_rate": "n/a", "extraction_failures": "many", "position_consistency": "x"}
    path = tmp_path / "record.json"
    path.write_text(json.dumps(rec))
    log = write_report(path, tmp_path / "log.md").read_text()
    assert "regressed past fail (-0.05)" in log  # no thresholds: the documented defaults
