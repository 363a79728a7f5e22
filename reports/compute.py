"""Compute first: everything a log shows, as plain rows, before any template sees it.

`compute(record)` gives what every consumer needs (the rules, the experiment log, the review):
results at the final checkpoint with intervals and badges, per-checkpoint curves, and planned vs
actual parameters. The other functions build the tables only the experiment log shows.

A *series* is one (suite, task, metric), measured at several checkpoints. When a record holds the
same series twice at one checkpoint with different n (a 16-question subset and the full 80), each n
is its own series, so the two can be compared rather than silently merged.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import polars as pl

from tunebook.reports.record import Change, Metric, Record
from tunebook.reports.stats import (
    Z95,
    BadNumber,
    Interval,
    McNemar,
    delta_interval,
    holm,
    mcnemar,
    normal_interval,
    unknown,
    win_rate_interval,
)
from tunebook.reports.status import Thresholds, Verdict, judge, thresholds_for, unit_scale

SUITE_ORDER = ("target", "general")  # shown first, in this order; other suites follow alphabetically
JUDGE_PARITY = 0.5  # a pairwise win rate against the base model (extra.reference == "base") starts at parity
RATIO_TOLERANCE = 0.01  # achieved data ratios come from whole rows: 1 % relative is "as planned"
DYNAMICS_COLUMNS = 10  # a table one can read; trl's GRPO logs ~30 values a step (history.json keeps them all)
# what a reader looks for first when a trainer logs more than fits, in this order of preference
DYNAMICS_FIRST = ("loss", "reward", "reward_std", "frac_reward_zero_std", "kl", "entropy", "completions/mean_length",
                  "rewards/margins", "rewards/accuracies", "clip_ratio/region_mean", "policy_ratio/max", "grad_norm",
                  "learning_rate")


@dataclass(frozen=True)
class ResultRow:
    """One series at the final checkpoint, against the baseline."""

    series: str
    index: int  # of the final metric in record.metrics (for its samples and extra)
    suite: str
    task: str
    metric: str
    label: str
    checkpoint: str  # the checkpoint the "final" value was measured on
    step: int | None
    base: float | None
    final: float
    n: int | None
    higher_is_better: bool
    reference: str  # "base" (the base checkpoint), "parity" (judge win rates) or "none"
    interval: Interval | None
    verdict: Verdict
    flips: McNemar | None  # right->wrong / wrong->right counts for 0/1 scores
    extra: dict[str, Any]  # the final metric's extra (extraction failures, judge verdicts, ...)
    thresholds: Thresholds = Thresholds()
    own: Interval | None = None  # the final value's own interval (value ± 1.96 se) when there is no baseline
    reference_value: float | None = None  # a value the run is measured against (a paper, the previous best)
    reference_source: str | None = None
    family_p: float | None = None  # Holm-adjusted p across the suite's rows (the forgetting verdict uses it)

    @property
    def gain(self) -> float | None:
        """The change in the "better" direction (positive = better), None without a baseline."""
        if self.interval is None:
            return None
        return self.interval.delta if self.higher_is_better else -self.interval.delta

    @property
    def relative(self) -> float | None:
        if self.reference != "base" or not self.base:
            return None
        return self.interval.delta / abs(self.base)


@dataclass(frozen=True)
class ParamRow:
    key: str
    source: str  # "spec" (planned vs actual params), "data" (manifest) or "training"
    planned: Any
    actual: Any
    state: str  # "same", "differs" or "not recorded"

    @property
    def badge(self) -> str:
        return {"same": "✅", "differs": "❌", "not recorded": "❔"}[self.state]


@dataclass(frozen=True)
class Computed:
    final_checkpoint: str | None  # the record's final checkpoint (is_final, else the highest step)
    final_step: int | None
    results: list[ResultRow]
    params: list[ParamRow]
    curves: pl.DataFrame  # one row per (series, checkpoint), base included: value, base, delta
    # per evaluated checkpoint (by step): its worst general change in the better direction, point
    # estimate, and how many general series it covers
    general_worst: list[tuple[str, int | None, float, int]]
    # the other metrics of tasks that have a primary one (acc_norm beside acc): the log's details section
    details: list[ResultRow] = field(default_factory=list)
    # results known only as a change against the base (record.changes), aggregates included
    changes: list[ResultRow] = field(default_factory=list)

    def suite(self, name: str) -> list[ResultRow]:
        return [r for r in self.results if r.suite == name]

    @property
    def suites(self) -> list[str]:
        present = {r.suite for r in self.results}
        return [s for s in SUITE_ORDER if s in present] + sorted(present - set(SUITE_ORDER))

    @property
    def evaluated(self) -> list[str]:
        """The checkpoints the results come from (more than one when series were evaluated apart)."""
        return sorted({r.checkpoint for r in self.results})


# ---------------------------------------------------------------------------------------------------
# checkpoints and series


def final_checkpoint(record: Record) -> tuple[str | None, int | None]:
    """The checkpoint flagged is_final, else the highest step; from the metrics when none are listed."""
    if record.checkpoints:
        ck = max(record.checkpoints, key=lambda c: (c.is_final, c.step))
        return ck.name, ck.step
    steps = [(m.step if m.step is not None else -1, m.checkpoint) for m in record.metrics if m.checkpoint != "base"]
    if not steps:
        return None, None
    step, name = max(steps)
    return name, (step if step >= 0 else None)


_SCHEMA = {"rec": pl.Int64, "idx": pl.Int64, "suite": pl.String, "task": pl.String, "metric": pl.String,
           "checkpoint": pl.String, "step": pl.Int64, "is_final": pl.Boolean, "at_final": pl.Boolean,
           "value": pl.Float64, "n": pl.Int64, "hib": pl.Boolean, "primary": pl.Boolean}


def _primary(record: Record) -> list[bool]:
    """Per metric: does it stand for its task? A task whose metrics flag one `extra.primary` (lm-eval's
    first metric or the spec's `primary_metrics`) is shown by that one; the others (acc_norm beside
    acc) go to the details. A metric without the flag, or a task that flags none, counts as primary."""
    flagged = {(m.suite, m.task) for m in record.metrics if m.extra.get("primary") is True}
    return [m.extra.get("primary") is not False or (m.suite, m.task) not in flagged for m in record.metrics]


def _metrics_frame(records: list[Record]) -> pl.DataFrame:
    """All metrics of all records, one row each; `rec` and `idx` point back into the records."""
    rows = []
    for r, record in enumerate(records):
        steps = {c.name: c.step for c in record.checkpoints}
        flagged = {c.name for c in record.checkpoints if c.is_final}
        final = final_checkpoint(record)[0]
        primary = _primary(record)
        rows.extend(
            {"rec": r, "idx": i, "suite": m.suite, "task": m.task, "metric": m.metric, "checkpoint": m.checkpoint,
             "step": 0 if m.checkpoint == "base" else (m.step if m.step is not None else steps.get(m.checkpoint)),
             "is_final": m.checkpoint in flagged, "at_final": m.checkpoint == final, "value": m.value, "n": m.n,
             "hib": m.higher_is_better, "primary": primary[i]}
            for i, m in enumerate(record.metrics))
    df = pl.DataFrame(rows, schema=_SCHEMA)
    # a series measured twice at one checkpoint (subset and full set) is split by n
    key = ["rec", "suite", "task", "metric"]
    split = (df.group_by(*key, "checkpoint").len().filter(pl.col("len") > 1)
             .select(key).unique().with_columns(split=pl.lit(True)))
    df = df.join(split, on=key, how="left").with_columns(pl.col("split").fill_null(False))
    n = pl.col("n").cast(pl.String).fill_null("?")
    df = df.with_columns(
        label=pl.col("task") + " · " + pl.col("metric") + pl.when("split").then(" (n=" + n + ")").otherwise(pl.lit("")),
        series=pl.col("suite") + "/" + pl.col("task") + "/" + pl.col("metric")
        + pl.when("split").then("@" + n).otherwise(pl.lit("")))
    return df.unique(subset=["rec", "series", "checkpoint"], keep="last", maintain_order=True)


def _curves(df: pl.DataFrame) -> pl.DataFrame:
    base = (df.filter(pl.col("checkpoint") == "base")
            .select("rec", "series", base=pl.col("value"), base_idx=pl.col("idx")))
    return (df.join(base, on=["rec", "series"], how="left")
            .with_columns(delta=pl.col("value") - pl.col("base"))
            # the change in the better direction (negative = worse), the convention of thresholds and charts
            .with_columns(gain=pl.when(pl.col("hib")).then(pl.col("delta")).otherwise(-pl.col("delta")))
            .sort("rec", "suite", "series", "step", "is_final", nulls_last=False))


def _rounding(value: float) -> float:
    """Half a unit in the last digit `value` was written with (0.77 -> 0.005), plus float noise."""
    exponent = Decimal(repr(value)).as_tuple().exponent
    return 0.5 * 10.0 ** exponent if isinstance(exponent, int) else 0.0


def samples_disagree(m: Metric) -> str:
    """Why a metric's per-item scores cannot stand for its value ('' when they can)."""
    if not m.samples:
        return ""
    if m.n is not None and m.n != len(m.samples):
        return f"n={m.n} but {len(m.samples)} per-item scores at {m.checkpoint}"
    mean = math.fsum(m.samples) / len(m.samples)
    if abs(mean - m.value) > _rounding(m.value) + 1e-9 * max(1.0, abs(m.value)):
        return f"per-item scores at {m.checkpoint} average {mean:.4g}, not the value {m.value:.4g}"
    return ""


