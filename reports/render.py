"""The experiment log: `write_report(record_path, out_path)` renders one record as markdown.

    tunebook report quickstart        # runs/quickstart/record.json -> logs/quickstart.md

Compute first (reports.compute, reports.rules), then render (templates/experiment.md.j2). Plots go
to `<out dir>/plots/<experiment>/`, linked relatively, with the per-checkpoint CSVs `dvc plots` reads;
nothing is written next to the record. The same record always gives the same bytes.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from tunebook.reports import compute as c
from tunebook.reports.intake import load_record
from tunebook.reports.markdown import render, safe_name
from tunebook.reports.plots import plan_plots, plot_tables
from tunebook.reports.record import Record
from tunebook.reports.rules import Finding, experiment_verdict, run_rules
from tunebook.reports.status import DEFAULT_RELATIVE, DEFAULT_UNIT, SMALL_N, number
from tunebook.files import write_atomic

SUITE_TITLES = {"target": "Target tasks", "general": "General suite (forgetting)", "loss": "Loss",
                "judge": "Judge (pairwise win rate against the base model)",
                "preference": "Preference (held-out pairs; implicit reward against the model before training)",
                "verifiable": "Held-out reward (the training reward functions on validation prompts)"}


def _seconds_between(start: str | None, end: str | None) -> float | None:
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):  # missing, or not ISO 8601: the dates still show as written
        return None


def report_context(record: Record, computed: c.Computed, findings: list[Finding],
                   plots: list[tuple[str, str]]) -> dict[str, Any]:
    """Everything the experiment template shows, computed; the template only lays it out."""
    time = c.runtime(record)
    extraction = [
        {"label": r.label, "checkpoint": r.checkpoint, "failures": r.extra["extraction_failures"], "n": r.n,
         "base_rate": next((number(m.extra.get("extraction_failure_rate")) for m in record.metrics
                            if m.checkpoint == "base" and m.task == r.task and m.metric == r.metric), None)}
        for r in computed.results if "extraction_failures" in r.extra]
    return {
        "record": record,
        "verdict": experiment_verdict(computed, findings),
        "duration": time["total"] if time["total"] is not None else _seconds_between(record.started, record.finished),
        "model_pins": sorted((k, v) for k, v in record.model.items() if k != "base" and v is not None),
        "final": {"name": computed.final_checkpoint, "step": computed.final_step},
        "evaluated": evaluated_note(record, computed),
        "suites": [{"title": SUITE_TITLES.get(s, s), "rows": computed.suite(s),
                    "references": any(r.reference_value is not None for r in computed.suite(s)),
                    "family": sum(r.family_p is not None and r.suite == s for r in computed.suite(s) + computed.changes)}
                   for s in computed.suites],
        "details": computed.details,
        "changes": computed.changes,
        "extraction": extraction,
        "forgetting": c.forgetting_table(record, computed),
        "plots": plots,
        "compared": [p for p in computed.params if p.state != "not recorded"],
        "planned_only": [p for p in computed.params if p.state == "not recorded" and p.planned is not None],
        "actual_only": [p for p in computed.params if p.state == "not recorded" and p.actual is not None],
        "drift": sum(p.state == "differs" for p in computed.params),
        "dynamics": c.dynamics(record),
        "runtime": time,
        "samples": c.sample_outputs(record, computed),
        "manifest": c.data_manifest(record),
        "findings": findings,
        "small_n": SMALL_N,
        "thresholds_note": thresholds_note(record),
    }


def evaluated_note(record: Record, computed: c.Computed, most: int = 8) -> str:
    """The header's "Evaluated" line: the trained checkpoints with results, by step, and whether the final
    is one of them ("final only", "4 checkpoints (steps 10, 20, 30, 40; final = 40)"); past `most`
    checkpoints the middle steps are elided."""
    listed = {ck.name: ck.step for ck in record.checkpoints}
    steps: dict[str, int | None] = {}
    for m in record.metrics:
        if m.checkpoint != "base" and steps.get(m.checkpoint) is None:
            steps[m.checkpoint] = m.step if m.step is not None else listed.get(m.checkpoint)
    if not steps:
        return "the base model only" if record.metrics else "nothing"
    final, final_step = computed.final_checkpoint, computed.final_step
    missed = "" if final in steps or final is None else (
        f"; the final ({final}{f', step {final_step}' if final_step is not None else ''}) was not evaluated")
    if len(steps) == 1:
        (name, step), = steps.items()
        return "final only" if name == final else f"{name} only{f' (step {step})' if step is not None else ''}{missed}"
    known = all(s is not None for s in steps.values())
    order = sorted(steps, key=lambda k: (steps[k] is None, steps[k] or 0, k))
    items = [str(steps[k]) if known else k for k in order]
    if len(items) > most:
        items = [*items[:3], "…", *items[-2:]]
    at_final = f"; final = {final_step}" if known and final in steps and final_step is not None else ""
    return f"{len(steps)} checkpoints ({'steps ' if known else ''}{', '.join(items)}{at_final}){missed}"


def thresholds_note(record: Record) -> str:
    """Where the general suite's warn/fail come from, in one sentence for the footnote."""
    t = record.expect.get("forgetting")
    own = (f"this record's expect.forgetting ({', '.join(f'{k} {v}' for k, v in sorted(t.items()) if k != 'tasks')}"
           f"{'; per task: ' + ', '.join(sorted(t['tasks'])) if t.get('tasks') else ''}); "
           if isinstance(t, dict) and t else "")
    return (f"{own}absolute numbers apply to 0–1 metrics only; defaults, the same for every record, are warn "
            f"{DEFAULT_UNIT[0]:+g} / fail {DEFAULT_UNIT[1]:+g} on 0–1 metrics and warn {DEFAULT_RELATIVE[0]:+.0%} / "
            f"fail {DEFAULT_RELATIVE[1]:+.0%} of the baseline on other scales")


def write_report(record_path: Path, out_path: Path) -> Path:
    """Render the record at `record_path` as the markdown log `out_path` (written atomically)."""
    record_path, out_path = Path(record_path), Path(out_path)
    record = load_record(record_path)
    computed = c.compute(record)
    findings = run_rules(record, computed)
    plot_dir = out_path.parent / "plots" / safe_name(record.experiment)
    # all or nothing: every chart, table and the log are made in memory first; a failure on the way
    # writes nothing (no orphan plots folder), and only then are the files written
    charts = [(title, plot_dir / name, svg.encode()) for title, name, svg in plan_plots(record, computed)]
    tables = [(plot_dir / name, text.encode()) for name, text in plot_tables(record, computed).items()]
    links = [(title, path.relative_to(out_path.parent).as_posix()) for title, path, _ in charts]
    text = render("experiment.md.j2", **report_context(record, computed, findings, links)).encode("utf-8")
    for _, path, data in charts:
        if not path.is_file() or path.read_bytes() != data:  # an unchanged chart keeps its file (and mtime)
            write_atomic(path, data)
    for path, data in tables:
        write_atomic(path, data)
    return write_atomic(out_path, text)
