"""Plots: deterministic PNGs, per-checkpoint CSVs for DVC and their `plots:` definitions."""

from __future__ import annotations

from reports.compute import compute
from reports.plots import KEY, dvc_plots, png_text, write_plot_data, write_plots

from .conftest import make, metric


def test_pngs_carry_no_software_or_date_metadata(quickstart, tmp_path):
    drawn = write_plots(quickstart, compute(quickstart), tmp_path)
    assert [p.name for _, p in drawn] == ["general.png", "target.png", "loss.png"]
    for _, path in drawn:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG") and b"matplotlib" not in data and b"tIME" not in data


def test_an_unchanged_plot_is_not_redrawn_and_a_changed_one_is(quickstart, tmp_path):
    computed = compute(quickstart)
    first = {p.name: p for _, p in write_plots(quickstart, computed, tmp_path)}
    digests = {n: png_text(p, KEY) for n, p in first.items()}
    assert all(d and len(d) == 64 for d in digests.values())
    stamps = {n: p.stat().st_mtime_ns for n, p in first.items()}
    (tmp_path / "target.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # damaged: no digest, so redrawn
    write_plots(quickstart, computed, tmp_path)
    assert first["general.png"].stat().st_mtime_ns == stamps["general.png"]  # untouched
    assert png_text(first["target.png"], KEY) == digests["target.png"]
    changed = quickstart.model_copy(update={"expect": {**quickstart.expect, "forgetting": {"warn": -0.5, "fail": -0.9}}})
    write_plots(changed, compute(changed), tmp_path)
    assert png_text(first["general.png"], KEY) != digests["general.png"]  # thresholds moved: redrawn


def test_only_what_has_two_points_on_the_step_axis_is_drawn(tmp_path):
    with_step = make(metrics=[metric("t", "base", 0.5), metric("t", "final", 0.6, step=10)])
    assert [p.name for _, p in write_plots(with_step, compute(with_step), tmp_path)] == ["general.png"]
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
    assert forgetting["y"] == {"reports/plots/quickstart/general.csv": ["tiny_facts_city", "tiny_facts_color"]}
    assert [next(iter(p)) for p in dvc_plots("x", [], [])] == ["training-x"]
