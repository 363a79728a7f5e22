"""Plots: deterministic SVG charts, per-checkpoint CSVs for DVC and their `plots:` definitions."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tunebook.reports.compute import compute
from tunebook.reports.plots import plan_plots, write_plot_data, write_plots
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


def test_dvc_plots_show_draws_every_task_of_the_forgetting_curve(quickstart, tmp_path):
    """Issue 12: `dvc plots show` drew only the last CSV column, so the forgetting curve never appeared.
    The compiled definitions list the columns the report writes, and real DVC draws each of them."""
    import shutil

    import yaml

    from tests.conftest import ROOT
    from tunebook.compiler import compile_specs, load_specs

    pipeline = compile_specs(load_specs([ROOT / "specs" / "quickstart.yaml"], ROOT))
    plots = {k: v for p in pipeline.plots for k, v in p.items()}
    forgetting = plots["forgetting-quickstart"]
    assert forgetting["y"] == {"logs/plots/quickstart/general.csv": ["tiny_facts_city", "tiny_facts_color"]}
    assert plots["target-quickstart"]["y"] == {"logs/plots/quickstart/target.csv": ["subtraction"]}
    assert not any("plots" in st.to_dvc() for st in pipeline.stages)  # no stage-level plot of one column

    project = tmp_path / "p"
    write_plot_data(quickstart, compute(quickstart), project / "logs" / "plots" / "quickstart")
    header = (project / "logs/plots/quickstart/general.csv").read_text().splitlines()[0].split(",")
    assert set(forgetting["y"]["logs/plots/quickstart/general.csv"]) <= set(header)
    (project / "dvc.yaml").write_text(yaml.safe_dump({"plots": [{"forgetting-quickstart": forgetting}]}))
    dvc = str(Path(sys.executable).with_name("dvc")) if Path(sys.executable).with_name("dvc").exists() else shutil.which("dvc")
    env = {"DVC_NO_ANALYTICS": "1", "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run(["git", "init", "-q"], cwd=project, check=True, env=env)
    subprocess.run([dvc, "init", "-q"], cwd=project, check=True, env=env)
    shown = subprocess.run([dvc, "plots", "show", "--json"], cwd=project, check=True, env=env, capture_output=True, text=True)
    import json

    [plot] = json.loads(shown.stdout)["data"]["forgetting-quickstart"]
    drawn = {row["field"] for row in plot["content"]["data"]["values"]}
    assert drawn == {"tiny_facts_city", "tiny_facts_color"}


def test_one_primary_metric_per_task_in_charts_and_csvs(tmp_path):
    """acc_norm beside acc doubled every line and badge; the task's flagged primary metric stands for it."""
    metrics = []
    for name, primary in (("acc", True), ("acc_norm", False)):
        metrics += [metric("arc", ck, v, metric=name, step=s, extra={"primary": primary})
                    for ck, s, v in (("base", 0, 0.5), ("c10", 10, 0.45), ("final", 20, 0.4))]
    record = make(metrics=metrics)
    computed = compute(record)
    assert [r.label for r in computed.results] == ["arc · acc"]
    assert [r.label for r in computed.details] == ["arc · acc_norm"]
    [(_, name, svg)] = plan_plots(record, computed)
    assert name == "general.svg" and "arc · acc<" in svg and "acc_norm" not in svg
    write_plot_data(record, computed, tmp_path)
    assert (tmp_path / "general.csv").read_text().splitlines()[-1] == "20,final,-0.1"


def test_a_task_without_a_baseline_keeps_its_csv_column(tmp_path):
    """dvc.yaml names every general task's column; one missing column and `dvc plots show` drops the plot."""
    record = make(metrics=[metric("a", "base", 0.5, step=0), metric("a", "final", 0.4, step=20),
                           metric("b", "c10", 0.7, step=10), metric("b", "final", 0.6, step=20)])
    write_plot_data(record, compute(record), tmp_path)
    lines = (tmp_path / "general.csv").read_text().splitlines()
    assert lines[0] == "step,checkpoint,a,b" and lines[-1] == "20,final,-0.1,"


def test_loss_and_perplexity_get_their_own_axes():
    """A perplexity of 50,889 on the loss axis flattened every loss curve."""
    metrics = []
    for ck, s, loss in (("base", 0, 10.84), ("c10", 10, 2.0), ("final", 20, 1.5)):
        metrics += [metric("validation", ck, loss, suite="loss", metric="loss", step=s, higher_is_better=False),
                    metric("validation", ck, 2.718281828 ** loss, suite="loss", metric="perplexity", step=s,
                           higher_is_better=False)]
    hist = [{"step": s, "values": {"loss": 3.0 - s / 10}} for s in (2, 10, 20)]
    record = make(metrics=metrics, training={"history": hist})
    charts = {name: svg for _, name, svg in plan_plots(record, compute(record))}
    assert sorted(charts) == ["loss.svg", "perplexity.svg"]
    assert "perplexity" not in charts["loss.svg"] and "validation · loss" in charts["loss.svg"]
    ET.fromstring(charts["perplexity.svg"])
    # a log axis: decades from 1 to 100,000, not 0 to 60,000 in steps of 10,000
    labels = [t.text for t in ET.fromstring(charts["perplexity.svg"]).iter("{http://www.w3.org/2000/svg}text")]
    assert {"1", "10", "100", "1e+03", "1e+04", "1e+05"} <= set(labels)
