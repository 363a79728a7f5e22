"""Progress lines a person reads: counts, percent, and durations in minutes, not raw seconds."""

from __future__ import annotations

import io

from tunebook.runtime.progress import Progress, duration


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (0, 44.6, 59.4, 60, 125, 3599, 3600, 3725, -3)] == [
        "0s", "45s", "59s", "1m 00s", "2m 05s", "59m 59s", "1h 00m", "1h 02m", "0s"]


def test_a_progress_line_gives_counts_percent_and_time_left(monkeypatch):
    clock = iter([0.0, 0.0, 250.0, 250.0])
    monkeypatch.setattr("tunebook.runtime.progress.time.monotonic", lambda: next(clock))
    out = io.StringIO()
    p = Progress("pretrain tiny", total=700, unit="steps", stream=out)
    p.update(350, "loss 0.9")
    line = out.getvalue().strip()
    # 350 of 700 in 250 s: 250 s more at the same pace
    assert line == "[pretrain tiny] 350/700 steps (50%) · 4m 10s elapsed · ~4m 10s left · loss 0.9"
