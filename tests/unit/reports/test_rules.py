"""Every diagnostic rule: one record where it fires, one where it does not."""

from __future__ import annotations

import pytest

from tunebook.reports.compute import compute
from tunebook.reports.rules import RULES, rule, run_rules

from .conftest import binary, check, make, metric

FORGETTING = {"forgetting": {"warn": -0.01, "fail": -0.05}}
TEXT_TESTED: set[str] = set()  # rules whose sentences a test checks against the record (issue 13, item 16)


def texts(*names: str):
    """Mark a test as checking what these rules *say* (root cause, actions, evidence) against the record."""
    unknown = set(names) - set(RULES)
    assert not unknown, f"no such rule: {unknown}"
    TEXT_TESTED.update(names)
    return lambda fn: fn


def general(old: list[float], new: list[float], task: str = "arc", **kw) -> list[dict]:
    return [metric(task, "base", sum(old) / len(old), n=len(old), samples=old, **kw),
            metric(task, "final", sum(new) / len(new), n=len(new), samples=new, **kw)]


def target(base: float, final: float, n: int = 200, **kw) -> list[dict]:
    old, new = [1.0] * round(base * n) + [0.0] * (n - round(base * n)), [1.0] * round(final * n) + [0.0] * (n - round(final * n))
    return [metric("sub", "base", base, suite="target", metric="accuracy", n=n, samples=old, **kw),
            metric("sub", "final", final, suite="target", metric="accuracy", n=n, samples=new, **kw)]


def test_every_rule_has_a_docstring_and_a_test():
    names = {n for n in globals() if n.startswith("test_")}
    for name, fn in RULES.items():
        assert fn.__doc__, name
        assert f"test_{name}" in names, f"no test for rule {name}"


def test_docs_list_every_rule_with_its_docstring(root):
    docs = (root / "docs" / "reports.md").read_text()
    for name, fn in RULES.items():
        assert f"| `{name}` | {fn.__doc__.strip()} |" in docs, f"docs/reports.md: update the row of {name}"


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_is_in_the_docs_table_and_has_a_text_test(name, root):
    """A new rule fails here until docs/reports.md lists it and a test checks its sentences (item 16)."""
    table = (root / "docs" / "reports.md").read_text().split("## Diagnostic rules", 1)[1]
    assert f"| `{name}` |" in table, f"docs/reports.md: no row for rule {name} in the rules table"
    assert name in TEXT_TESTED, f"rule {name}: no test checks its text against the record (mark one with @texts)"


def test_rule_names_are_unique():
    with pytest.raises(ValueError):
        rule("mode_collapse")(lambda record, computed: None)


def test_findings_are_ordered_fail_first(seed000):
    findings = run_rules(seed000, compute(seed000))
    assert [f.name for f in findings] == ["config_drift", "catastrophic_forgetting", "no_eval_during_training",
                                          "unpinned_inputs"]


def test_catastrophic_forgetting():
    found, _ = check("catastrophic_forgetting", make(expect=FORGETTING, metrics=general(*binary(200, 160, flip=30))))
    assert found.severity == "fail" and "arc · acc" in found.title
    assert "30 items right→wrong" in found.evidence["arc · acc"]
    untested, _ = check("catastrophic_forgetting", make(expect=FORGETTING, metrics=[
        metric("mt", "base", 2.0357, n=80), metric("mt", "final", 1.4924, n=80)]))
    assert untested.severity == "warn" and "no interval" in untested.title
    assert check("catastrophic_forgetting", make(expect=FORGETTING, metrics=general(*binary(200, 160, flip=2))))[0] is None


def test_catastrophic_forgetting_suggests_an_earlier_checkpoint(quickstart):
    found, _ = check("catastrophic_forgetting", quickstart)
    assert found.actions[0].startswith("Consider an earlier checkpoint: checkpoint-100")
    assert "already evaluated" in found.actions[-1]  # every checkpoint was: do not ask for it again (item 16)


def test_mild_forgetting():
    found, _ = check("mild_forgetting", make(expect=FORGETTING, metrics=general(*binary(2000, 1600, flip=50))))
    assert found.severity == "warn" and "warn -0.01, fail -0.05" in found.evidence["arc · acc thresholds"]
    assert check("mild_forgetting", make(expect=FORGETTING, metrics=general(*binary(200, 160, flip=30))))[0] is None


def test_no_measurable_forgetting():
    found, _ = check("no_measurable_forgetting", make(expect=FORGETTING, metrics=general(*binary(200, 160, flip=2))))
    assert found.severity == "info" and "smallest change these n can detect" in found.evidence
    assert check("no_measurable_forgetting", make(expect=FORGETTING, metrics=general(*binary(200, 160, flip=30))))[0] is None
    # without intervals nothing can be claimed
    no_ci = make(metrics=[metric("mt", "base", 2.0), metric("mt", "final", 2.0)])
    assert check("no_measurable_forgetting", no_ci)[0] is None


def collapse_record(outputs: list[str], watchdog: list[dict] | None = None):
    samples = [{"task": "arc", "checkpoint": "final", "prompt": f"q{i}", "output": o, "correct": False}
               for i, o in enumerate(outputs)]
    return make(metrics=[metric("arc", "final", 0.0, suite="target")], samples=samples,
                training={"watchdog": watchdog or []})


def test_mode_collapse():
    found, _ = check("mode_collapse", collapse_record(["Reasoning: " + "4" * 50, "B because it rotates"]))
    assert found.severity == "fail" and "1 of 2" in found.evidence["arc: repetitive outputs"]
    same, _ = check("mode_collapse", collapse_record(["X"] * 5 + ["A"]))
    assert "5 of 6 outputs are 'X'" in same.evidence["arc: same output"]
    low_d2, _ = check("mode_collapse", collapse_record(["the answer is the answer is the"] * 4))
    assert "arc: distinct-2" in low_d2.evidence
    by_watchdog, _ = check("mode_collapse", collapse_record(
        ["A"], [{"step": 999, "rule": "mode_collapse", "message": "ppo ratio 21.75"}]))
    assert "watchdog at step 999" in by_watchdog.evidence
    healthy = collapse_record(["7 sweet cookies left", "41 - 36 = 5 birds", "C. they rotate", "Answer: 623"])
    assert check("mode_collapse", healthy)[0] is None


def test_watchdog_alerts():
    rec = make(training={"watchdog": [{"step": 50, "rule": "grad_norm_spike", "message": "grad norm 87"},
                                      {"step": 60, "rule": "mode_collapse", "message": "repeats"}]})
    found, _ = check("watchdog_alerts", rec)
    assert list(found.evidence) == ["step 50: grad_norm_spike"]  # the collapse alert belongs to mode_collapse
    assert check("watchdog_alerts", make(training={}))[0] is None