def interval_for(new: Metric, old: Metric | None) -> tuple[Interval | None, str]:
    """The change of `new` against `old` (or parity for pairwise win rates), and what it was measured against."""
    if new.extra.get("reference") == "base":  # a win rate from comparisons against the base model: Wilson,
        if new.n:                              # even when a value was also recorded at checkpoint 'base'
            return win_rate_interval(new.value, new.n, JUDGE_PARITY), "parity"
        return unknown(new.value - JUDGE_PARITY, "a win rate without n"), "parity"
    if old is None:
        return None, "none"
    why = "; ".join(w for w in (samples_disagree(old), samples_disagree(new)) if w)
    paired = not why
    try:
        iv = delta_interval(old.value, new.value, old_se=old.stderr, new_se=new.stderr,
                            old_samples=old.samples if paired else None, new_samples=new.samples if paired else None,
                            old_ids=old.sample_ids, new_ids=new.sample_ids, n=min(filter(None, (old.n, new.n)), default=None))
    except BadNumber as e:  # the record validators catch these first; a row never shows nan
        return unknown(new.value - old.value, str(e)), "base"
    if why:
        iv = replace(iv, note=f"per-item scores not used ({why}){'; ' + iv.note if iv.note else ''}")
    return iv, "base"


def own_interval(m: Metric) -> Interval | None:
    """The value's own 95 % interval from its stderr, for a row with nothing to compare against."""
    if m.stderr is None or m.stderr == 0:
        return None
    half = Z95 * m.stderr
    return Interval(m.value, m.value - half, m.value + half, "normal")


