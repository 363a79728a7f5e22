"""Short progress lines with counts and time left, for the long stages (data, training, sweeps).

One line every few seconds at most, so logs stay readable under `dvc repro`:
    [train quickstart] 120/300 steps (40%) · 12s elapsed · ~18s left · loss 1.234
"""

from __future__ import annotations

import sys
import time


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
            left = f" · ~{elapsed / done * (self.total - done):.0f}s left"
        tail = f" · {extra}" if extra else ""
        return f"[{self.label}] {done}/{self.total} {self.unit}{pct} · {elapsed:.0f}s elapsed{left}{tail}"

    def update(self, done: int, extra: str = "") -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s or done == self.total:
            self._last = now
            print(self._line(done, extra), file=self.stream, flush=True)

    def done(self, extra: str = "") -> None:
        elapsed = time.monotonic() - self.t0
        tail = f" · {extra}" if extra else ""
        print(f"[{self.label}] done: {self.total} {self.unit} in {elapsed:.1f}s{tail}", file=self.stream, flush=True)
