"""Benchmarks: `make bench` (python -m bench) prints one `BENCH <name> <value> <unit> target <op> <n>`
line per figure. They report; they never fail the build. Ratios are measured side by side in one run
(alternating sides, several repeats, medians) because the machine is shared and noisy.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings

# as the stages set it: library progress bars ("Loading weights") would bury the BENCH lines
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation chatter


def line(name: str, value: float, unit: str, op: str, target: float) -> str:
    text = f"BENCH {name} {value:.3g} {unit} target {op} {target:g}"
    print(text, flush=True)
    return text


def median_time(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def alternate(fa, fb, repeats: int = 5) -> tuple[float, float]:
    """Median seconds of fa and fb, run alternately so drift in machine load hits both sides alike."""
    ta, tb = [], []
    for _ in range(repeats):
        for fn, acc in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def observed_train_run(ctx, callback, seen=None) -> None:
    """One fresh run of the train stage as `tunebook run train` does it (runtime/train.py builds its
    trainer itself), with `callback` added to that trainer and `seen(trainer)` called once it is built;
    the stage's own output is silenced so the BENCH lines stay readable."""
    import contextlib
    import io
    import shutil

    from tunebook.runtime import train

    real = train.build_trainer

    def build_observed(*args, **kw):
        trainer = real(*args, **kw)
        trainer.add_callback(callback)
        if seen is not None:
            seen(trainer)
        return trainer

    shutil.rmtree(ctx.run_dir, ignore_errors=True)
    train.build_trainer = build_observed
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            train.run(ctx)
    finally:
        train.build_trainer = real