def _compare(record: Record, row: dict) -> tuple[Metric, Metric | None, Interval | None, str, int | None, Verdict]:
    """A curve row's metric against its base: the interval, its reference, the paired n and the badge."""
    new = record.metrics[row["idx"]]
    old = record.metrics[row["base_idx"]] if row["base_idx"] is not None else None
    interval, reference = interval_for(new, old)
    n = interval.n if interval is not None and interval.paired else (
        min(new.n, old.n) if old is not None and new.n and old.n else new.n)
    verdict = judge(interval, new.higher_is_better, n, _thresholds(record, new, old))
    return new, old, interval, reference, n, verdict


def _thresholds(record: Record, new: Metric, old: Metric | None) -> Thresholds:
    return thresholds_for(new.suite, new.task, new.metric, record.expect, old.value if old is not None else None,
                          new.value, new.higher_is_better)


def _result(record: Record, row: dict) -> ResultRow:
    new, old, interval, reference, n, verdict = _compare(record, row)
    flips = (mcnemar(old.samples, new.samples)
             if interval is not None and interval.method == "Tango score" and not interval.note else None)
    base = old.value if old is not None else (JUDGE_PARITY if reference == "parity" else None)
    return ResultRow(
        series=row["series"], index=row["idx"], suite=new.suite, task=new.task, metric=new.metric, label=row["label"],
        checkpoint=new.checkpoint, step=row["step"], base=base, final=new.value, n=n,
        higher_is_better=new.higher_is_better, reference=reference, interval=interval, verdict=verdict,
        flips=flips, extra=new.extra, thresholds=_thresholds(record, new, old),
        own=own_interval(new) if interval is None else None, reference_value=new.reference_value,
        reference_source=new.reference_source)


