"""Plots: deterministic SVG charts, per-checkpoint CSVs for DVC and their `plots:` definitions."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tunebook.reports.compute import compute
from tunebook.reports.plots import dvc_plots, write_plot_data, write_plots
from tunebook.reports.svg import HLine, Line, line_chart, nice_ticks, tick_label

from .conftest import make, metric


def test_charts_are_well_formed_deterministic_svg(quickstart, tmp_path):
    drawn = write_plots(quickstart, compute(quickstart), tmp_path / "a")
    again = write_plots(quickstart, compute(quickstart), tmp_path / "b")
    assert [p.name for _, p in drawn] == ["general.svg", "target.svg", "loss.svg"]
    for (_, a), (_, b) in zip(drawn, again):
        assert a.read_bytes() == b.read_bytes()
        root = ET.fromstring(a.read_text())
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
    general = drawn[0][1].read_text()
    assert "tiny_facts_color · acc" in general and "warn −0.02" not in general and "warn -0.02" in general


def test_a_report_imports_no_plotting_library(tmp_path):
    """In a fresh interpreter (other tests may have imported anything): rendering a whole log with its
    charts loads neither matplotlib nor torch."""
    record = Path(__file__).resolve().parents[2] / "fixtures" / "records" / "quickstart_like.json"
    code = ("import sys; from tunebook.reports.render import write_report; "
            f"write_report({str(record)!r}, {str(tmp_path / 'r.md')!r}); "
            "bad = [m for m in ('matplotlib', 'torch') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[3])
    assert (tmp_path / "plots" / "quickstart" / "general.svg").exists()


def test_an_unchanged_chart_keeps_its_file_and_a_changed_one_is_rewritten(quickstart, tmp_path):
    first = {p.name: p for _, p in write_plots(quickstart, compute(quickstart), tmp_path)}
    stamps = {n: p.stat().st_mtime_ns for n, p in first.items()}
    before = first["general.svg"].read_text()
    write_plots(quickstart, compute(quickstart), tmp_path)
    assert {n: p.stat().st_mtime_ns for n, p in first.items()} == stamps
    changed = quickstart.model_copy(update={"expect": {**quickstart.expect, "forgetting": {"warn": -0.5, "fail": -0.9}}})
    write_plots(changed, compute(changed), tmp_path)
    assert first["general.svg"].read_text() != before and "fail -0.9" in first["general.svg"].read_text()


def test_labels_are_escaped_never_markup():
    svg = line_chart("<script>alert(1)</script>", "y & z", [Line('a"><script>x</script>', [0, 10], [0.1, 0.2])],
                     [HLine(0.0, "{{ 7*7 }}")])
    ET.fromstring(svg)  # still well-formed
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "y &amp; z" in svg and "{{ 7*7 }}" in svg


def test_a_long_label_is_cut_in_the_legend_and_whole_in_the_tooltip():
    long = "mmlu_high_school_" + "x" * 200 + " · acc"
    svg = line_chart("t", "y", [Line(long, [0, 10], [0.1, 0.2])])
    assert f"<title>{long}</title>" in svg and "…</text>" in svg
    legend = [t for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text") if (t.text or "").endswith("…")]
    assert len(legend) == 1 and 30 + 7 * len(legend[0].text) <= 700


def test_ticks_are_round_and_cover_the_data():
    assert nice_ticks(0, 204) == [0, 50, 100, 150, 200, 250]
    assert nice_ticks(-0.15, 0) == [-0.15, -0.1, -0.05, 0]
    assert nice_ticks(0.5, 0.5)[0] <= 0.5 <= nice_ticks(0.5, 0.5)[-1]  # a flat line still gets an axis
    t = nice_ticks(-0.15, 0)
    assert [tick_label(v, t) for v in t] == ["\u22120.15", "\u22120.10", "\u22120.05", "0"]
    t = nice_ticks(0, 2.4)
    assert [tick_label(v, t) for v in t] == ["0", "0.5", "1.0", "1.5", "2.0", "2.5"]
    flat = line_chart("t", "y", [Line("nan", [0, 1, 2], [float("nan"), 1.0, 1.0])])
    ET.fromstring(flat)


def test_only_what_has_two_points_on_the_step_axis_is_drawn(tmp_path):
    with_step = make(metrics=[metric("t", "base", 0.5), metric("t", "final", 0.6, step=10)])
    assert [p.name for _, p in write_plots(with_step, compute(with_step), tmp_path)] == ["general.svg"]
    no_step = make(metrics=[metric("t", "base", 0.5), metric("t", "final", 0.6)])  # hand-written: no steps
    assert write_plots(no_step, compute(no_step), tmp_path / "none") == []


def test_csvs_have_one_column_per_task_and_base_at_step_zero(quickstart, tmp_path):
    written = write_plot_data(quickstart, compute(quickstart), tmp_path)
    assert [p.name for p in written] == ["general.csv", "target.csv", "training.csv"]
    general = (tmp_path / "general.csv").read_text().splitlines()
    assert general[0] == "step,checkpoint,tiny_facts_city,tiny_facts_color"
    assert general[1] == "0,base,0.0,0.0" and general[-1] == "204,final,-0.016667,-0.15"
    assert (tmp_path / "training.csv").read_text().startswith("step,grad_norm,learning_rate,loss\n10,")


def test_dvc_plot_definitions_point_at_the_csvs():
    plots = dvc_plots("quickstart", ["tiny_facts_color", "tiny_facts_city"], ["subtraction"])
    assert [next(iter(p)) for p in plots] == ["forgetting-quickstart", "target-quickstart", "training-quickstart"]
    forgetting = plots[0]["forgetting-quickstart"]
    assert forgetting["x"] == "step"
    assert forgetting["y"] == {"logs/plots/quickstart/general.csv": ["tiny_facts_city", "tiny_facts_color"]}
    assert [next(iter(p)) for p in dvc_plots("x", [], [])] == ["training-x"]
