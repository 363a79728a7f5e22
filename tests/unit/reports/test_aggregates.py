"""The forgetting table's aggregate, its direction convention, unpaired rows and the manifest lines
(issue 13, items 10, 11, 12, 23)."""

from __future__ import annotations

import pytest

from tunebook.reports.compute import compute, data_manifest, forgetting_table
from tunebook.reports.markdown import render
from tunebook.reports.plots import write_plot_data
from tunebook.reports.render import report_context

from .conftest import binary, make, metric


def _suite():
    arc_old, arc_new = binary(200, 150, flip=10)
    hs_old, hs_new = binary(300, 180, flip=6)
    return make(metrics=[
        metric("arc", "base", 0.75, samples=arc_old), metric("arc", "final", 0.70, samples=arc_new),
        metric("hs", "base", 0.6, samples=hs_old), metric("hs", "final", 0.58, samples=hs_new),
        # MT-Bench points and a perplexity: other units, never averaged with accuracies
        metric("mt", "base", 6.0, metric="score", n=80, stderr=0.1), metric("mt", "final", 5.5, metric="score", n=80, stderr=0.1),
        metric("wiki", "base", 10.0, metric="ppl", higher_is_better=False, stderr=0.1),
        metric("wiki", "final", 11.0, metric="ppl", higher_is_better=False, stderr=0.1),
        # a 16-question subset beside its full set
        metric("mmlu", "base", 0.50, n=16, stderr=0.12), metric("mmlu", "final", 0.75, n=16, stderr=0.11),
        metric("mmlu", "base", 0.50, n=1000, stderr=0.016), metric("mmlu", "final", 0.49, n=1000, stderr=0.016),
    ])


def test_mean_averages_like_with_like_with_an_interval_item10():
    rec = _suite()
    table = forgetting_table(rec, compute(rec))
    assert table["averaged"] == ["arc · acc", "hs · acc", "mmlu · acc (n=1000)"]
    assert "mt · score" in table["left_out"] and "wiki · ppl" in table["left_out"] and "mmlu · acc (n=16)" in table["left_out"]
    mean = table["rows"][-1]["mean"]
    assert mean.delta == pytest.approx((-0.05 - 0.02 - 0.01) / 3)
    rows = {r.label: r for r in compute(rec).results}
    se = (rows["arc · acc"].interval.se ** 2 + rows["hs · acc"].interval.se ** 2
          + rows["mmlu · acc (n=1000)"].interval.se ** 2) ** 0.5 / 3
    assert mean.high - mean.low == pytest.approx(2 * 1.959964 * se, rel=1e-6)
    # the worst is the change furthest past its own fail threshold: the perplexity (+10 %, fail -5 %)
    assert table["rows"][-1]["worst"] == "wiki · ppl"


def test_one_direction_in_table_and_csv_item11(tmp_path):
    rec = _suite()
    c = compute(rec)
    write_plot_data(rec, c, tmp_path)
    header, *rows = (tmp_path / "general.csv").read_text().splitlines()
    final = dict(zip(header.split(","), rows[-1].split(",")))
    assert float(final["wiki"]) == pytest.approx(-1.0)  # perplexity up by 1: worse, so negative, like an accuracy drop
    table = forgetting_table(rec, c)
    cell = next(x for x in table["rows"][-1]["cells"] if x and x["task"] == "wiki")
    assert cell["gain"] == pytest.approx(-1.0)
    log = render("experiment.md.j2", **report_context(rec, c, [], []))
    assert "in the better direction: positive is better, negative is forgetting" in log


def test_unpaired_rows_say_why_item12():
    old, new = binary(100, 80, flip=20)
    rec = make(metrics=[metric("arc", "base", 0.8, samples=old), metric("arc", "final", 0.6, samples=new[1:])])
    row = compute(rec).results[0]
    assert not row.interval.paired and "100 items at base, 99 at final" in row.interval.note
    log = render("experiment.md.j2", **report_context(rec, compute(rec), [], []))
    assert "unpaired: 100 items at base, 99 at final, no item ids to align them" in log


def test_converted_rows_get_their_own_line_item23():
    rec = make(data={"rejected_rows": 3, "converted_rows": 5, "quarantine": "q.jsonl", "sha256": "ab" * 32})
    log = render("experiment.md.j2", **report_context(rec, compute(rec), [], []))
    assert "- rejected rows: 3 (kept in q.jsonl)\n- rows kept after converting a value to the expected type: 5\n- prepared" in log
    plain = make(data={"rejected_rows": 3, "sha256": "ab" * 32})
    text = render("experiment.md.j2", **report_context(plain, compute(plain), [], []))
    assert "- rejected rows: 3\n- prepared data sha256" in text
    assert data_manifest(rec)["converted_rows"] == 5
