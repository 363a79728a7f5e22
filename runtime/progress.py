"""Short progress lines with counts and time left, for the long stages (data, training, sweeps).

One line every few seconds at most, so logs stay readable under `dvc repro`:
    [train quickstart] 120/300 steps (40%) · 1m 12s elapsed · ~1m 48s left · loss 1.234

Time left is the average pace so far times the work left; durations read as 45s, 4m 05s, 1h 02m.
"""

from __future__ import annotations

import sys
import time


def duration(seconds: float) -> str:
    """45s, 4m 05s, 1h 02m: what a person reads at a glance (raw seconds past a minute do not)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


class Progress:
    def __init__(self, label: str, total: int, unit: str = "items", every_s: float = 5.0, stream=None):
        self.label, self.total, self.unit, self.every_s = label, max(int(total), 0), unit, every_s
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self._last = -1e9

    def _line(self, done: int, extra: str) -> str:
        elapsed = time.monotonic() - self.t0
        pct = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        left = ""
        if self.total and 0 < done < self.total:
            left = f" · ~{duration(elapsed / done * (self.total - done))} left"
        tail = f" · {extra}" if extra else ""
        return f"[{self.label}] {done}/{self.total} {self.unit}{pct} · {duration(elapsed)} elapsed{left}{tail}"

    def update(self, done: int, extra: str = "") -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s or done == self.total:
            self._last = now
            print(self._line(done, extra), file=self.stream, flush=True)

    def done(self, extra: str = "") -> None:
        elapsed = time.monotonic() - self.t0
        tail = f" · {extra}" if extra else ""
        print(f"[{self.label}] done: {self.total} {self.unit} in {duration(elapsed)}{tail}", file=self.stream, flush=True)
