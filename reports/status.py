"""Status badges: one change judged against its noise, a practical floor and the record's thresholds.

The rule, for a change with a 95 % interval, read in the metric's "better" direction (gain > 0 better):

- ➖ the test printed with the row (McNemar on 0/1 scores, paired t, z, Wilson's score test) does not
  reject "no change" at 5 %, or the change is smaller than the practical floor: within noise, or too
  small to matter;
- ⚠️ a significant change measured on 30 items or fewer, a significant regression not past the fail
  threshold, or an interval that cannot be computed;
- ✅ a significant improvement at least the size of the floor;
- ❌ a significant regression past the fail threshold that applies to the metric's units.

Thresholds (`expect.forgetting` for the general suite) are changes in the better direction, negative
meaning worse: a number is absolute, in the metric's units; a string like "-5%" is relative to the
baseline. Absolute numbers at the top of `expect.forgetting` apply to metrics on a 0–1 scale
(accuracies: higher is better, base and final within [0, 1]); a metric on another scale (MT-Bench
points, perplexity) needs a relative threshold or its own under `tasks:` ("task" or "task/metric"),
else the defaults below apply. The practical floor is the warn threshold's size: a change smaller
than the change one has declared tolerable is never ✅ or ❌. Every record gets the same defaults,
hand-written or compiled. Nothing here looks at metric names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tunebook.reports.stats import Interval

IMPROVED, REGRESSED, CAUTION, NOISE = "✅", "❌", "⚠️", "➖"
# 30 or fewer items: a 0/1 score moves in steps of 3 points or more and one or two answers swing it;
# `<=` so that the classic 30-item set (seed 003's SVAMP) is called out, as the rule's text says
SMALL_N = 30

# the defaults every record gets (the compiler writes the same absolute ones into a spec's `expect`)
DEFAULT_UNIT = (-0.01, -0.05)  # 0–1 metrics: warn at -1 point, fail at -5 points (absolute)
DEFAULT_RELATIVE = (-0.01, -0.05)  # other scales: warn at -1 %, fail at -5 % of the baseline
_PERCENT = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*%\s*$")


class ThresholdError(ValueError):
    """A threshold in `expect` that cannot be read; the message names its key path."""


@dataclass(frozen=True)
class Level:
    value: float
    relative: bool  # a share of the baseline, else absolute in the metric's units

    def absolute(self, base: float | None) -> float | None:
        if not self.relative:
            return self.value
        return None if base is None or base == 0 else self.value * abs(base)

    def __str__(self) -> str:
        return f"{self.value * 100:+g}%" if self.relative else f"{self.value:+g}"


def parse_level(x: Any, where: str) -> Level | None:
    """A threshold: a number (absolute) or "-5%" (relative); ThresholdError for anything else or a positive."""
    if x is None:
        return None
    if isinstance(x, bool):
        raise ThresholdError(f"{where}: {x!r} is not a threshold (a number like -0.05 or a string like '-5%')")
    if isinstance(x, (int, float)):
        level = Level(float(x), False)
    elif isinstance(x, str) and (m := _PERCENT.match(x)):
        level = Level(float(m.group(1)) / 100, True)
    else:
        raise ThresholdError(f"{where}: {x!r} is not a threshold (a number like -0.05 or a string like '-5%')")
    if level.value != level.value or level.value in (float("inf"), float("-inf")):
        raise ThresholdError(f"{where}: not a finite number")
    if level.value > 0:
        raise ThresholdError(f"{where}: {x!r} is positive; thresholds are changes in the better direction, negative "
                             f"meaning worse: did you mean {-level.value * (100 if level.relative else 1):g}"
                             f"{'%' if level.relative else ''}?")
    return level


def _pair(t: Any, where: str) -> tuple[Level | None, Level | None]:
    if not isinstance(t, Mapping):
        raise ThresholdError(f"{where}: expected a mapping like {{warn: -0.01, fail: -0.05}}, got {t!r}")
    unknown = set(t) - {"warn", "fail", "tasks"}
    if unknown:
        raise ThresholdError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (allowed: warn, fail, tasks)")
    warn, fail = parse_level(t.get("warn"), f"{where}.warn"), parse_level(t.get("fail"), f"{where}.fail")
    if warn and fail and warn.relative == fail.relative and fail.value > warn.value:
        raise ThresholdError(f"{where}: fail ({fail}) must be at or below warn ({warn}): fail is the larger drop")
    return warn, fail


def check_expect(expect: Mapping[str, Any]) -> None:
    """Raise ThresholdError (a ValueError: pydantic reports it under `expect`) for unreadable thresholds."""
    t = expect.get("forgetting")
    if t is None:
        return
    _pair(t, "expect.forgetting")
    tasks = t.get("tasks") or {}
    if not isinstance(tasks, Mapping):
        raise ThresholdError("expect.forgetting.tasks: expected a mapping of task (or task/metric) to {warn, fail}")
    for name, pair in tasks.items():
        if isinstance(pair, Mapping) and "tasks" in pair:
            raise ThresholdError(f"expect.forgetting.tasks.{name}: tasks do not nest")
        _pair(pair, f"expect.forgetting.tasks.{name}")


@dataclass(frozen=True)
class Thresholds:
    """Warn and fail levels for one metric, absolute in its units (negative = worse), and where they come from."""

    warn: float | None = None
    fail: float | None = None
    source: str = ""

    @property
    def floor(self) -> float:
        """The practical floor: changes smaller than the declared tolerance are never ✅ or ❌."""
        return abs(self.warn) if self.warn is not None else 0.0


def unit_scale(higher_is_better: bool, *values: float | None) -> bool:
    """A metric on a 0–1 scale (an accuracy): higher is better and every known value within [0, 1]."""
    return higher_is_better and all(v is None or 0 <= v <= 1 for v in values)


def thresholds_for(suite: str, task: str, metric: str, expect: Mapping[str, Any], base: float | None,
                   final: float | None = None, higher_is_better: bool = True, unit: bool | None = None) -> Thresholds:
    """The thresholds that apply to one series (see the module doc); the defaults when the record has none.
    `unit` says whether the metric is on a 0–1 scale when its values cannot (a change recorded alone)."""
    t = expect.get("forgetting") if suite == "general" else None
    t = t if isinstance(t, Mapping) else {}
    unit = unit_scale(higher_is_better, base, final) if unit is None else unit
    tasks = t.get("tasks") if isinstance(t.get("tasks"), Mapping) else {}
    for key in (f"{task}/{metric}", task):
        if key in tasks:
            warn, fail = _pair(tasks[key], f"expect.forgetting.tasks.{key}")
            return _resolve(warn, fail, base, f"expect.forgetting.tasks.{key}")
    warn, fail = _pair(t, "expect.forgetting") if t else (None, None)
    applies = [lv for lv in (warn, fail) if lv is not None and (lv.relative or unit)]
    if applies:
        return _resolve(warn if warn in applies else None, fail if fail in applies else None, base, "expect.forgetting")
    if unit:
        return Thresholds(*DEFAULT_UNIT, source="default for 0–1 metrics")
    w, f = DEFAULT_RELATIVE
    return _resolve(Level(w, True), Level(f, True), base, "default, relative to the baseline")


def _resolve(warn: Level | None, fail: Level | None, base: float | None, source: str) -> Thresholds:
    shown = ", ".join(f"{k} {lv}" for k, lv in (("warn", warn), ("fail", fail)) if lv is not None)
    return Thresholds(warn.absolute(base) if warn else None, fail.absolute(base) if fail else None,
                      f"{source}: {shown}" if shown else source)


def number(x: Any) -> float | None:
    """A number from a record's free-form parts (expect, extra): numbers count, anything else is absent."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


