"""Per-checkpoint plots: PNGs for the markdown log, CSVs and `plots:` definitions for DVC.

PNGs are deterministic (fixed size and dpi, no software or date metadata), drawn with matplotlib's
object API on the Agg canvas, so no global pyplot state is touched. The CSVs hold one column per task
(its first metric in alphabetical order) and one row per checkpoint, base included at step 0, so
`dvc plots show` and `dvc plots diff` can compare variants.
"""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import polars.selectors as cs
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reports.compute import Computed
from reports.markdown import write_atomic
from reports.record import Record
from reports.status import Thresholds

SIZE = (7.0, 3.6)
DPI = 100


def _figure(title: str, ylabel: str) -> tuple[Figure, object]:
    fig = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return write_atomic(path, buf.getvalue())


def _by_series(curves: pl.DataFrame, suite: str, column: str) -> list[tuple[str, list[int], list[float]]]:
    rows = curves.filter((pl.col("suite") == suite) & pl.col("step").is_not_null() & pl.col(column).is_not_null())
    out = []
    for (label,), part in rows.sort("label", "step").group_by("label", maintain_order=True):
        if part.height >= 2:
            out.append((label, part["step"].to_list(), part[column].to_list()))
    return out


def write_plots(record: Record, computed: Computed, out_dir: Path) -> list[tuple[str, Path]]:
    """Draw what the record has enough points for; returns (title, path) pairs in a fixed order."""
    drawn = []
    general = _by_series(computed.curves, "general", "delta")
    if general:
        fig, ax = _figure("General suite: change vs base", "change vs base")
        for label, x, y in general:
            ax.plot(x, y, marker="o", label=label)
        t = Thresholds.for_suite("general", record.expect)
        for name, level, style in (("warn", t.warn, ":"), ("fail", t.fail, "--")):
            if level is not None:
                ax.axhline(level, color="grey", linestyle=style, linewidth=1, label=f"{name} {level:+g}")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.legend(fontsize="small")
        drawn.append(("General suite (forgetting) by checkpoint", _save(fig, out_dir / "general.png")))
    target = _by_series(computed.curves, "target", "value")
    if target:
        fig, ax = _figure("Target tasks", "value")
        for label, x, y in target:
            ax.plot(x, y, marker="o", label=label)
        ax.legend(fontsize="small")
        drawn.append(("Target tasks by checkpoint", _save(fig, out_dir / "target.png")))
    history = sorted(record.training.history, key=lambda h: h.step) if record.training else []
    losses = sorted({k for h in history for k in h.values if "loss" in k})
    validation = _by_series(computed.curves, "loss", "value")
    if (len(history) >= 2 and losses) or validation:
        fig, ax = _figure("Loss", "loss")
        for k in losses:
            pts = [(h.step, h.values[k]) for h in history if k in h.values]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"training {k}")
        for label, x, y in validation:
            ax.plot(x, y, marker="o", label=label)
        ax.legend(fontsize="small")
        drawn.append(("Loss during training and per checkpoint", _save(fig, out_dir / "loss.png")))
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
              reports_dir: str = "reports") -> list[dict]:
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