def test_config_drift(seed000):
    found, _ = check("config_drift", seed000)
    assert found.severity == "fail"
    assert found.evidence["data.sample_ratio"] == "planned 0.25, ran with 1.0"
    assert check("config_drift", make(planned={"lr": 1e-5}, actual={"lr": 1e-5}))[0] is None
    # step counts are dry_run_or_undertrained's to report, not drift
    assert check("config_drift", make(training={"planned_steps": 10, "actual_steps": 5}))[0] is None


def test_dry_run_or_undertrained():
    dry, _ = check("dry_run_or_undertrained", make(training={"dry_run": True, "max_steps": 5, "actual_steps": 5}))
    assert dry.severity == "fail" and "max_steps=5" in dry.evidence["steps"]
    died, _ = check("dry_run_or_undertrained", make(training={"planned_steps": 1000, "actual_steps": 400}))
    assert died.severity == "warn" and "400 of 1000" in died.evidence["steps"]
    wrong_ckpt = make(checkpoints=[{"name": "checkpoint-100", "step": 100}, {"name": "checkpoint-290", "step": 290, "is_final": True}],
                      metrics=[metric("ab", "base", 0.5), metric("ab", "checkpoint-100", 0.1)])
    found, _ = check("dry_run_or_undertrained", wrong_ckpt)
    assert "not the final checkpoint checkpoint-290" in found.evidence["evaluated checkpoint"]
    stopped = make(training={"planned_steps": 1000, "actual_steps": 400, "stopped_early": "patience 3 on general"})
    assert check("dry_run_or_undertrained", stopped)[0] is None


def test_max_steps_is_a_run_length_unless_it_cuts_the_epochs_short():
    """Issue 12: any max_steps opened the log with ❌ 'not the fully trained one'; in HF trainers
    max_steps is the ordinary way to set a run length."""
    hf_style = make(status="completed", planned={"method.max_steps": 300, "method.epochs": 1.0},
                    actual={"epochs_run": 2.5}, training={"max_steps": 300, "planned_steps": 300, "actual_steps": 300})
    assert run_rules(hf_style, compute(hf_style)) == []
    cut = make(status="dry_run", planned={"method.max_steps": 300, "method.epochs": 2.0}, actual={"epochs_run": 0.5},
               training={"dry_run": True, "max_steps": 300, "planned_steps": 300, "actual_steps": 300})
    found, _ = check("dry_run_or_undertrained", cut)
    assert found.severity == "warn" and found.title == "max_steps ended training before the planned epochs"
    assert found.evidence == {"max_steps": "max_steps=300 ended training after 0.5 of the 2 planned epoch(s), at step 300"}
    assert [f.name for f in run_rules(cut, compute(cut))] == ["dry_run_or_undertrained"]  # said once


def test_loss_fell_task_flat():
    hist = [{"step": 0, "values": {"loss": 0.0457}}, {"step": 7999, "values": {"loss": 0.0099}}]
    found, _ = check("loss_fell_task_flat", make(training={"history": hist},
                                                 metrics=target(0.05, 0.0523, extra={"extraction_failure_rate": 0.3})))
    assert "0.0457 at step 0 → 0.0099 at step 7999" in found.evidence["training loss"]
    assert found.evidence["sub · accuracy extraction failures"] == "30.0%"
    assert check("loss_fell_task_flat", make(training={"history": hist}, metrics=target(0.05, 0.5)))[0] is None


def test_reward_saturation():
    found, _ = check("reward_saturation", make(metrics=target(0.6, 0.995)))
    assert "0.9950" in found.evidence["sub · accuracy"]
    hist = [{"step": s, "values": {"reward": 1.0, "reward_std": 0.0}} for s in range(0, 1000, 50)]
    pinned, _ = check("reward_saturation", make(training={"history": hist}))
    assert "pinned at 1" in pinned.evidence["reward (last quarter)"]
    assert "every rollout scored the same" in pinned.evidence["reward_std (last quarter)"]
    share = [{"step": s, "values": {"frac_reward_zero_std": 0.95}} for s in range(0, 1000, 50)]
    assert check("reward_saturation", make(training={"history": share}))[0] is None  # grpo_no_signal says it
    moving = [{"step": s, "values": {"reward": s / 1000, "reward_std": 0.3, "frac_reward_zero_std": 0.0}}
              for s in range(0, 1000, 50)]
    assert check("reward_saturation", make(training={"history": moving}, metrics=target(0.3, 0.6)))[0] is None


def test_grpo_no_signal():
    """Issue 12: a GRPO run with zero reward variance in every group (no learning signal) was not flagged:
    four logged steps are too few for reward_saturation's last quarter."""
    flat = [{"step": s, "values": {"reward": 0.0, "reward_std": 0.0, "frac_reward_zero_std": 1.0}} for s in (1, 2, 3, 4)]
    found, _ = check("grpo_no_signal", make(training={"history": flat}))
    assert found.severity == "fail" and found.title == "No learning signal: every GRPO group's rewards were equal"
    assert "1.0 at every one of 4 logged steps (steps 1–4)" in found.evidence["frac_reward_zero_std"]
    assert found.evidence["reward"] == "0 to 0 over the run"
    mostly = [{"step": s, "values": {"frac_reward_zero_std": v}} for s, v in ((1, 1.0), (2, 0.875), (3, 1.0), (4, 0.875))]
    found, _ = check("grpo_no_signal", make(training={"history": mostly}))
    assert found.severity == "warn" and "94% of GRPO groups" in found.title
    learning = [{"step": s, "values": {"frac_reward_zero_std": 0.25}} for s in (1, 2, 3, 4)]
    assert check("grpo_no_signal", make(training={"history": learning}))[0] is None
    assert check("grpo_no_signal", make(training={"history": [{"step": 1, "values": {"loss": 1.0}}]}))[0] is None


def quarantined(rejected: int, read: int):
    return make(data={"sources": [{"source": "d.jsonl", "rows_read": read, "rejected": rejected}], "rejected_rows": rejected,
                      "quarantine": "data/exp/quarantine.jsonl"})


def test_rows_quarantined():
    """Issue 12: 49 of 161 rows quarantined appeared only as a manifest line, not in the Summary."""
    found, _ = check("rows_quarantined", quarantined(49, 161))
    assert found.title == "49 data rows quarantined (30% of those read)" and found.severity == "warn"
    assert found.evidence["quarantined"] == "49 of 161 rows read (30.4%), kept in data/exp/quarantine.jsonl with their reasons"
    assert found.evidence["data d.jsonl"] == "49 of 161 rows rejected"
    assert check("rows_quarantined", quarantined(11, 10_000))[0] is not None  # more than 10 rows, whatever the share
    assert check("rows_quarantined", quarantined(4, 1000))[0] is None
    assert check("rows_quarantined", quarantined(0, 50))[0] is None