def change_row(record: Record, ch: Change) -> ResultRow:
    """A result recorded only as a change: a normal interval from its stderr, the badge as for any row."""
    t = thresholds_for(ch.suite, ch.task, ch.metric, record.expect, 1.0 if ch.relative else None, None,
                       ch.higher_is_better, unit=ch.proportion and not ch.relative)
    if ch.stderr:
        interval = normal_interval(ch.delta, ch.stderr, "a change recorded without its values", ch.n)
    else:
        interval = unknown(ch.delta, "a change recorded without a stderr")
    label = f"{ch.task} · {ch.metric}" + (" (relative)" if ch.relative else "")
    extra = {"members": list(ch.members), "worst": ch.worst.model_dump() if ch.worst else None}
    return ResultRow(
        series=f"change/{ch.suite}/{ch.task}/{ch.metric}", index=-1, suite=ch.suite, task=ch.task, metric=ch.metric,
        label=label, checkpoint=ch.checkpoint, step=None, base=None, final=None, n=ch.n,
        higher_is_better=ch.higher_is_better, reference="base", interval=interval,
        verdict=judge(interval, ch.higher_is_better, ch.n, t), flips=None, extra=extra, thresholds=t)


def _with_family(rows: list[ResultRow]) -> list[ResultRow]:
    """Holm-adjust the p-values of the general suite's rows: the forgetting verdict is one family."""
    family = [i for i, r in enumerate(rows) if r.suite == "general" and r.interval is not None and r.interval.p is not None]
    adjusted = holm([rows[i].interval.p for i in family])
    out = list(rows)
    for i, p in zip(family, adjusted):
        out[i] = replace(rows[i], family_p=p)
    return out


def compute(record: Record) -> Computed:
    """Results at the final checkpoint, per-checkpoint curves and the planned-vs-actual table."""
    return compute_many([record])[0]


def compute_many(records: list[Record]) -> list[Computed]:
    """`compute` for many records at once: one frame for all, so a review of 1,000 runs stays fast."""
    curves = _curves(_metrics_frame(records))
    # per series: the record's final checkpoint when it was evaluated there, else its latest checkpoint
    finals = (curves.filter(pl.col("checkpoint") != "base")
              .sort("rec", "at_final", "step", "is_final", nulls_last=False)
              .group_by("rec", "series", maintain_order=True).last())
    rank = {s: i for i, s in enumerate(SUITE_ORDER)}
    rows: dict[int, list[dict]] = {}
    for row in finals.to_dicts():
        rows.setdefault(row["rec"], []).append(row)
    gain = pl.when(pl.col("hib")).then(pl.col("delta")).otherwise(-pl.col("delta"))
    worst: dict[int, list[tuple]] = {}
    for row in (curves.filter((pl.col("suite") == "general") & pl.col("primary") & (pl.col("checkpoint") != "base")
                              & pl.col("delta").is_not_null())
                .group_by("rec", "checkpoint", "step").agg(worst=gain.min(), series=pl.len())
                .sort("rec", "step", "checkpoint", nulls_last=False).iter_rows()):
        worst.setdefault(row[0], []).append(row[1:])
    parts = curves.partition_by("rec", as_dict=True)
    out = []
    for r, record in enumerate(records):
        mine = sorted(rows.get(r, []), key=lambda x: (rank.get(x["suite"], len(rank)), x["suite"], x["series"]))
        results = [_result(record, x) for x in mine if x["primary"]]
        changes = [change_row(record, ch) for ch in record.changes]
        family = _with_family(results + changes)  # one family: a suite's rows whether values or changes
        out.append(Computed(*final_checkpoint(record), family[:len(results)], param_rows(record),
                            parts.get((r,), curves.clear()), worst.get(r, []),
                            [_result(record, x) for x in mine if not x["primary"]], changes=family[len(results):]))
    return out


# ---------------------------------------------------------------------------------------------------
# planned vs actual


def _same(a: Any, b: Any, rel: float = 1e-9) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
    return a == b


def _param(key: str, source: str, planned: Any, actual: Any, rel: float = 1e-9) -> ParamRow:
    if planned is None or actual is None:
        state = "not recorded"
    else:
        state = "same" if _same(planned, actual, rel) else "differs"
    return ParamRow(key, source, planned, actual, state)


