"""Per-checkpoint plots: SVG charts for the markdown log, CSVs and `plots:` definitions for DVC.

The charts are written by reports/svg.py (plain SVG text: deterministic, diffable, milliseconds to
make, no plotting library imported). A chart whose bytes would not change is not rewritten. The CSVs
hold one column per task (its first metric in alphabetical order) and one row per checkpoint, base
included at step 0, so `dvc plots show` and `dvc plots diff` can compare variants.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import polars.selectors as cs

from tunebook.reports.compute import Computed
from tunebook.reports.markdown import write_atomic
from tunebook.reports.record import Record
from tunebook.reports.status import Thresholds
from tunebook.reports.svg import HLine, Line, line_chart


def _by_series(curves: pl.DataFrame, suite: str, column: str) -> list[Line]:
    rows = curves.filter((pl.col("suite") == suite) & pl.col("step").is_not_null() & pl.col(column).is_not_null())
    out = []
    for (label,), part in rows.sort("label", "step").group_by("label", maintain_order=True):
        if part.height >= 2:
            out.append(Line(label, part["step"].to_list(), part[column].to_list()))
    return out


def plan_plots(record: Record, computed: Computed) -> list[tuple[str, str, str]]:
    """(title in the log, file name, SVG) for what the record has enough points for."""
    planned = []
    general = _by_series(computed.curves, "general", "delta")
    if general:
        t = Thresholds.for_suite("general", record.expect)
        refs = [HLine(level, f"{name} {level:+g}", style, "#808080", 1.0)
                for name, level, style in (("warn", t.warn, ":"), ("fail", t.fail, "--")) if level is not None]
        planned.append(("General suite (forgetting) by checkpoint", "general.svg",
                        line_chart("General suite: change vs base", "change vs base", general, [*refs, HLine(0.0)])))
    target = _by_series(computed.curves, "target", "value")
    if target:
        planned.append(("Target tasks by checkpoint", "target.svg", line_chart("Target tasks", "value", target)))
    history = sorted(record.training.history, key=lambda h: h.step) if record.training else []
    losses = sorted({k for h in history for k in h.values if "loss" in k})
    validation = _by_series(computed.curves, "loss", "value")
    if (len(history) >= 2 and losses) or validation:
        lines = []
        for k in losses:
            pts = [(h.step, h.values[k]) for h in history if k in h.values]
            lines.append(Line(f"training {k}", [p[0] for p in pts], [p[1] for p in pts], markers=False))
        planned.append(("Loss during training and per checkpoint", "loss.svg", line_chart("Loss", "loss", lines + validation)))
    return planned


def write_plots(record: Record, computed: Computed, out_dir: Path) -> list[tuple[str, Path]]:
    """Write what the record has enough points for; returns (title, path) pairs in a fixed order.
    An unchanged chart keeps its file (and mtime)."""
    drawn = []
    for title, name, svg in plan_plots(record, computed):
        path = out_dir / name
        data = svg.encode()
        if not path.is_file() or path.read_bytes() != data:
            write_atomic(path, data)
        drawn.append((title, path))
    return drawn


# ---------------------------------------------------------------------------------------------------
# data for DVC


def _by_task(curves: pl.DataFrame, suite: str, column: str) -> pl.DataFrame | None:
    rows = curves.filter((pl.col("suite") == suite) & pl.col(column).is_not_null())
    if rows.is_empty():
        return None
    primary = rows.group_by("task").agg(pl.col("series").min())  # one metric per task: the first by name
    rows = rows.join(primary, on=["task", "series"], how="semi")
    wide = rows.pivot(on="task", index=["step", "checkpoint"], values=column, sort_columns=True)
    return wide.sort("step", "checkpoint", nulls_last=True).with_columns(cs.float().round(6))


def write_plot_data(record: Record, computed: Computed, out_dir: Path) -> list[Path]:
    """general.csv (change vs base), target.csv (values), training.csv (history): what exists."""
    tables = {"general.csv": _by_task(computed.curves, "general", "delta"),
              "target.csv": _by_task(computed.curves, "target", "value")}
    if record.training and record.training.history:
        history = sorted(record.training.history, key=lambda h: h.step)
        tables["training.csv"] = pl.DataFrame([{"step": h.step, **h.values} for h in history])
    written = []
    for name, df in tables.items():
        if df is not None:
            written.append(write_atomic(out_dir / name, df.write_csv()))
    return written


def dvc_plots(experiment: str, general_tasks: list[str], target_tasks: list[str],
              reports_dir: str = "logs") -> list[dict]:
    """Top-level `plots:` entries for dvc.yaml, reading the CSVs `write_report` writes.

    The compiler knows the tasks from the spec; the CSV columns are the task names. The CSVs sit
    with the PNGs in `<reports_dir>/plots/<experiment>/`, an output of the report stage.
    """
    data = f"{reports_dir}/plots/{experiment}"
    plots = []
    if general_tasks:
        plots.append({f"forgetting-{experiment}": {
            "template": "linear", "x": "step", "y": {f"{data}/general.csv": sorted(general_tasks)},
            "title": f"{experiment}: general suite, change vs base", "x_label": "step", "y_label": "change vs base"}})
    if target_tasks:
        plots.append({f"target-{experiment}": {
            "template": "linear", "x": "step", "y": {f"{data}/target.csv": sorted(target_tasks)},
            "title": f"{experiment}: target tasks", "x_label": "step", "y_label": "value"}})
    plots.append({f"training-{experiment}": {
        "template": "linear", "x": "step", "y": {f"{data}/training.csv": "loss"},
        "title": f"{experiment}: training loss", "x_label": "step", "y_label": "loss"}})
    return plots