def test_validation_is_test():
    """Issue 12: the quickstart's validation file was its test file and nothing said so."""
    same = {"validation vs target:subtraction": {"source": "data/tiny/subtraction_test.jsonl", "n": 40, "exact": 40,
                                                 "normalized": 40, "same_file": True},
            "validation vs target:facts": {"source": "facts.jsonl", "n": 20, "exact": 0, "normalized": 0, "same_file": False}}
    found, _ = check("validation_is_test", make(data={"contamination": same}))
    assert found.title == "The validation set is the test set of subtraction" and found.severity == "info"
    assert found.evidence == {"subtraction": "validation reads data/tiny/subtraction_test.jsonl, the test set of subtraction"}
    stopping = make(data={"contamination": same}, planned={"method.early_stopping.on": "loss"})
    assert check("validation_is_test", stopping)[0].severity == "warn"
    overlap = {"validation vs target:sub": {"source": "t.jsonl", "n": 40, "exact": 2, "normalized": 3, "same_file": False}}
    found, _ = check("validation_is_test", make(data={"contamination": overlap}))
    assert found.evidence["sub"] == "3 of 40 test prompts of sub are also validation prompts"
    apart = {"validation vs target:sub": {**overlap["validation vs target:sub"], "exact": 0, "normalized": 0}}
    assert check("validation_is_test", make(data={"contamination": apart}))[0] is None


@texts("extraction_failures")
def test_extraction_failures():
    found, _ = check("extraction_failures", make(metrics=target(0.0, 0.035, extra={"extraction_failure_rate": 0.4, "extract": "mcq_first_letter"})))
    assert "40.0% of answers not extracted with mcq_first_letter" in found.evidence["sub · accuracy"]
    assert check("extraction_failures", make(metrics=target(0.1, 0.5, extra={"extraction_failure_rate": 0.04})))[0] is None


def test_baseline_missing():
    found, _ = check("baseline_missing", make(metrics=[metric("gsm8k", "final", 0.0523, suite="target")]))
    assert "gsm8k · acc" in found.title
    assert check("baseline_missing", make(metrics=target(0.1, 0.5)))[0] is None
    # a judge's unparseable rate has no baseline by nature
    assert check("baseline_missing", make(metrics=[metric("ab", "final", 0.02, suite="judge")]))[0] is None


def test_no_eval_during_training(seed000):
    found, _ = check("no_eval_during_training", seed000)
    assert "it had no evaluations to act on" in found.evidence["early stopping planned"]
    # item 15: a training block that does not say is unknown, not false
    unknown = make(training={"method": "sft"}, metrics=[metric("t", "base", 0.5), metric("t", "final", 0.5)])
    assert unknown.training.evaluated_during_training is None
    assert check("no_eval_during_training", unknown)[0] is None
    # a sweep over saved checkpoints after training is enough
    swept = make(training={}, metrics=[metric("t", "base", 0.5), metric("t", "c1", 0.5, step=1), metric("t", "c2", 0.5, step=2)])
    assert check("no_eval_during_training", swept)[0] is None


def test_eval_set_too_small():
    old, new = [1.0] * 3 + [0.0] * 10, [1.0] * 10 + [0.0] * 3
    found, _ = check("eval_set_too_small", make(metrics=general(old, new)))
    assert "n=13" in found.evidence["arc · acc"] and "Tango score" in found.evidence["arc · acc"]
    assert check("eval_set_too_small", make(metrics=general(*binary(80, 40))))[0] is None
    # item 14: the 30-item set the text cites is called out
    assert "n=30" in check("eval_set_too_small", make(metrics=general(*binary(30, 20))))[0].evidence["arc · acc"]
    assert check("eval_set_too_small", make(metrics=general(*binary(31, 20))))[0] is None


def test_eval_set_too_small_items_needed_from_the_interval_item13():
    # seed 004: 10 wins of 13 against the base: "about 8 items" before; Wilson needs 14
    rec = make(metrics=[metric("ab", "final", 10 / 13, suite="judge", metric="win_rate", n=13,
                               extra={"reference": "base"})])
    text = check("eval_set_too_small", rec)[0].evidence["ab · win_rate"]
    assert "about 14 items would resolve a change of +0.2692" in text
    assert "±" not in text and "CI [-0.002564, +0.4182]" in text  # asymmetric: no ± wording


def test_subset_vs_full_disagree():
    rec = make(metrics=[metric("mt", "base", 2.0744, n=16), metric("mt", "final", 2.4899, n=16),
                        metric("mt", "base", 2.8469, n=80), metric("mt", "final", 2.7252, n=80)])
    found, _ = check("subset_vs_full_disagree", rec)
    assert set(found.evidence) == {"mt · acc (n=16)", "mt · acc (n=80)"}
    agree = make(metrics=[metric("mt", "base", 2.0, n=16), metric("mt", "final", 2.4, n=16),
                          metric("mt", "base", 2.8, n=80), metric("mt", "final", 2.9, n=80)])
    assert check("subset_vs_full_disagree", agree)[0] is None


def judge_metric(**extra) -> dict:
    return metric("blind_ab", "final", 0.6, suite="judge", metric="win_rate", n=40, extra={"reference": "base", **extra})


def test_judge_position_bias():
    verdicts = ["model"] * 20 + ["base"] * 20
    swapped = ["model"] * 10 + ["base"] * 30
    found, _ = check("judge_position_bias", make(metrics=[judge_metric(verdicts=verdicts, verdicts_swapped=swapped)]))
    assert "30 of 40 comparisons (75%), Cohen's kappa 0.50" in found.evidence["blind_ab · win_rate"]
    summary, _ = check("judge_position_bias", make(metrics=[judge_metric(position_consistency=0.6)]))
    assert "60%" in summary.evidence["blind_ab · win_rate"]
    assert check("judge_position_bias", make(metrics=[judge_metric(position_consistency=0.95)]))[0] is None
    assert check("judge_position_bias", make(metrics=[judge_metric()]))[0] is None
    # item 17: labels naming a slot ("A"/"B") point at the other answer after the swap; a judge that always
    # names the same answer is consistent, one that always says "A" favours the first position
    same_answer = check("judge_position_bias", make(metrics=[judge_metric(verdicts=["A"] * 10, verdicts_swapped=["B"] * 10)]))
    assert same_answer[0] is None
    first_slot, _ = check("judge_position_bias", make(metrics=[judge_metric(verdicts=["A"] * 10, verdicts_swapped=["A"] * 10)]))
    assert "0 of 10 comparisons (0%)" in first_slot.evidence["blind_ab · win_rate"]


