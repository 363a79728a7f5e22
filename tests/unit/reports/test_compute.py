"""Compute first: results at the final checkpoint, curves, planned vs actual, report tables."""

from __future__ import annotations

import pytest

from tunebook.reports.compute import (
    checkpoint_rows,
    compute,
    compute_many,
    data_manifest,
    dynamics,
    final_checkpoint,
    forgetting_table,
    runtime,
    sample_outputs,
)
from tunebook.reports.status import IMPROVED, NOISE, REGRESSED

from .conftest import make, metric


def test_quickstart_results(quickstart):
    c = compute(quickstart)
    assert (c.final_checkpoint, c.final_step) == ("final", 204)
    assert c.suites == ["target", "general", "loss"]
    rows = {r.label: r for r in c.results}
    target = rows["subtraction · accuracy"]
    assert (target.base, target.final, target.n) == (0.08, 0.62, 100)
    assert target.verdict.badge == IMPROVED and target.interval.method == "Tango score"
    assert rows["tiny_facts_color · acc"].verdict.badge == REGRESSED
    assert rows["tiny_facts_color · acc"].flips.lost == 22
    assert rows["tiny_facts_city · acc"].verdict.badge == NOISE
    loss = rows["subtraction_validation · loss"]
    assert loss.interval.method == "normal" and not loss.interval.paired and loss.gain > 0  # lower is better: a drop is a gain
    assert loss.relative == pytest.approx((0.4706 - 2.4113) / 2.4113)


def test_hand_written_record_has_unknown_intervals(seed000):
    c = compute(seed000)
    assert (c.final_checkpoint, c.final_step) == ("final", None)
    assert {r.interval.method for r in c.results} == {"unknown"}
    assert all(r.verdict.label == "CI unknown" for r in c.results)


def test_final_checkpoint_rules():
    listed = make(checkpoints=[{"name": "checkpoint-300", "step": 300}, {"name": "final", "step": 290, "is_final": True}])
    assert final_checkpoint(listed) == ("final", 290)
    highest = make(checkpoints=[{"name": "a", "step": 10}, {"name": "b", "step": 20}])
    assert final_checkpoint(highest) == ("b", 20)
    from_metrics = make(metrics=[metric("t", "base", 0.5), metric("t", "ck-7", 0.6, step=7)])
    assert final_checkpoint(from_metrics) == ("ck-7", 7)
    assert final_checkpoint(make()) == (None, None)


def test_results_fall_back_to_the_latest_evaluated_checkpoint():
    rec = make(checkpoints=[{"name": "checkpoint-100", "step": 100}, {"name": "checkpoint-290", "step": 290, "is_final": True}],
               metrics=[metric("t", "base", 0.5), metric("t", "checkpoint-100", 0.55)])
    (row,) = compute(rec).results
    assert row.checkpoint == "checkpoint-100" and row.step == 100


def test_same_task_at_two_sizes_makes_two_series():
    rec = make(metrics=[metric("mt", "base", 2.07, n=16), metric("mt", "final", 2.49, n=16),
                        metric("mt", "base", 2.85, n=80), metric("mt", "final", 2.73, n=80)])
    rows = compute(rec).results
    assert [r.label for r in rows] == ["mt · acc (n=16)", "mt · acc (n=80)"]
    assert [round(r.interval.delta, 4) for r in rows] == [0.42, -0.12]


def test_pairwise_win_rate_is_compared_with_parity():
    rec = make(metrics=[metric("blind_ab", "final", 0.77, suite="judge", metric="win_rate", n=100,
                               extra={"reference": "base"}),
                        metric("blind_ab", "final", 0.02, suite="judge", metric="unparseable_rate", n=100,
                               higher_is_better=False)])
    unparseable, win = compute(rec).results  # by series name
    assert win.reference == "parity" and win.base == 0.5 and win.interval.method == "Wilson"
    assert win.verdict.badge == IMPROVED and win.relative is None
    assert unparseable.reference == "none"  # not a comparison: no parity for it


def test_missing_baseline_is_a_status():
    (row,) = compute(make(metrics=[metric("t", "final", 0.6)])).results
    assert row.reference == "none" and row.interval is None and row.verdict.label == "no baseline"


def test_params_rows_mark_every_difference():
    rec = make(planned={"lr": 1e-5, "r": 8, "only_planned": 1, "anchor": None}, actual={"lr": 1.0e-5, "r": 16},
               data={"planned_sample_ratio": 0.25, "actual_sample_ratio": 0.2499,
                     "sources": [{"source": "a", "planned_weight": 0.8, "actual_weight": 0.5}]},
               training={"planned_steps": 870, "actual_steps": 5})
    rows = {p.key: p for p in compute(rec).params}
    assert rows["lr"].badge == "✅" and rows["r"].badge == "❌" and rows["only_planned"].state == "not recorded"
    assert "anchor" not in rows  # unset in the plan and absent from the run: nothing to compare
    assert rows["data.sample_ratio (achieved)"].state == "same"  # whole rows: 1 % tolerance
    assert rows["data.weight[a] (achieved)"].state == "differs"
    assert rows["training.steps"].source == "training" and rows["training.steps"].state == "differs"