def param_rows(record: Record) -> list[ParamRow]:
    """Every planned and actual parameter side by side; data ratios and step counts included."""
    keys = sorted(record.planned.keys() | record.actual.keys())
    rows = [_param(k, "spec", record.planned.get(k), record.actual.get(k))
            for k in keys if record.planned.get(k) is not None or record.actual.get(k) is not None]
    d = record.data
    if d is not None:
        if d.planned_sample_ratio is not None or d.actual_sample_ratio is not None:
            rows.append(_param("data.sample_ratio (achieved)", "data", d.planned_sample_ratio, d.actual_sample_ratio,
                               RATIO_TOLERANCE))
        for s in d.sources:
            if s.planned_weight is not None or s.actual_weight is not None:
                rows.append(_param(f"data.weight[{s.source}] (achieved)", "data", s.planned_weight, s.actual_weight,
                                   RATIO_TOLERANCE))
    t = record.training
    if t is not None and (t.planned_steps is not None or t.actual_steps is not None):
        rows.append(_param("training.steps", "training", t.planned_steps, t.actual_steps))
    return rows


# ---------------------------------------------------------------------------------------------------
# tables only the experiment log shows


def checkpoint_rows(record: Record, computed: Computed, suite: str) -> list[dict]:
    """Per checkpoint, each series of `suite` as a change against base with its badge (seed 001's table)."""
    out = []
    for r in computed.curves.filter((pl.col("suite") == suite) & pl.col("primary") & (pl.col("checkpoint") != "base")).to_dicts():
        _, _, interval, _, _, verdict = _compare(record, r)
        out.append({**r, "interval": interval, "verdict": verdict, "expect": record.expect})
    return out


def _gain(cell: dict) -> float:
    return cell["interval"].delta if cell["hib"] else -cell["interval"].delta


def forgetting_table(record: Record, computed: Computed) -> dict:
    """Rows = checkpoints (by step), columns = general series, cells = change vs base, plus the mean."""
    cells = checkpoint_rows(record, computed, "general")
    columns = sorted({(c["series"], c["label"]) for c in cells})
    by_ckpt: dict[str, dict] = {}
    for c in cells:
        row = by_ckpt.setdefault(c["checkpoint"], {"checkpoint": c["checkpoint"], "step": c["step"],
                                                   "is_final": c["checkpoint"] == computed.final_checkpoint, "cells": {}})
        row["cells"][c["series"]] = c
    rows = sorted(by_ckpt.values(), key=lambda r: (r["step"] is not None, r["step"] or 0, r["checkpoint"]))
    averaged: set[str] = set()
    for row in rows:
        present = [c for c in row["cells"].values() if c["interval"] is not None]
        like = _like_with_like(present)
        averaged |= {c["label"] for c in like}
        row["mean"] = _mean_gain(like)
        row["worst"] = min(present, key=_severity)["label"] if present else None
        row["cells"] = [row["cells"].get(s) for s, _ in columns]
    return {"columns": [label for _, label in columns], "rows": rows, "averaged": sorted(averaged),
            "left_out": sorted({label for _, label in columns} - averaged)}


def _like_with_like(cells: list[dict]) -> list[dict]:
    """The cells a mean may average: 0–1 metrics only (accuracies), and of a task measured at two sizes
    (a subset and its full set), the larger only."""
    unit = [c for c in cells if unit_scale(c["hib"], c["base"], c["value"])]
    largest: dict[tuple, int] = {}
    for c in unit:
        key = (c["task"], c["metric"])
        largest[key] = max(largest.get(key, 0), c["n"] or 0)
    return [c for c in unit if (c["n"] or 0) == largest[(c["task"], c["metric"])]]


def _mean_gain(cells: list[dict]) -> Interval | None:
    """The mean change in the better direction with its 95 % interval from the rows' standard errors
    (different benchmarks, different items: independent); unknown when a row has none."""
    if not cells:
        return None
    mean = sum(map(_gain, cells)) / len(cells)
    ses = [c["interval"].se for c in cells]
    if any(se is None for se in ses):
        return unknown(mean, "a benchmark without an interval")
    return normal_interval(mean, math.sqrt(sum(se * se for se in ses)) / len(cells), f"mean of {len(cells)}")


def _severity(cell: dict) -> float:
    """How bad a change is, in units of its own fail threshold (comparable across scales)."""
    fail = _thresholds_of(cell).fail
    return _gain(cell) / abs(fail) if fail else _gain(cell)


def _thresholds_of(cell: dict) -> Thresholds:
    return thresholds_for("general", cell["task"], cell["metric"], cell.get("expect", {}), cell["base"], cell["value"],
                          cell["hib"])