def test_target_gain_missed():
    found, _ = check("target_gain_missed", make(expect={"target_gain": 0.05}, metrics=target(0.5, 0.52)))
    assert "+0.05" in found.title
    assert check("target_gain_missed", make(expect={"target_gain": 0.05}, metrics=target(0.1, 0.5)))[0] is None


def test_unpinned_inputs(seed000, quickstart):
    found, _ = check("unpinned_inputs", seed000)
    assert set(found.evidence) == {"model", "data hf:t-tech/T-Wix"}
    assert check("unpinned_inputs", quickstart)[0] is None
    branch = {"source": "hf:org/set", "revision": "main", "resolved_revision": "a" * 40, "pin": "not pinned in spec"}
    found, _ = check("unpinned_inputs", make(model={"base": "x", "revision": "b" * 40}, data={"sources": [branch]}))
    assert "'main', a branch or tag" in found.evidence["data hf:org/set"] and "a" * 40 in found.evidence["data hf:org/set"]
    pinned = {**branch, "revision": "a" * 40, "pin": "pinned in spec"}
    assert check("unpinned_inputs", make(model={"base": "x", "revision": "b" * 40}, data={"sources": [pinned]}))[0] is None


def test_data_differs_from_dvc():
    edited = {"source": "data/train.jsonl", "sha256": "c" * 64, "dvc": {"file": "data/train.jsonl.dvc", "md5": "d" * 32, "matches": False}}
    found, _ = check("data_differs_from_dvc", make(data={"sources": [edited]}))
    assert found.severity == "warn" and "data/train.jsonl.dvc" in found.evidence["data data/train.jsonl"]
    assert "dvc add" in found.actions[0]
    clean = {**edited, "dvc": {**edited["dvc"], "matches": True}}
    assert check("data_differs_from_dvc", make(data={"sources": [clean]}))[0] is None
    assert check("data_differs_from_dvc", make(data={"sources": [{"source": "x.jsonl", "sha256": "e" * 64}]}))[0] is None


def test_reward_model_untrained():
    def reward(extra):
        return [metric("mtbench", c, 0.1, suite="reward", metric="mean_reward", n=4, extra={"model": "builtin:tiny", **extra})
                for c in ("base", "final")]
    found, _ = check("reward_model_untrained", make(metrics=reward({"untrained_weights": ["score.weight"]})))
    assert found.severity == "warn" and found.evidence["model"] == "builtin:tiny"
    assert "score.weight" in found.evidence["mtbench · final"]
    assert check("reward_model_untrained", make(metrics=reward({})))[0] is None


def test_forgetting_verdict_is_holm_adjusted_across_the_suite_item7():
    # ten benchmarks; one has p ~ 0.02 per row (significant alone), not after Holm across ten
    metrics = []
    for i in range(10):
        old, new = binary(400, 300, flip=12 if i == 0 else 3)
        new = new[:]  # regain some items so most rows stay near zero
        for j in range(3):
            new[300 + j] = 1.0
        metrics += general(old, new, task=f"b{i}")
    rec = make(expect={"forgetting": {"warn": -0.01, "fail": -0.02}}, metrics=metrics)
    c = compute(rec)
    row = next(r for r in c.results if r.task == "b0")
    assert row.interval.p < 0.05 and row.family_p >= 0.05
    assert check("catastrophic_forgetting", rec)[0] is None and check("mild_forgetting", rec)[0] is None
    found, _ = check("no_measurable_forgetting", rec)
    assert "Holm" in found.evidence["family"]


def test_no_catastrophe_without_a_threshold_in_its_units_item8():
    # n = 10^6 items, -0.002: significant, below the practical floor: no forgetting verdict (was catastrophic)
    n = 1_000_000
    rec = make(metrics=[metric("big", "base", 0.8, n=n, stderr=0.0004), metric("big", "final", 0.798, n=n, stderr=0.0004)])
    assert check("catastrophic_forgetting", rec)[0] is None and check("mild_forgetting", rec)[0] is None
    assert compute(rec).results[0].verdict.badge == "➖"


@texts("catastrophic_forgetting", "mild_forgetting")
def test_forgetting_root_cause_matches_the_records_anchor_item16():
    with_anchor = make(expect=FORGETTING, planned={"method.anchor.type": "kl", "method.anchor.coef": 0.03},
                       metrics=general(*binary(200, 160, flip=30)))
    found, _ = check("catastrophic_forgetting", with_anchor)
    assert "no anchor" not in found.root_cause and "the run had an anchor (coef 0.03, type kl)" in found.root_cause
    assert any(a.startswith("Strengthen the anchor to the base model (coef 0.03, type kl)") for a in found.actions)
    without, _ = check("catastrophic_forgetting", make(expect=FORGETTING, metrics=general(*binary(200, 160, flip=30))))
    assert "no anchor to the base model" in without.root_cause
    assert "Evaluate every saved checkpoint" in without.actions[-1]  # one checkpoint evaluated here
    mild, _ = check("mild_forgetting", make(expect=FORGETTING, planned={"method.anchor.type": "kl"},
                                            metrics=general(*binary(2000, 1600, flip=50))))
    assert "without an anchor" not in mild.root_cause and "anchor (type kl)" in mild.root_cause


def test_mode_collapse_from_training_dynamics_item20():
    hist = [{"step": s, "values": {"policy_ratio/max": 1.1 if s < 900 else 21.75, "logprobs/mean": -0.8 if s < 900 else -41.0,
                                   "entropy": 2.0 if s < 900 else 0.05}} for s in range(0, 1000, 100)]
    rec = make(training={"history": hist}, metrics=[metric("arc", "final", 0.0, suite="target")])
    found, _ = check("mode_collapse", rec)
    assert "no kept output shows it" in found.title
    assert "reached 21.75 at step 900" in found.evidence["training history: policy_ratio/max"]
    assert "fell from -0.8 at step 0 to -41" in found.evidence["training history: logprobs/mean"]
    assert "training history: entropy" in found.evidence
    normalized = [{"step": s, "values": {"reward_normalized": -0.1 if s < 500 else -5.0}} for s in range(0, 1000, 100)]
    assert "training history: reward_normalized" in check("mode_collapse", make(training={"history": normalized}))[0].evidence
    healthy = [{"step": s, "values": {"policy_ratio/max": 1.2, "logprobs/mean": -0.9, "entropy": 1.8, "kl": 0.02}}
               for s in range(0, 1000, 100)]
    assert check("mode_collapse", make(training={"history": healthy}))[0] is None


