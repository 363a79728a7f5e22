"""Statistics by simulation: does a 95 % interval cover the true change, and does the forgetting verdict
stay quiet when nothing changed? Seeded, deterministic, ~30 s.

    python -m bench stats

paired_ci_min_coverage: the worst coverage of the paired interval over the audit's cases (issue 13):
0/1 scores at n = 13, 30, 100, 200 with rare flips (Tango score), skewed real-valued differences at
n = 30 (exponential: skewness 2; bootstrap-t) and normal differences at n = 5 (paired t). Each case runs
`delta_interval` on 2,000 simulated paired experiments with a known true change; the standard error of
one coverage figure is about 0.005.

forgetting_false_alarm_rate: the share of simulated runs, 10 general benchmarks with no true change
(400 items each, 0/1 scores, items flipping both ways), in which `catastrophic_forgetting` or
`mild_forgetting` fires, through the real compute and rules with the default thresholds. Per-row tests
alone flag at least one row in about 1 run of 3; the verdict adjusts across the suite (Holm).
"""

from __future__ import annotations

import numpy as np

from bench import line

SEED = 20261130
REPS = 2000
RUNS = 600
BENCHMARKS = 10
ITEMS = 400


def _coverage(rng: np.random.Generator, draw, truth: float, reps: int = REPS) -> float:
    from tunebook.reports.stats import delta_interval

    hits = 0
    for _ in range(reps):
        old, new = draw(rng)
        iv = delta_interval(float(old.mean()), float(new.mean()), old_samples=old, new_samples=new)
        hits += iv.known and iv.low <= truth <= iv.high
    return hits / reps


def _binary(n: int, p_right: float, lose: float, gain: float):
    """0/1 scores: right with p_right at base; a right item turns wrong with `lose`, a wrong one right with `gain`."""
    truth = (1 - p_right) * gain - p_right * lose

    def draw(rng):
        old = (rng.random(n) < p_right).astype(float)
        u = rng.random(n)
        new = np.where(old == 1, (u >= lose).astype(float), (u < gain).astype(float))
        return old, new

    return draw, truth


def cases():
    """(name, draw, true change) for every case of the audit."""
    out = []
    for n in (13, 30, 100, 200):
        for p_right, lose, gain in ((0.8, 0.02, 0.05), (0.7, 0.05, 0.0), (0.9, 0.01, 0.01), (0.5, 0.0, 0.03)):
            draw, truth = _binary(n, p_right, lose, gain)
            out.append((f"0/1 n={n} p={p_right} lose={lose} gain={gain}", draw, truth))

    def skewed(rng):  # per-item differences with skewness 2 (exponential, mean 1)
        old = rng.normal(size=30)
        return old, old + rng.exponential(size=30)

    def normal5(rng):
        old = rng.normal(size=5)
        return old, old + rng.normal(0.1, 1.0, size=5)

    out.append(("skewed real-valued n=30", skewed, 1.0))
    out.append(("normal n=5", normal5, 0.1))
    return out


def paired_coverage() -> None:
    rng = np.random.default_rng(SEED)
    results = [(name, _coverage(rng, draw, truth)) for name, draw, truth in cases()]
    worst = min(results, key=lambda r: r[1])
    print(f"# worst case: {worst[0]} ({worst[1]:.3f}); "
          + "; ".join(f"{name}: {c:.3f}" for name, c in results if c < 0.95), flush=True)
    line("paired_ci_min_coverage", worst[1], "x", ">=", 0.93)


def _unchanged_run(rng: np.random.Generator, run: int):
    from tunebook.reports.record import Record

    metrics = []
    for b in range(BENCHMARKS):
        p_right = 0.3 + 0.06 * b
        lose = 0.06
        gain = p_right * lose / (1 - p_right)  # as many expected gains as losses: no true change
        old = (rng.random(ITEMS) < p_right).astype(float)
        u = rng.random(ITEMS)
        new = np.where(old == 1, (u >= lose).astype(float), (u < gain).astype(float))
        for ck, s in (("base", old), ("final", new)):
            metrics.append({"suite": "general", "task": f"bench{b}", "metric": "acc", "checkpoint": ck,
                            "value": float(s.mean()), "samples": s.tolist()})
    return Record.model_validate({"experiment": f"null-{run}", "metrics": metrics})


def forgetting_false_alarms() -> None:
    from tunebook.reports.compute import compute
    from tunebook.reports.rules import run_rule

    rng = np.random.default_rng(SEED + 1)
    alarms = rows = 0
    for run in range(RUNS):
        record = _unchanged_run(rng, run)
        computed = compute(record)
        rows += any(r.interval.p < 0.05 and r.gain < 0 for r in computed.results)
        alarms += any(run_rule(name, record, computed) for name in ("catastrophic_forgetting", "mild_forgetting"))
    print(f"# {RUNS} runs of {BENCHMARKS} unchanged benchmarks x {ITEMS} items: at least one per-row significant "
          f"drop in {rows / RUNS:.3f} of runs; the suite's verdict (Holm) in {alarms / RUNS:.3f}", flush=True)
    line("forgetting_false_alarm_rate", alarms / RUNS, "x", "<=", 0.05)


def main() -> None:
    paired_coverage()
    forgetting_false_alarms()


if __name__ == "__main__":
    main()