def dynamics(record: Record, fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)) -> dict:
    """Training history at a few steps (first, ~25 %, ~50 %, last) plus any step a watchdog fired."""
    t = record.training
    if t is None or not t.history:
        return {"columns": [], "rows": [], "left_out": []}
    logged = sorted(t.history, key=lambda h: h.step)
    # a value logged in fewer than half the steps is a one-off (a trainer's end-of-run summary), not a dynamic
    counts = Counter(k for h in logged for k in h.values)
    columns = [k for k in dict.fromkeys(k for h in logged for k in h.values) if 2 * counts[k] >= len(logged)]
    keep = set([k for k in DYNAMICS_FIRST if k in columns][:DYNAMICS_COLUMNS])
    keep |= set([k for k in columns if k not in keep][: DYNAMICS_COLUMNS - len(keep)])
    left_out = [k for k in columns if k not in keep]
    columns = [k for k in columns if k in keep]  # in the order logged
    hist = [h for h in logged if all(k in h.values for k in columns)] or logged

    def nearest(step: float) -> int:
        return min(hist, key=lambda h: (abs(h.step - step), h.step)).step

    first, last = hist[0].step, hist[-1].step
    wanted = {nearest(first + f * (last - first)) for f in fractions}
    alerts: dict[int, list[str]] = {}
    for ev in t.watchdog:
        alerts.setdefault(nearest(ev.step), []).append(ev.rule)
    wanted |= alerts.keys()
    rows = [{"step": h.step, "values": [h.values.get(k) for k in columns], "alerts": sorted(alerts.get(h.step, []))}
            for h in hist if h.step in wanted]
    return {"columns": columns, "rows": rows, "left_out": left_out}


def runtime(record: Record) -> dict:
    """Where the time went: each timing with its share of the total, and training throughput."""
    timings = dict(record.timings)
    total = timings.pop("total", None)
    parts = sorted(timings.items(), key=lambda kv: (-kv[1], kv[0]))
    if total is None:
        total = sum(timings.values()) or None
    rows = [{"name": k, "seconds": v, "share": v / total if total else None} for k, v in parts]
    if total and timings and total - sum(timings.values()) > 0.005 * total:
        rest = total - sum(timings.values())
        rows.append({"name": "unaccounted", "seconds": rest, "share": rest / total})
    t = record.training
    steps_per_s = (t.actual_steps / timings["training"]
                   if t is not None and t.actual_steps and timings.get("training") else None)
    return {"rows": rows, "total": total, "steps_per_s": steps_per_s}


def sample_outputs(record: Record, computed: Computed, keep: int = 3) -> list[dict]:
    """Per task, up to `keep` right and `keep` wrong outputs from the checkpoint its results come from."""
    at = {r.task: r.checkpoint for r in computed.results}
    groups: dict[str, dict] = {}
    for s in record.samples:
        if at.get(s.task, computed.final_checkpoint) != s.checkpoint:
            continue
        g = groups.setdefault(s.task, {"task": s.task, "checkpoint": s.checkpoint, "right": [], "wrong": [],
                                       "unscored": []})
        kind = "unscored" if s.correct is None else ("right" if s.correct else "wrong")
        if len(g[kind]) < keep:
            g[kind].append(s)
    return [groups[k] for k in sorted(groups)]


def _source_note(s) -> str:
    """What the revision column adds to a source's revision: not pinned, or not what DVC recorded."""
    notes = []
    if s.pin == "not pinned in spec":
        notes.append(f"from '{s.revision or 'main'}', not pinned in spec")
    if s.dvc and s.dvc.get("matches") is False:
        notes.append(f"differs from {s.dvc.get('file', 'its .dvc file')}")
    return f" ({'; '.join(notes)})" if notes else ""


def data_manifest(record: Record) -> dict | None:
    """Sources with their pinned revisions and hashes, counts, rejections and contamination checks."""
    d = record.data
    if d is None:
        return None
    return {
        "sources": [{**s.model_dump(), "note": _source_note(s)} for s in d.sources],
        "train_rows": d.train_rows, "validation_rows": d.validation_rows, "rejected_rows": d.rejected_rows,
        "converted_rows": d.converted_rows,
        "quarantine": d.quarantine, "sha256": d.sha256,
        "type_census": sorted(d.type_census.items()),
        "contamination": sorted(d.contamination.items()),
    }