@texts("below_reference")
def test_below_reference():
    # item 18: a paper claims 0.75; the run reaches 0.60 on 400 items (stderr 0.0245): far below, outside its interval
    rec = make(metrics=[metric("gsm8k", "final", 0.60, suite="target", n=400, stderr=0.0245, reference_value=0.75,
                               reference_source="paper, table 2")])
    found, _ = check("below_reference", rec)
    text = found.evidence["gsm8k · acc"]
    assert "vs reference 0.7500 (paper, table 2)" in text and "-0.1500" in text and "outside the value's 95% interval" in text
    close = make(metrics=[metric("gsm8k", "final", 0.74, suite="target", n=400, stderr=0.02, reference_value=0.75)])
    assert check("below_reference", close)[0] is None


def test_loss_fell_task_flat_without_a_baseline_item21():
    hist = [{"step": 0, "values": {"loss": 2.0}}, {"step": 1000, "values": {"loss": 0.5}}]
    by_reference = make(training={"history": hist}, metrics=[
        metric("gsm8k", "final", 0.05, suite="target", n=200, reference_value=0.40, reference_source="paper")])
    found, _ = check("loss_fell_task_flat", by_reference)
    assert "no baseline; reference 0.4000 (paper)" in found.evidence["gsm8k · acc"]
    old, new = binary(200, 10)[0], binary(200, 11)[0]
    by_curve = make(training={"history": hist}, checkpoints=[{"name": "c1", "step": 100}, {"name": "final", "step": 1000, "is_final": True}],
                    metrics=[metric("gsm8k", "c1", 0.05, suite="target", samples=old),
                             metric("gsm8k", "final", 0.055, suite="target", samples=new)])
    found, _ = check("loss_fell_task_flat", by_curve)
    assert "0.0500 at c1 → 0.0550 at final" in found.evidence["gsm8k · acc"] and "not significant" in found.evidence["gsm8k · acc"]


@texts("mode_collapse", "loss_fell_task_flat", "reward_saturation")
def test_rule_texts_say_only_what_the_record_shows_item16():
    hist = [{"step": s, "values": {"policy_ratio/max": 1.1 if s < 900 else 21.75}} for s in range(0, 1000, 100)]
    with_beta = make(planned={"method.beta": 0.04}, training={"history": hist})
    found, _ = check("mode_collapse", with_beta)
    assert "already had a KL term (beta 0.04)" in found.actions[1] and "watchdog" not in found.actions[0]
    bare, _ = check("mode_collapse", make(training={"history": hist}))
    assert "a KL penalty (beta > 0)" in bare.actions[1]
    # "the wrong samples below" only when the log shows some
    loss = [{"step": 0, "values": {"loss": 2.0}}, {"step": 100, "values": {"loss": 0.5}}]
    no_samples, _ = check("loss_fell_task_flat", make(training={"history": loss}, metrics=target(0.05, 0.0523)))
    assert no_samples.actions[0].startswith("Keep a few wrong outputs in the record")
    wrong = [{"task": "sub", "checkpoint": "final", "prompt": "1-1", "output": "2", "correct": False}]
    shown, _ = check("loss_fell_task_flat", make(training={"history": loss}, metrics=target(0.05, 0.0523), samples=wrong))
    assert shown.actions[0].startswith("Read the wrong samples below")
    # a saturated 0/1 target in SFT is not explained by GRPO's advantages
    sft, _ = check("reward_saturation", make(training={"method": "sft"}, metrics=target(0.6, 0.995)))
    assert "GRPO" not in sft.root_cause


# ---------------------------------------------------------------------------------------------------
# issue 13, item 16: what each remaining rule *says*, checked against the record it read, with variants
# in the very detail each sentence talks about


def everything(found) -> str:
    """All the words a finding prints: title, evidence, root cause and actions."""
    return " | ".join([found.title, *map(str, found.evidence.values()), found.root_cause, *found.actions])


@texts("dry_run_or_undertrained")
def test_dry_run_or_undertrained_says_what_the_record_shows():
    # marked dry by hand, without max_steps: nothing may blame max_steps
    found, _ = check("dry_run_or_undertrained", make(status="dry_run"))
    assert found.title == "A shortened (dry) run" and "max_steps" not in found.evidence
    assert found.evidence["dry run"] == "the record is marked as a shortened (dry) run; it does not record max_steps or the epochs run"
    assert "max_steps ended" not in everything(found)
    # with max_steps recorded, the same mark names it
    capped, _ = check("dry_run_or_undertrained", make(status="dry_run", training={"max_steps": 300}))
    assert capped.evidence["max_steps"].endswith("max_steps=300 ended training before its planned epochs")
    # a smoke-sized run: the cap only when there was one
    smoke, _ = check("dry_run_or_undertrained", make(training={"actual_steps": 5, "max_steps": 5}))
    assert smoke.evidence["steps"] == "only 5 optimizer steps (max_steps=5): a smoke test, not training"
    uncapped, _ = check("dry_run_or_undertrained", make(training={"actual_steps": 12}))
    assert uncapped.evidence["steps"] == "only 12 optimizer steps: a smoke test, not training"
    died, _ = check("dry_run_or_undertrained", make(training={"planned_steps": 1000, "actual_steps": 400}))
    assert died.evidence["steps"] == "400 of 1000 planned steps, with no early-stopping reason"
    assert died.actions[0].startswith("Rerun training to completion")
    # only the evaluated checkpoint is wrong: training is not said to be short, nor to need a rerun
    wrong = make(checkpoints=[{"name": "checkpoint-100", "step": 100}, {"name": "checkpoint-290", "step": 290, "is_final": True}],
                 training={"planned_steps": 290, "actual_steps": 290},
                 metrics=[metric("ab", "base", 0.5), metric("ab", "checkpoint-100", 0.1)])
    found, _ = check("dry_run_or_undertrained", wrong)
    assert found.evidence == {"evaluated checkpoint": "results come from checkpoint-100, not the final checkpoint checkpoint-290"}
    assert found.actions[0].startswith("Evaluate the final checkpoint checkpoint-290")
    assert "Rerun training" not in everything(found) and "dry run" not in found.root_cause


