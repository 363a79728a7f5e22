"""The review: one markdown across experiments, their DVC variants and the pipeline's state.

    tunebook review                   # runs/*/record.json + `dvc exp show` + `dvc status` -> logs/review.md

Sections: a status tracker (stages done, stale or pending), a comparison table with the best value
per metric marked (respecting each metric's direction), the parameters that differ between
experiments, the variants (committed, workspace and `dvc exp`: one table against each one's parent,
reports/variants.py), and a short section per experiment. DVC's JSON is parsed
tolerantly: a missing piece leaves a gap, never an exception.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunebook.reports.compute import SUITE_ORDER, Computed, ResultRow, compute_many
from tunebook.reports.intake import load_record
from tunebook.reports.markdown import render, safe_name
from tunebook.reports.record import Record, RecordError
from tunebook.reports.rules import Finding, experiment_verdict, run_rules
from tunebook.reports.status import CAUTION, IMPROVED, NOISE, REGRESSED
from tunebook.reports.variants import Variant, parse_exp_show, variants_table
from tunebook.files import write_atomic

__all__ = ["Variant", "parse_exp_show", "parse_dvc_status", "stage_summary", "review_context", "write_review"]

STAGE_KINDS = ("data", "train", "eval", "report")  # per-experiment stages, named <kind>-<exp> or <kind>@<exp>
COMPARED_SUITES = ("target", "general")
BADGE_ORDER = (REGRESSED, CAUTION, IMPROVED, NOISE)  # the tally lists the worst first
DETAIL_ITEMS = 6  # changed deps/outs listed per stage before "and N more"


# ---------------------------------------------------------------------------------------------------
# dvc status --json


@dataclass(frozen=True)
class StageState:
    stage: str
    kind: str
    experiment: str | None  # None for shared stages (pre-training, baselines)
    state: str  # "stale", "pending" or "always runs"
    detail: str


def _changes(changes: Any) -> tuple[str, list[str]]:
    stale, missing, notes = [], [], []
    for c in changes if isinstance(changes, list) else [changes]:
        if c == "always changed":
            notes.append("always changed")
        elif isinstance(c, str):
            stale.append(c)
        elif isinstance(c, dict):
            for what, items in c.items():
                for path, how in (items.items() if isinstance(items, dict) else [(str(items), "")]):
                    if isinstance(how, dict):  # params: {"params.yaml": {"key": "modified"}}
                        stale.extend(f"param {k} {v}" for k, v in how.items())
                    elif what == "changed outs" and how in ("deleted", "not in cache"):
                        missing.append(f"{path} {how}")
                    else:
                        stale.append(f"{what.removeprefix('changed ')} {path} {how}".strip())
    if stale:
        return "stale", stale + missing
    if missing:
        return "pending", missing
    return "always runs", notes


def parse_dvc_status(status: Any) -> list[StageState]:
    """Stages that are not up to date, from parsed `dvc status --json` (an empty dict: all done)."""
    out = []
    for stage, changes in sorted(status.items()) if isinstance(status, dict) else []:
        name = str(stage).rsplit(":", 1)[-1]  # "sub/dvc.yaml:train" -> "train"
        m = re.fullmatch(rf"({'|'.join(STAGE_KINDS)})[-@](.+)", name)
        state, detail = _changes(changes)
        shown = detail[:DETAIL_ITEMS] + ([f"and {len(detail) - DETAIL_ITEMS} more"] if len(detail) > DETAIL_ITEMS else [])
        out.append(StageState(str(stage), m.group(1) if m else name, m.group(2) if m else None, state,
                              "; ".join(shown)))
    return out


def stage_summary(stages: list[StageState]) -> str:
    """'stale: data, train; pending: eval' (what the tracker's table cell shows)."""
    by_state: dict[str, list[str]] = {}
    for s in stages:
        by_state.setdefault(s.state, []).append(s.kind)
    order = {k: i for i, k in enumerate(STAGE_KINDS)}  # pipeline order: data, train, eval, report
    return "; ".join(f"{state}: {', '.join(sorted(kinds, key=lambda k: (order.get(k, len(order)), k)))}"
                     for state, kinds in sorted(by_state.items()))


# ---------------------------------------------------------------------------------------------------
# the review


@dataclass(frozen=True)
class Run:
    """One experiment as the review sees it."""

    record: Record
    computed: Computed
    findings: list[Finding]
    link: str | None  # relative link to its log, when the log exists next to the review


def _best(runs: list[Run]) -> tuple[list[tuple[str, str]], dict[tuple[int, str], bool]]:
    """Columns (series, label) to compare and which cells hold the best final value per column."""
    rank = {s: i for i, s in enumerate(SUITE_ORDER)}
    rows: dict[str, list[tuple[int, ResultRow]]] = {}
    labels: dict[str, tuple[int, str]] = {}
    for i, run in enumerate(runs):
        for r in run.computed.results:
            if r.suite in COMPARED_SUITES:
                rows.setdefault(r.series, []).append((i, r))
                labels[r.series] = (rank[r.suite], r.label)
    best: dict[tuple[int, str], bool] = {}
    for series, cells in rows.items():
        if len({r.higher_is_better for _, r in cells}) > 1 or len(cells) < 2:
            continue  # directions disagree between records, or nothing to compare with
        pick = max if cells[0][1].higher_is_better else min
        top = pick(r.final for _, r in cells)
        best.update({(i, series): True for i, r in cells if r.final == top})
    columns = sorted(labels, key=lambda s: (labels[s][0], labels[s][1], s))
    return [(s, labels[s][1]) for s in columns], best


def _differing(params: list[dict[str, Any]]) -> list[str]:
    """Keys whose values are not the same everywhere (absent counts as a value)."""
    keys = sorted({k for p in params for k in p})
    return [k for k in keys if len({repr(p.get(k)) for p in params}) > 1]


def review_context(runs: list[Run], broken: list[tuple[str, str]], variants: dict[str, Any] | None,
                   stages: list[StageState] | None) -> dict[str, Any]:
    """Everything review.md.j2 shows; `variants` is `variants_table(...)` (None without dvc)."""
    columns, best = _best(runs)
    cells = [{r.series: r for r in run.computed.results} for run in runs]
    params = [run.record.actual or run.record.planned for run in runs]  # as run, else as planned
    diff_keys = _differing(params)
    known = {run.record.experiment for run in runs}
    by_exp: dict[str | None, list[StageState]] = {}
    for s in stages or []:
        by_exp.setdefault(s.experiment, []).append(s)
    verdicts = [experiment_verdict(run.computed, run.findings) for run in runs]
    tally = Counter((v.badge, v.label) for v in verdicts)
    entries = []
    for i, run in enumerate(runs):
        general = run.computed.suite("general")
        compared = [r for r in general if r.gain is not None]
        entries.append({
            "run": run, "verdict": verdicts[i], "target": run.computed.suite("target"), "general": general,
            "noise": sum(r.verdict.badge == NOISE for r in general),
            "worst": min(compared, key=lambda r: r.gain) if compared else None,
            "cells": [cells[i].get(s) for s, _ in columns], "best": [best.get((i, s), False) for s, _ in columns],
            "stages": stage_summary(by_exp.get(run.record.experiment, [])) or "all up to date",
            "params": [params[i].get(k) for k in diff_keys]})
    return {
        "runs": entries,
        "tally": sorted(((b, label, n) for (b, label), n in tally.items()), key=lambda t: (BADGE_ORDER.index(t[0]), t[1])),
        "columns": [label for _, label in columns],
        "diff_keys": diff_keys,
        "broken": broken,
        "variants": variants,
        "stages_known": stages is not None,
        "changed": stages or [],
        "orphans": sorted((e, stage_summary(s)) for e, s in by_exp.items() if e is not None and e not in known),
    }


def write_review(record_paths: list[Path], out_path: Path, exp_show: list | None = None,
                 dvc_status: dict | None = None, root: Path | None = None) -> Path:
    """Render one review of all records (unreadable ones are listed, not fatal) to `out_path`.

    `root` is the project (git) root the variants are read from; by default the folder holding
    `runs/`, else the current directory.
    """
    out_path = Path(out_path)
    records, broken, texts = [], [], {}
    for path in sorted(Path(p) for p in record_paths):
        try:
            record = load_record(path)
        except RecordError as e:
            broken.append((str(path), str(e)))
            continue
        records.append(record)
        texts[record.experiment] = (record, path)
    records.sort(key=lambda r: r.experiment)
    runs = []
    for record, computed in zip(records, compute_many(records)):
        log = out_path.parent / f"{safe_name(record.experiment)}.md"
        runs.append(Run(record, computed, run_rules(record, computed), log.name if log.exists() else None))
    variants = None
    if exp_show is not None:
        if root is None:
            in_runs = [Path(p).resolve().parents[2] for p in record_paths if Path(p).resolve().parent.parent.name == "runs"]
            root = in_runs[0] if in_runs else Path.cwd()
        # the workspace's records, by the experiment they hold (the folder name is what git paths use)
        workspace = {rec.experiment: (rec, path.read_text()) for rec, path in texts.values()
                     if path.parent.parent.name == "runs" and path.parent.name == rec.experiment}
        variants = variants_table(parse_exp_show(exp_show), workspace, root)
    context = review_context(runs, broken, variants,
                             parse_dvc_status(dvc_status) if dvc_status is not None else None)
    return write_atomic(out_path, render("review.md.j2", **context))
