"""Per-checkpoint plots: PNGs for the markdown log, CSVs and `plots:` definitions for DVC.

PNGs are deterministic (fixed size and dpi, no software or date metadata), drawn with matplotlib's
object API on the Agg canvas, so no global pyplot state is touched. Each PNG carries the digest of
what it shows (a tEXt chunk), so an unchanged plot is not redrawn. The CSVs hold one column per task
(its first metric in alphabetical order) and one row per checkpoint, base included at step 0, so
`dvc plots show` and `dvc plots diff` can compare variants.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
import polars.selectors as cs

from reports.compute import Computed
from reports.markdown import write_atomic
from reports.record import Record
from reports.status import Thresholds

SIZE = (7.0, 3.6)
DPI = 100
STYLE = 1  # bump when the drawing code changes, so every plot is redrawn once
KEY = "tunebook-plot"  # PNG text chunk holding the digest of what the plot shows


@dataclass
class Plot:
    """What one figure shows, as plain data: drawn only when it differs from the PNG on disk."""
    title: str
    ylabel: str
    lines: list[dict] = field(default_factory=list)  # {"label", "x", "y", "marker"}
    hlines: list[dict] = field(default_factory=list)  # {"y", "label", "style", "color", "width"}

    def digest(self) -> str:
        blob = json.dumps({"style": STYLE, "size": SIZE, "dpi": DPI, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def png_text(path: Path, key: str) -> str | None:
    """The tEXt chunk `key` of a PNG, read without matplotlib; None if absent or unreadable."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"tEXt":
            name, _, value = data[pos + 8:pos + 8 + length].partition(b"\0")
            if name.decode("latin-1") == key:
                return value.decode("latin-1")
        if kind in (b"IDAT", b"IEND"):  # matplotlib writes text chunks before the image data
            return None
        pos += 12 + length
    return None


def _draw(plot: Plot, path: Path, digest: str) -> Path:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported only when a plot changed
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(plot.title)
    ax.set_xlabel("step")
    ax.set_ylabel(plot.ylabel)
    ax.grid(alpha=0.3)
    for line in plot.lines:
        ax.plot(line["x"], line["y"], marker=line["marker"], label=line["label"])
    for h in plot.hlines:
        ax.axhline(h["y"], color=h["color"], linestyle=h["style"], linewidth=h["width"], label=h["label"])
    if any(x["label"] for x in plot.lines + plot.hlines):
        ax.legend(fontsize="small")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None, KEY: digest})
    return write_atomic(path, buf.getvalue())


def _by_series(curves: pl.DataFrame, suite: str, column: str) -> list[tuple[str, list[int], list[float]]]:
    rows = curves.filter((pl.col("suite") == suite) & pl.col("step").is_not_null() & pl.col(column).is_not_null())
    out = []
    for (label,), part in rows.sort("label", "step").group_by("label", maintain_order=True):
        if part.height >= 2:
            out.append((label, part["step"].to_list(), part[column].to_list()))
    return out


def plan_plots(record: Record, computed: Computed) -> list[tuple[str, str, Plot]]:
    """(title in the log, file name, what to draw) for what the record has enough points for."""
    planned = []
    general = _by_series(computed.curves, "general", "delta")
    if general:
        plot = Plot("General suite: change vs base", "change vs base",
                    [{"label": label, "x": x, "y": y, "marker": "o"} for label, x, y in general])
        t = Thresholds.for_suite("general", record.expect)
        for name, level, style in (("warn", t.warn, ":"), ("fail", t.fail, "--")):
            if level is not None:
                plot.hlines.append({"y": level, "label": f"{name} {level:+g}", "style": style, "color": "grey", "width": 1})
        plot.hlines.append({"y": 0, "label": None, "style": "-", "color": "black", "width": 0.8})
        planned.append(("General suite (forgetting) by checkpoint", "general.png", plot))
    target = _by_series(computed.curves, "target", "value")
    if target:
        planned.append(("Target tasks by checkpoint", "target.png", Plot(
            "Target tasks", "value", [{"label": label, "x": x, "y": y, "marker": "o"} for label, x, y in target])))
    history = sorted(record.training.history, key=lambda h: h.step) if record.training else []
    losses = sorted({k for h in history for k in h.values if "loss" in k})
    validation = _by_series(computed.curves, "loss", "value")
    if (len(history) >= 2 and losses) or validation:
        plot = Plot("Loss", "loss")
        for k in losses:
            pts = [(h.step, h.values[k]) for h in history if k in h.values]
            plot.lines.append({"label": f"training {k}", "x": [p[0] for p in pts], "y": [p[1] for p in pts], "marker": None})
        plot.lines += [{"label": label, "x": x, "y": y, "marker": "o"} for label, x, y in validation]
        planned.append(("Loss during training and per checkpoint", "loss.png", plot))
    return planned


def write_plots(record: Record, computed: Computed, out_dir: Path) -> list[tuple[str, Path]]:
    """Draw what the record has enough points for; returns (title, path) pairs in a fixed order.

    A PNG whose embedded digest matches what it would show now is kept as it is: re-rendering an
    unchanged record (every `dvc repro` of the report stage, `tunebook report`) does not even import
    matplotlib."""
    drawn = []
    for title, name, plot in plan_plots(record, computed):
        path, digest = out_dir / name, plot.digest()
        if png_text(path, KEY) != digest:
            _draw(plot, path, digest)
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