@texts("grpo_no_signal")
def test_grpo_no_signal_numbers_match_the_history():
    # 1, 1, 1, 0.98: not every group, so never "100%"
    nearly = [{"step": s, "values": {"frac_reward_zero_std": v}} for s, v in ((1, 1.0), (2, 1.0), (3, 1.0), (4, 0.98))]
    found, _ = check("grpo_no_signal", make(training={"history": nearly}))
    assert found.title == "Little learning signal: 99.5% of GRPO groups had equal rewards"
    assert found.evidence == {"frac_reward_zero_std": "99.5% of groups on average over 4 logged steps (steps 1–4)"}
    assert "100%" not in everything(found)  # no reward logged: no reward line either
    one = [{"step": 7, "values": {"frac_reward_zero_std": 1.0, "reward": 0.25}}]
    found, _ = check("grpo_no_signal", make(training={"history": one}))
    assert "1.0 at every one of 1 logged steps (step 7)" in found.evidence["frac_reward_zero_std"]
    assert found.evidence["reward"] == "0.25 to 0.25 over the run"


@texts("grpo_no_signal")
def test_grpo_no_signal_puts_an_sft_warm_up_first_when_the_base_scores_near_zero():
    """examples/smollm2's arith-grpo: the base model never answered with the number, every group scored 0,
    and more or hotter samples found no right answer either; GRPO from an SFT run's adapter is the remedy."""
    flat = [{"step": s, "values": {"reward": 0.0, "frac_reward_zero_std": 1.0}} for s in (5, 10)]
    found, _ = check("grpo_no_signal", make(training={"history": flat}, metrics=target(0.0, 0.0)))
    assert found.actions[0].startswith("Warm the model up with SFT first")
    assert "`model.base: runs/<sft-exp>/train/final`" in found.actions[0]
    assert "The base scores 0 on sub · accuracy" in found.actions[0]
    assert found.evidence["sub · accuracy at the start"] == "0: the model being trained almost never answers right"
    assert found.actions[2] == "Make completions differ: raise grpo.temperature or grpo.num_generations."
    for metrics in (target(0.4, 0.4), []):  # a base that answers some (or no target at all): temperature first, as before
        found, _ = check("grpo_no_signal", make(training={"history": flat}, metrics=metrics))
        assert "SFT" not in everything(found) and found.actions[1].startswith("Make completions differ")
    found, _ = check("grpo_no_signal", make(training={"history": flat}, metrics=target(0.05, 0.05)))
    assert "The base scores 0.05 on sub · accuracy" in found.actions[0]  # 10 of 200: near zero still


@texts("rows_quarantined")
def test_rows_quarantined_numbers_and_actions_match_the_manifest():
    # 11 of 10,000 fires on the count; its share is 0.1 %, not "0%"
    found, _ = check("rows_quarantined", quarantined(11, 10_000))
    assert found.title == "11 data rows quarantined (0.1% of those read)"
    assert found.actions[0] == "Read the quarantine file (data/exp/quarantine.jsonl): every row carries the reason it was rejected."
    # a source that does not say how many rows it read: no share, no "of None"
    partial = make(data={"sources": [{"source": "a.jsonl", "rejected": 11}, {"source": "b.jsonl", "rows_read": 100}],
                         "rejected_rows": 11})
    found, _ = check("rows_quarantined", partial)
    assert found.title == "11 data rows quarantined" and found.evidence["quarantined"] == "11"
    assert found.evidence["data a.jsonl"] == "11 rows rejected (rows read not recorded)"
    assert "None" not in everything(found)
    assert found.actions[0].startswith("The record names no quarantine file")
    assert "set standardize: true" in found.actions[1]
    # standardize already on: not suggested again
    on = make(planned={"data.standardize": True}, data={"sources": [{"source": "a.jsonl", "rows_read": 100, "rejected": 20}],
                                                       "rejected_rows": 20, "converted_rows": 3})
    found, _ = check("rows_quarantined", on)
    assert "set standardize: true" not in everything(found) and "standardize was already on" in found.actions[1]


@texts("validation_is_test")
def test_validation_is_test_says_early_stopping_only_when_planned():
    same = {"validation vs target:sub": {"source": "data/sub_test.jsonl", "n": 40, "exact": 40, "normalized": 40, "same_file": True}}
    found, _ = check("validation_is_test", make(data={"contamination": same}))
    assert "stops early" not in found.root_cause and found.severity == "info"
    on_general, _ = check("validation_is_test", make(data={"contamination": same}, planned={"method.early_stopping.on": "general"}))
    assert "stops early" not in on_general.root_cause and on_general.severity == "info"
    on_loss, _ = check("validation_is_test", make(data={"contamination": same}, planned={"method.early_stopping.on": "loss"}))
    assert on_loss.root_cause.endswith("This run stops early on the validation loss.") and on_loss.severity == "warn"
    no_n = {"validation vs target:sub": {"source": "t.jsonl", "exact": 2, "normalized": 3, "same_file": False}}
    found, _ = check("validation_is_test", make(data={"contamination": no_n}))
    assert found.title == "Validation overlaps the test set of sub"
    assert found.evidence == {"sub": "3 test prompts of sub are also validation prompts"}
    assert found.actions[0].startswith("Hold validation out of the training data")
    # validation already split off the training rows: not asked for again, the training data holds the prompts
    split, _ = check("validation_is_test", make(data={"contamination": no_n}, planned={"data.validation_split": 0.1}))
    assert split.actions[0].startswith("Validation is already held out of the training data (data.validation_split)")


@texts("watchdog_alerts")
def test_watchdog_alerts_count_and_resume_point_match_the_record():
    two = [{"step": 50, "rule": "grad_norm_spike", "message": "grad norm 87"},
           {"step": 50, "rule": "grad_norm_spike", "message": "grad norm 91"},
           {"step": 80, "rule": "loss_spike", "message": "loss 9.1"}]
    found, _ = check("watchdog_alerts", make(training={"watchdog": two}))
    assert found.title == "Training watchdog fired 3 time(s)"
    assert found.evidence == {"step 50: grad_norm_spike": "grad norm 87; grad norm 91", "step 80: loss_spike": "loss 9.1"}
    assert found.actions[0] == "Look at the training dynamics around step 50, the first alert's."
    assert found.actions[1].startswith("No checkpoint in the record was saved before step 50")
    saved = make(training={"watchdog": two}, checkpoints=[{"name": "checkpoint-40", "step": 40}, {"name": "checkpoint-60", "step": 60},
                                                           {"name": "final", "step": 100, "is_final": True}])
    found, _ = check("watchdog_alerts", saved)
    assert found.actions[1].startswith("Resume from checkpoint-40 (step 40), the last checkpoint before step 50")


@texts("config_drift")
def test_config_drift_names_what_drifted(seed000):
    found, _ = check("config_drift", seed000)
    assert found.title.startswith("The run did not follow the plan: data.sample_ratio") and "method." not in found.title
    assert any("data manifest" in a for a in found.actions)  # a data ratio drifted: check the manifest
    lr = make(planned={"method.lr": 1e-5, "method.epochs": 3}, actual={"method.lr": 5e-5, "method.epochs": 3})
    found, _ = check("config_drift", lr)
    assert found.title == "The run did not follow the plan: method.lr"
    assert found.evidence == {"method.lr": "planned 1e-05, ran with 5e-05"}
    assert "data manifest" not in everything(found)  # the data did not drift


