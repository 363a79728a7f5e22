"""Per-checkpoint plots: SVG charts for the markdown log, and the CSVs that DVC plots.

The charts are written by reports/svg.py (plain SVG text: deterministic, diffable, milliseconds to
make, no plotting library imported). A chart whose bytes would not change is not rewritten. The CSVs
hold one column per task (its primary metric) and one row per checkpoint, base included at step 0, so
`dvc plots show` and `dvc plots diff` can compare variants; the compiler declares them in dvc.yaml
(compiler/compile.report_plots) with the task names as columns.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import polars.selectors as cs

from tunebook.reports.compute import Computed
from tunebook.reports.markdown import visible
from tunebook.files import write_atomic
from tunebook.reports.record import Record
from tunebook.reports.status import Thresholds
from tunebook.reports.svg import HLine, Line, line_chart


def _by_series(curves: pl.DataFrame, suite: str, column: str, metric: str | None = None) -> list[Line]:
    """One line per primary series of `suite` (of `metric` only, when given) with two points or more."""
    rows = curves.filter((pl.col("suite") == suite) & pl.col("primary") & pl.col("step").is_not_null()
                         & pl.col(column).is_not_null())
    if metric is not None:
        rows = rows.filter(pl.col("metric") == metric)
    out = []
    for (label,), part in rows.sort("label", "step").group_by("label", maintain_order=True):
        if part.height >= 2:
            out.append(Line(label, part["step"].to_list(), part[column].to_list()))
    return out


def plan_plots(record: Record, computed: Computed) -> list[tuple[str, str, str]]:
    """(title in the log, file name, SVG) for what the record has enough points for."""
    planned = []
    general = _by_series(computed.curves, "general", "gain")  # better direction: the thresholds' convention
    if general:
        t = _common_thresholds(computed)
        refs = [HLine(level, f"{name} {level:+g}", style, "#808080", 1.0)
                for name, level, style in (("warn", t.warn, ":"), ("fail", t.fail, "--")) if level is not None]
        planned.append(("General suite (forgetting) by checkpoint", "general.svg",
                        line_chart("General suite: change vs base (better direction)", "change vs base, + = better",
                                   general, [*refs, HLine(0.0)])))
    target = _by_series(computed.curves, "target", "value")
    if target:
        planned.append(("Target tasks by checkpoint", "target.svg", line_chart("Target tasks", "value", target)))
    history = sorted(record.training.history, key=lambda h: h.step) if record.training else []
    losses = sorted({k for h in history for k in h.values if "loss" in k})
    validation = _by_series(computed.curves, "loss", "value", "loss")
    if (len(history) >= 2 and losses) or validation:
        lines = []
        for k in losses:
            pts = [(h.step, h.values[k]) for h in history if k in h.values]
            lines.append(Line(f"training {k}", [p[0] for p in pts], [p[1] for p in pts], markers=False))
        planned.append(("Loss during training and per checkpoint", "loss.svg", line_chart("Loss", "loss", lines + validation)))
    # perplexity is exp(loss): on the loss axis one bad checkpoint (50,889) flattens every loss curve,
    # so it gets its own chart, on a log axis
    perplexity = _by_series(computed.curves, "loss", "value", "perplexity")
    if perplexity:
        planned.append(("Held-out perplexity per checkpoint", "perplexity.svg",
                        line_chart("Perplexity", "perplexity (log scale)", perplexity, log_y=True)))
    return planned


def _common_thresholds(computed: Computed) -> Thresholds:
    """The warn/fail lines, drawn only when every general series has the same ones (one set of units)."""
    found = {(r.thresholds.warn, r.thresholds.fail) for r in computed.suite("general")}
    return Thresholds(*found.pop()) if len(found) == 1 else Thresholds()


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
    """One column per task of `suite`, one row per checkpoint. Every task measured keeps its column, empty
    where it has no value (no baseline, so no change): dvc.yaml names each task's column, and `dvc plots
    show` drops the whole plot when one of them is missing."""
    rows = curves.filter(pl.col("suite") == suite)
    if rows.filter(pl.col(column).is_not_null()).is_empty():
        return None
    # one metric per task: its primary one (the first by name if several are)
    primary = rows.filter(pl.col("primary")).group_by("task").agg(pl.col("series").min())
    rows = rows.join(primary, on=["task", "series"], how="semi")
    wide = rows.pivot(on="task", index=["step", "checkpoint"], values=column, sort_columns=True)
    return wide.sort("step", "checkpoint", nulls_last=True).with_columns(cs.float().round(6))


def plot_tables(record: Record, computed: Computed) -> dict[str, str]:
    """name -> CSV text: general.csv (change vs base), target.csv (values), training.csv (history)."""
    tables = {"general.csv": _by_task(computed.curves, "general", "gain"),
              "target.csv": _by_task(computed.curves, "target", "value")}
    if record.training and record.training.history:
        history = sorted(record.training.history, key=lambda h: h.step)
        tables["training.csv"] = pl.DataFrame([{"step": h.step, **h.values} for h in history])
    return {name: _csv_safe(df).write_csv() for name, df in tables.items() if df is not None}


def write_plot_data(record: Record, computed: Computed, out_dir: Path) -> list[Path]:
    """general.csv (change vs base), target.csv (values), training.csv (history): what exists."""
    return [write_atomic(out_dir / name, text) for name, text in plot_tables(record, computed).items()]


# A spreadsheet runs a cell that starts with one of these as a formula (`=HYPERLINK(...)`): record text
# (task and checkpoint names) is shown with a leading apostrophe instead, the OWASP advice.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "|")


def csv_text(v: str) -> str:
    v = visible(v)
    return "'" + v if v.startswith(FORMULA_START) else v


def _csv_safe(df: pl.DataFrame) -> pl.DataFrame:
    df = df.rename({c: csv_text(c) for c in df.columns if csv_text(c) != c})
    text = [c for c, t in df.schema.items() if t == pl.String]
    return df.with_columns(pl.col(c).map_elements(csv_text, return_dtype=pl.String) for c in text) if text else df
