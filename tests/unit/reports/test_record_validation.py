"""Bad numbers in a record are validation errors naming the field, never a crash or a silent badge
(issue 13, items 1-3, 6, 17, 19)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tunebook.reports.compute import compute
from tunebook.reports.intake import load_record
from tunebook.reports.record import RecordError
from tunebook.reports.status import CAUTION

from .conftest import binary, make, metric


def _write(tmp_path, metrics, **fields):
    path = tmp_path / "record.json"
    path.write_text(json.dumps({"experiment": "old", "metrics": metrics, **fields}))  # NaN/Infinity as Python writes them
    return path


def _error(tmp_path, metrics, **fields) -> str:
    with pytest.raises(RecordError) as e:
        load_record(_write(tmp_path, metrics, **fields))
    return str(e.value)


@pytest.mark.parametrize("field, bad, says", [
    ("samples", [0.1, math.nan, 0.3], "metrics.1.samples: Value error, item 1 is not a finite number (nan)"),
    ("samples", [0.1, math.inf, 0.3], "metrics.1.samples: Value error, item 1 is not a finite number (inf)"),
    ("stderr", math.nan, "metrics.1.stderr"),
    ("stderr", -0.01, "metrics.1.stderr: Value error, a standard error is a finite number >= 0"),
    ("value", math.inf, "metrics.1.value: Value error, not a finite number (inf)"),
    ("n", 0, "metrics.1.n: Value error, n counts the items measured"),
])
def test_bad_numbers_name_the_field_items_1_2(tmp_path, field, bad, says):
    good = metric("arc", "base", 0.2, samples=[0.1, 0.2, 0.3])
    final = {**metric("arc", "final", 0.2, samples=[0.1, 0.2, 0.3]), field: bad}
    assert says in _error(tmp_path, [good, final])


def test_win_rate_written_as_a_percentage_item2(tmp_path):
    text = _error(tmp_path, [metric("ab", "final", 77, suite="judge", metric="win_rate", n=13, extra={"reference": "base"})])
    assert "metrics.0" in text and "a proportion in [0, 1]" in text and "write 0.77" in text
    assert "metrics.0.n" in _error(tmp_path, [metric("ab", "final", 0.77, suite="judge", metric="win_rate", n=0,
                                                     extra={"reference": "base"})])


def test_cli_exits_2_on_an_infinite_score_item2(tmp_path):
    path = _write(tmp_path, [metric("arc", "base", 0.5, samples=[0.0, 1.0]), metric("arc", "final", 0.5, samples=[math.inf, 0.0])])
    run = subprocess.run([sys.executable, "-m", "tunebook", "report", "--record", str(path), "-o", str(tmp_path / "log.md")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "metrics.1.samples" in run.stderr and "Traceback" not in run.stderr


def test_n_comes_from_the_samples_item3():
    old, new = [1.0] * 3 + [0.0] * 10, [1.0] * 13  # 13 aligned items, no n written
    rec = make(metrics=[metric("arc", "base", 3 / 13, samples=old), metric("arc", "final", 1.0, samples=new)])
    assert rec.metrics[0].n == 13
    row = compute(rec).results[0]
    assert row.n == 13 and row.verdict.badge == CAUTION and "n=13" in row.verdict.note


def test_samples_that_disagree_with_the_value_are_not_used_item6():
    old, new = binary(200, 100, flip=30)  # the samples say -0.15 ...
    rec = make(metrics=[metric("arc", "base", 0.5, samples=old, stderr=0.035),
                        metric("arc", "final", 0.6, samples=new, stderr=0.035)])  # ... the values say +0.1
    row = compute(rec).results[0]
    assert row.interval.low < 0.1 < row.interval.high and not row.interval.paired
    assert "per-item scores not used" in row.interval.note and "average 0.35, not the value 0.6" in row.interval.note
    # a value rounded to its printed digits still matches its samples
    rounded = make(metrics=[metric("arc", "base", 0.77, samples=[1.0] * 10 + [0.0] * 3),
                            metric("arc", "final", 0.77, samples=[1.0] * 10 + [0.0] * 3)])
    assert compute(rounded).results[0].interval.paired


def test_two_values_at_one_checkpoint_without_n_are_refused_item19(tmp_path):
    text = _error(tmp_path, [metric("mt", "final", 6.1), metric("mt", "final", 6.4)])
    assert "metrics.1" in text and "is also metrics.0" in text
    # with their n they are a subset and its full set, kept apart
    assert load_record(_write(tmp_path, [metric("mt", "final", 6.1, n=16), metric("mt", "final", 6.4, n=80)]))


def test_a_sample_without_its_prompt_and_a_stderr_without_baseline_item19(tmp_path):
    rec = make(metrics=[metric("gsm8k", "final", 0.4, suite="target", stderr=0.02, n=600)],
               samples=[{"task": "gsm8k", "checkpoint": "final", "output": "42"}])
    assert rec.samples[0].prompt is None
    row = compute(rec).results[0]
    assert row.own is not None and row.own.low == pytest.approx(0.4 - 1.959964 * 0.02)
    from tunebook.reports.render import write_report

    path = tmp_path / "r.json"
    path.write_text(rec.model_dump_json())
    log = write_report(path, tmp_path / "log.md").read_text()
    assert "value [+0.3608, +0.4392] from its stderr" in log and "prompt: — · target" in log


def test_win_rate_also_recorded_at_base_uses_wilson_item17():
    rec = make(metrics=[metric("ab", "base", 0.5, suite="judge", metric="win_rate", n=13, extra={"reference": "base"}),
                        metric("ab", "final", 10 / 13, suite="judge", metric="win_rate", n=13, extra={"reference": "base"})])
    row = compute(rec).results[0]
    assert row.reference == "parity" and row.interval.method == "Wilson" and row.interval.known


def test_a_result_known_only_as_a_change_or_an_aggregate_item19(tmp_path):
    rec = make(changes=[
        {"task": "general average", "metric": "acc", "delta": -0.021, "stderr": 0.004, "n": 5000, "proportion": True,
         "members": ["arc", "hellaswag"], "worst": {"task": "arc", "delta": -0.06}},
        {"task": "mt_bench", "metric": "score", "delta": -0.08, "relative": True, "stderr": 0.01}])
    c = compute(rec)
    avg, mt = c.changes
    assert avg.verdict.label == "mild regression" and avg.interval.method == "normal"
    assert mt.verdict.badge == "❌" and mt.thresholds.fail == pytest.approx(-0.05)  # -5 % of the baseline
    from tunebook.reports.rules import run_rule

    found = run_rule("catastrophic_forgetting", rec, c)
    assert "mt_bench · score (relative)" in found.title and "arc (in general average · acc)" in found.title
    assert "point estimate only" in found.evidence["arc (worst member of general average · acc)"]
    from tunebook.reports.render import write_report

    path = tmp_path / "r.json"
    path.write_text(rec.model_dump_json())
    log = write_report(path, tmp_path / "log.md").read_text()
    assert "### Changes recorded without their values" in log
    assert "| general · general average · acc ↑ | -0.0210 |" in log and "arc, hellaswag; worst arc -0.0600" in log
    with pytest.raises(Exception, match="changes.0.delta"):
        make(changes=[{"task": "x", "metric": "acc", "delta": math.nan}])