@texts("baseline_missing")
def test_baseline_missing_names_the_value_and_checkpoint():
    rec = make(metrics=[metric("gsm8k", "checkpoint-290", 0.0523, suite="target"), metric("arc", "base", 0.5), metric("arc", "final", 0.5)])
    found, _ = check("baseline_missing", rec)
    assert found.title == "No baseline for gsm8k · acc"  # arc has one
    assert found.evidence == {"gsm8k · acc": "0.0523 at checkpoint-290, no 'base' value"}


@texts("no_eval_during_training")
def test_no_eval_during_training_actions_follow_the_checkpoints_saved(seed000):
    found, _ = check("no_eval_during_training", seed000)
    assert "saved checkpoints" not in found.evidence and "saving planned" not in found.evidence
    assert not seed000.checkpoints and found.actions[1].endswith("(the record does not say how many were saved).")
    one = make(training={"evaluated_during_training": False}, checkpoints=[{"name": "final", "step": 9, "is_final": True}],
               metrics=[metric("t", "final", 0.5)])
    assert check("no_eval_during_training", one)[0].actions[1].endswith(
        "at least four points (the record lists 1 checkpoint and does not say how many were saved).")
    five = make(training={"evaluated_during_training": False}, checkpoints=[{"name": f"c{i}", "step": i} for i in range(1, 6)],
                metrics=[metric("t", "base", 0.5), metric("t", "c5", 0.5)])
    found, _ = check("no_eval_during_training", five)
    assert found.evidence["evaluated checkpoints"] == "c5"
    assert found.evidence["listed in the record, not evaluated"] == "c1, c2, c3, c4"
    assert found.actions[1] == "The record lists 5 checkpoints: enough for a curve, they only need evaluating."
    assert "save_every" not in everything(found)
    # early stopping switched off in the plan is not "early stopping planned"
    off = make(training={"evaluated_during_training": False}, planned={"method.early_stopping": None},
               metrics=[metric("t", "final", 0.5)])
    found, _ = check("no_eval_during_training", off)
    assert "early stopping planned" not in found.evidence and found.root_cause.startswith("With one evaluation at the end")
    assert "early stopping" not in found.root_cause
    nothing = make(training={"evaluated_during_training": False}, metrics=[metric("t", "base", 0.5)])
    found, _ = check("no_eval_during_training", nothing)
    assert found.evidence["evaluated checkpoints"] == "none" and found.root_cause.startswith("With no trained checkpoint evaluated")


@texts("no_eval_during_training")
def test_no_eval_during_training_counts_saved_checkpoints_from_the_plan_issue15():
    """A runtime record lists only the evaluated checkpoints: 1 evaluated of 6 saved must not read
    "saved checkpoints: 1". The plan (save_every over the steps run) says how many were saved."""
    ran = {"evaluated_during_training": False, "actual_steps": 272}
    rec = make(training=ran, planned={"method.save_every": 50, "method.early_stopping": None},
               checkpoints=[{"name": "final", "step": 272, "is_final": True}], metrics=[metric("t", "base", 0.5), metric("t", "final", 0.5)])
    found, _ = check("no_eval_during_training", rec)
    assert found.evidence == {"evaluated checkpoints": "final",
                              "saving planned": "a checkpoint every 50 steps (method.save_every) over 272 steps: 6, the final included"}
    assert found.actions[1] == ("By its plan this run saved 6 checkpoints (every 50 steps, the final included): enough for a "
                                "curve, they only need evaluating.")
    # the last save on the final step is one checkpoint, not two
    even = make(training={**ran, "actual_steps": 200}, planned={"method.save_every": 100}, metrics=[metric("t", "final", 0.5)])
    found, _ = check("no_eval_during_training", even)
    assert found.evidence["saving planned"].endswith("over 200 steps: 2, the final included")
    assert found.actions[1].endswith("at least four points (this run planned 2, the final included).")
    unset = make(training=ran, planned={"method.save_every": None}, metrics=[metric("t", "final", 0.5)])
    found, _ = check("no_eval_during_training", unset)
    assert found.evidence["saving planned"] == "the final checkpoint only (method.save_every not set)"
    assert found.actions[1].endswith("(this run planned the final one only).")
    no_steps = make(training={"evaluated_during_training": False}, planned={"method.save_every": 10}, metrics=[metric("t", "final", 0.5)])
    found, _ = check("no_eval_during_training", no_steps)
    assert found.evidence["saving planned"] == "a checkpoint every 10 steps (method.save_every)"
    assert found.actions[1].endswith("(this run planned one every 10 steps).")


@texts("no_eval_during_training")
def test_early_stopping_planned_only_when_it_was_configured_issue15(seed000):
    # seed 000 planned a patience of 3 and never evaluated: the plan could not act
    found, _ = check("no_eval_during_training", seed000)
    assert found.evidence["early stopping planned"] == "method.early_stopping (patience 3): it had no evaluations to act on"
    assert "the planned early stopping could not trigger" in found.root_cause
    ran = {"training": {"evaluated_during_training": False}, "metrics": [metric("t", "final", 0.5)]}
    for planned in ({}, {"method.early_stopping": None}, {"method.early_stopping": "none"}, {"method.early_stopping": False},
                    {"method.disable_early_stopping": True, "trainer.early_stopping_callback": "on"},
                    {"method.early_stopping": "off", "method.early_stopping.patience": 3},
                    {"method.early_stopping.patience": None}):
        found, _ = check("no_eval_during_training", make(planned=planned, **ran))
        assert "early stopping planned" not in found.evidence, planned
        assert "early stopping" not in found.root_cause, planned
    block = {"method.early_stopping.on": "loss", "method.early_stopping.every": 10, "method.early_stopping.patience": 0}
    found, _ = check("no_eval_during_training", make(planned=block, **ran))
    assert found.evidence["early stopping planned"] == "method.early_stopping (every 10, on loss, patience 0): it had no evaluations to act on"