@dataclass(frozen=True)
class Verdict:
    badge: str  # one of the four badges, or "" when there is nothing to judge
    label: str
    note: str = ""  # the small-n call-out, with the interval

    def __str__(self) -> str:
        text = f"{self.badge} {self.label}".strip()
        return f"{text}; {self.note}" if self.note else text


def ci_text(interval: Interval, digits: int = 3) -> str:
    """'CI ±0.12' for a symmetric interval, 'CI [-0.04, +0.44]' for an asymmetric one."""
    if interval.symmetric:
        return f"CI ±{interval.half_width:.{digits}g}"
    return f"CI [{interval.low:+.{digits}g}, {interval.high:+.{digits}g}]"


def judge(interval: Interval | None, higher_is_better: bool, n: int | None,
          thresholds: Thresholds = Thresholds()) -> Verdict:
    """Badge for one change; `interval` None means there was no baseline to compare with."""
    if interval is None:
        return Verdict("", "no baseline")
    if not interval.known:
        return Verdict(CAUTION, "CI unknown", interval.note or "no stderr or per-item scores")
    gain = interval.delta if higher_is_better else -interval.delta
    small = n is not None and n <= SMALL_N
    note = f"n={n} ≤ {SMALL_N}, {ci_text(interval)}" if small else ""
    if not interval.significant:
        if interval.p is not None and not interval.low <= 0 <= interval.high:  # the badge goes with the test
            return Verdict(NOISE, f"within noise by {interval.test or 'the test'} (p={interval.p:.2g}), though "
                                  "the interval just excludes 0", note)
        return Verdict(NOISE, "within noise", note)
    if abs(gain) < thresholds.floor:
        return Verdict(NOISE, f"below the practical floor (±{thresholds.floor:.3g})", note)
    if small:
        return Verdict(CAUTION, "better on small n" if gain > 0 else "worse on small n", note)
    if gain > 0:
        return Verdict(IMPROVED, "improved")
    if thresholds.fail is not None and gain < thresholds.fail:
        return Verdict(REGRESSED, f"regressed past fail ({thresholds.fail:+.3g})")
    if thresholds.fail is None:
        return Verdict(CAUTION, "regressed (no fail threshold for these units)")
    return Verdict(CAUTION, "mild regression")


def overall(target: Iterable[Verdict], severities: Iterable[str]) -> Verdict:
    """The experiment's badge: failing findings first, then warnings, then the target's outcome."""
    severities = list(severities)
    if "fail" in severities:
        return Verdict(REGRESSED, "failed checks")
    if "warn" in severities:
        return Verdict(CAUTION, "needs a look")
    if any(v.badge == IMPROVED for v in target):
        return Verdict(IMPROVED, "target improved")
    return Verdict(NOISE, "no measurable improvement")
