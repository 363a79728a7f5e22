"""Status badges: one change judged against its noise and the record's thresholds.

The rule, for a change with a 95 % interval, read in the metric's "better" direction:

- ✅ the whole interval is on the improving side;
- ❌ the whole interval is on the worsening side AND the change is past the fail threshold
  (with no threshold declared, any significant regression fails);
- ⚠️ a significant but milder regression, any significant change measured on fewer than 30 items,
  or an interval that cannot be computed;
- ➖ the interval contains zero: within noise, whatever the point estimate says.

Thresholds come from the record's `expect` (`forgetting: {warn, fail}` for the general suite), in the
metric's own units, negative meaning worse. Nothing here looks at metric names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tunebook.reports.stats import Interval

IMPROVED, REGRESSED, CAUTION, NOISE = "✅", "❌", "⚠️", "➖"
SMALL_N = 30  # below this a normal or bootstrap interval is itself unreliable


@dataclass(frozen=True)
class Thresholds:
    warn: float | None = None
    fail: float | None = None

    @classmethod
    def for_suite(cls, suite: str, expect: Mapping[str, Any]) -> Thresholds:
        """The general suite is judged with `expect.forgetting`; other suites have no tolerance."""
        t = expect.get("forgetting")
        if suite != "general" or not isinstance(t, Mapping):
            return cls()
        return cls(warn=number(t.get("warn")), fail=number(t.get("fail")))


def number(x: Any) -> float | None:
    """A number from a record's free-form parts (expect, extra): numbers count, anything else is absent."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


@dataclass(frozen=True)
class Verdict:
    badge: str  # one of the four badges, or "" when there is nothing to judge
    label: str
    note: str = ""  # the small-n call-out, with the interval's width

    def __str__(self) -> str:
        text = f"{self.badge} {self.label}".strip()
        return f"{text}; {self.note}" if self.note else text


def judge(interval: Interval | None, higher_is_better: bool, n: int | None,
          thresholds: Thresholds = Thresholds()) -> Verdict:
    """Badge for one change; `interval` None means there was no baseline to compare with."""
    if interval is None:
        return Verdict("", "no baseline")
    if not interval.known:
        return Verdict(CAUTION, "CI unknown", "no stderr or per-item scores")
    sign = 1 if higher_is_better else -1
    gain = sign * interval.delta
    low, high = sorted((sign * interval.low, sign * interval.high))
    small = n is not None and n < SMALL_N
    note = f"n={n} < {SMALL_N}, CI ±{interval.half_width:.3g}" if small else ""
    if low <= 0 <= high:
        return Verdict(NOISE, "within noise", note)
    if small:
        return Verdict(CAUTION, "better on small n" if gain > 0 else "worse on small n", note)
    if low > 0:
        return Verdict(IMPROVED, "improved")
    fail = thresholds.fail if thresholds.fail is not None else 0.0
    if gain < fail:
        return Verdict(REGRESSED, f"regressed past fail ({fail:+g})" if thresholds.fail is not None
                       else "regressed (no tolerance declared)")
    if thresholds.warn is not None and gain >= thresholds.warn:
        return Verdict(CAUTION, f"small regression, within warn ({thresholds.warn:+g})")
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