def test_compute_many_equals_compute(quickstart, seed000):
    together = compute_many([quickstart, seed000])
    assert [r.verdict for r in together[0].results] == [r.verdict for r in compute(quickstart).results]
    assert [r.interval for r in together[1].results] == [r.interval for r in compute(seed000).results]
    assert together[0].curves.equals(compute(quickstart).curves)


def test_forgetting_table(quickstart):
    table = forgetting_table(quickstart, compute(quickstart))
    assert table["columns"] == ["tiny_facts_city · acc", "tiny_facts_color · acc"]
    assert [r["checkpoint"] for r in table["rows"]] == ["checkpoint-50", "checkpoint-100", "final"]
    final = table["rows"][-1]
    assert final["worst"] == "tiny_facts_color · acc"
    assert final["mean"].delta == pytest.approx((-0.016667 - 0.15) / 2, abs=1e-5)
    assert [c["verdict"].badge for c in final["cells"]] == [NOISE, REGRESSED]


def test_checkpoint_rows_carry_intervals(quickstart):
    rows = checkpoint_rows(quickstart, compute(quickstart), "target")
    assert [r["step"] for r in rows] == [50, 100, 204]
    assert all(r["interval"].method == "Tango score" for r in rows)


def test_dynamics_picks_quartiles_and_watchdog_steps():
    hist = [{"step": s, "values": {"loss": 10 - s / 100}} for s in range(0, 1001, 100)]
    rec = make(training={"history": hist, "watchdog": [{"step": 710, "rule": "ppo_ratio", "message": "21.75"}]})
    d = dynamics(rec)
    assert d["columns"] == ["loss"]
    assert [r["step"] for r in d["rows"]] == [0, 200, 500, 700, 1000]  # 250 ties go to the lower step
    assert d["rows"][3]["alerts"] == ["ppo_ratio"]
    assert dynamics(make()) == {"columns": [], "rows": [], "left_out": []}


def test_dynamics_leaves_out_one_off_summary_logs():
    hist = [{"step": s, "values": {"loss": 1 / s, "lr": 0.1}} for s in range(10, 101, 10)]
    hist.append({"step": 102, "values": {"train_runtime": 12.0, "train_loss": 0.2}})  # the trainer's summary
    d = dynamics(make(training={"history": hist}))
    assert d["columns"] == ["loss", "lr"] and d["rows"][-1]["step"] == 100


def test_dynamics_of_a_grpo_run_fit_on_a_screen():
    """Issue 12: GRPO's dynamics table had 33 columns. The ones a reader looks for come first; the rest
    are named below the table (history.json and dvclive keep every value)."""
    names = ["loss", "grad_norm", "learning_rate", "num_tokens", "reward", "reward_std", "frac_reward_zero_std", "kl",
             "entropy", "clip_ratio/region_mean", "policy_ratio/max", "policy_ratio/mean", "logprobs/mean"]
    names += [f"completions/{k}_length" for k in ("mean", "min", "max", "mean_terminated", "min_terminated", "max_terminated")]
    names += [f"rewards/{f}/{k}" for f in ("numeric_match", "format") for k in ("mean", "std")]
    names += [f"clip_ratio/{k}" for k in ("low_mean", "low_min", "high_mean", "high_max")]
    names += ["completions/clipped_ratio", "epoch", "step_time", "sampling/sampling_logp_difference/mean",
              "sampling/importance_sampling_ratio/min", "sampling/importance_sampling_ratio/max"]
    assert len(names) == 33
    d = dynamics(make(training={"history": [{"step": s, "values": {k: 0.5 for k in names}} for s in (1, 2, 3, 4)]}))
    assert d["columns"] == ["loss", "grad_norm", "reward", "reward_std", "frac_reward_zero_std", "kl", "entropy",
                            "clip_ratio/region_mean", "policy_ratio/max", "completions/mean_length"]
    assert len(d["left_out"]) == 23 and "num_tokens" in d["left_out"]


def test_runtime_breakdown(quickstart):
    t = runtime(quickstart)
    assert [r["name"] for r in t["rows"]] == ["evaluation", "training", "model_io", "data", "unaccounted"]
    assert t["total"] == 36.0 and t["steps_per_s"] == pytest.approx(204 / 8.93)
    assert runtime(make(timings={"training": 5.0}))["total"] == 5.0


def test_samples_right_and_wrong_from_the_evaluated_checkpoint(quickstart):
    (group,) = sample_outputs(quickstart, compute(quickstart), keep=2)
    assert group["checkpoint"] == "final"
    assert len(group["right"]) == 2 and len(group["wrong"]) == 2
    assert all(s.checkpoint == "final" for s in group["right"] + group["wrong"])


def test_data_manifest(quickstart, seed000):
    m = data_manifest(quickstart)
    assert m["rejected_rows"] == 12 and m["sources"][0]["sha256"].startswith("9f2c")
    assert m["contamination"] == [("subtraction_test", {"checked_rows": 100, "overlap_rows": 0})]
    assert data_manifest(make()) is None
    assert data_manifest(seed000)["sources"][0]["revision"] is None