@texts("eval_set_too_small")
def test_eval_set_too_small_says_items_needed_only_for_an_unresolved_change():
    found, _ = check("eval_set_too_small", make(metrics=general(*binary(20, 10))))  # no change at all
    assert found.evidence["arc · acc"].startswith("n=20, ")
    resolved, _ = check("eval_set_too_small", make(metrics=general([0.0] * 25, [1.0] * 25)))
    text = resolved.evidence["arc · acc"]
    assert text.startswith("n=25") and "would resolve" not in text  # already significant
    no_ci, _ = check("eval_set_too_small", make(metrics=[metric("mt", "base", 2.0, n=16), metric("mt", "final", 2.1, n=16)]))
    assert no_ci.evidence["mt · acc"] == "n=16"  # no interval: none claimed
    assert "30 items or fewer" in found.root_cause  # the boundary the rule uses (n <= 30)


@texts("subset_vs_full_disagree")
def test_subset_vs_full_needs_two_known_sizes():
    rec = make(metrics=[metric("mt", "base", 2.0744, n=16), metric("mt", "final", 2.4899, n=16),
                        metric("mt", "base", 2.8469, n=80), metric("mt", "final", 2.7252, n=80)])
    found, _ = check("subset_vs_full_disagree", rec)
    assert found.evidence["mt · acc (n=16)"].startswith("2.0744 → 2.4899 (+0.4155")
    assert found.evidence["mt · acc (n=80)"].startswith("2.8469 → 2.7252 (-0.1217")
    # one side without n: which is the subset is unknown, so no "subset" claim
    unsized = make(metrics=[metric("mt", "base", 2.0), metric("mt", "final", 2.4),
                            metric("mt", "base", 2.8, n=16), metric("mt", "final", 2.7, n=16)])
    assert check("subset_vs_full_disagree", unsized)[0] is None


@texts("judge_position_bias")
def test_judge_position_bias_counts_and_actions():
    verdicts, swapped = ["model"] * 20 + ["base"] * 20, ["model"] * 10 + ["base"] * 30
    found, _ = check("judge_position_bias", make(metrics=[judge_metric(verdicts=verdicts, verdicts_swapped=swapped)]))
    assert found.evidence["blind_ab · win_rate"] == "verdict kept after swapping in 30 of 40 comparisons (75%), Cohen's kappa 0.50"
    # the judge saw both orders (that is how the rule knows): do not ask for it again
    assert "already saw every pair in both orders" in found.actions[0]
    assert not any(a.startswith("Judge every pair in both orders") for a in found.actions)
    # below the 80 % threshold, never printed as "80%"
    edge, _ = check("judge_position_bias", make(metrics=[judge_metric(position_consistency=0.797)]))
    assert edge.evidence["blind_ab · win_rate"] == "verdict kept after swapping in 79.7% of comparisons"


@texts("target_gain_missed")
def test_target_gain_missed_quotes_the_expected_gain_and_the_change():
    found, _ = check("target_gain_missed", make(expect={"target_gain": 0.1}, metrics=target(0.5, 0.52)))
    assert found.title == "Target gain below the expected +0.1"
    assert found.evidence["sub · accuracy"].startswith("0.5000 → 0.5200 (+0.0200, ")
    both = make(expect={"target_gain": 0.1}, metrics=target(0.5, 0.52) + [
        metric("add", "base", 0.1, suite="target", metric="accuracy", n=200), metric("add", "final", 0.5, suite="target", metric="accuracy", n=200)])
    assert set(check("target_gain_missed", both)[0].evidence) == {"sub · accuracy"}  # add met it
    assert "spec" not in found.root_cause  # a record written by hand has no spec
    specced, _ = check("target_gain_missed", make(spec_file="specs/a.yaml", expect={"target_gain": 0.1}, metrics=target(0.5, 0.52)))
    assert "the spec asked for (expect.target_gain)" in specced.root_cause


@texts("unpinned_inputs")
def test_unpinned_inputs_cause_and_actions_fit_hub_or_local(seed000):
    hub, _ = check("unpinned_inputs", seed000)
    assert hub.root_cause.startswith("A hub model or dataset without a commit")
    assert "local file" not in hub.root_cause and hub.actions[0].startswith("Pin revision:")
    local = make(model={"base": "/models/mine"}, data={"sources": [{"source": "data/train.jsonl"}]})
    found, _ = check("unpinned_inputs", local)
    assert found.evidence == {"model": "/models/mine: no revision or hash", "data data/train.jsonl": "no revision or hash"}
    assert found.root_cause.startswith("A local file or folder without a hash") and "hub" not in found.root_cause
    assert not any("Pin revision:" in a for a in found.actions)  # revision applies to hf: sources only
    mixed, _ = check("unpinned_inputs", make(model={"base": "Qwen/Qwen3-1.7B", "revision": "b" * 40},
                                             data={"sources": [{"source": "hf:org/set"}, {"source": "local.jsonl"}]}))
    assert "hub" in mixed.root_cause and "local file" in mixed.root_cause and "model" not in mixed.evidence


@texts("data_differs_from_dvc")
def test_data_differs_from_dvc_names_the_dvc_file():
    edited = {"source": "data/train.jsonl", "dvc": {"file": "data/train.jsonl.dvc", "md5": "d" * 32, "matches": False}}
    found, _ = check("data_differs_from_dvc", make(data={"sources": [edited]}))
    assert found.evidence == {"data data/train.jsonl": f"differs from data/train.jsonl.dvc (md5 {'d' * 32})"}
    bare = {"source": "x.jsonl", "dvc": {"matches": False}}
    found, _ = check("data_differs_from_dvc", make(data={"sources": [bare]}))
    assert found.evidence == {"data x.jsonl": "differs from its .dvc file (md5 ?)"}


@texts("reward_model_untrained")
def test_reward_model_untrained_names_the_model_and_the_weights():
    many = [metric("mtbench", "final", 0.1, suite="reward", metric="mean_reward",
                   extra={"model": "builtin:tiny", "untrained_weights": ["score.weight", "score.bias", "w3", "w4"]})]
    found, _ = check("reward_model_untrained", make(metrics=many))
    assert found.evidence == {"model": "builtin:tiny", "mtbench · final": "score.weight, score.bias, w3 and 1 more"}
    unnamed = [metric("mtbench", "final", 0.1, suite="reward", extra={"untrained_weights": ["score.weight"]})]
    found, _ = check("reward_model_untrained", make(metrics=unnamed))
    assert found.evidence == {"mtbench · final": "score.weight"}  # no "model: None" when the record does not name it


@texts("no_measurable_forgetting")
def test_no_measurable_forgetting_counts_the_family_and_names_the_widest():
    rec = make(expect=FORGETTING, metrics=general(*binary(200, 160, flip=2)) + general(*binary(60, 40, flip=1), task="hella"))
    found, _ = check("no_measurable_forgetting", rec)
    assert "across the 2 general benchmark(s)" in found.evidence["family"]
    assert found.evidence["smallest change these n can detect"].endswith("(hella · acc)")  # the smaller n is the wider
