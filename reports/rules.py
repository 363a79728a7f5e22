"""Diagnostic rules: named checks that turn a record into root-cause notes and next actions.

Each rule is a function `(record, computed) -> Finding | None`, registered with `@rule("name")`;
its docstring is the one-line description listed in docs/reports.md. A finding carries the evidence
the rule saw, so a reader can check the diagnosis instead of trusting it. Rules read statistics
(badges, intervals, n) and record structure, never a table of known metric names.

Add a rule: write the function here, decorate it, and add a firing and a non-firing unit test.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tunebook.reports.compute import Computed, ResultRow
from tunebook.reports.record import Record
from tunebook.reports.stats import cohen_kappa
from tunebook.reports.status import IMPROVED, SMALL_N, Thresholds, Verdict, number, overall

SEVERITIES = ("fail", "warn", "info")

# thresholds of the rules, each with why
LOSS_DROP = 0.10  # a training loss 10 % below its start has clearly learned *something*
SATURATED = 0.98  # a 0/1 score this close to 1 leaves almost no items to learn from
ZERO_STD_SHARE = 0.9  # most prompts' generations all scoring alike: GRPO has almost no advantage left
POSITION_CONSISTENCY_MIN = 0.80  # a fair judge keeps its verdict when the answers swap places
EXTRACTION_FAILURE_MAX = 0.10  # more than 1 in 10 unparsable answers and accuracy measures format
SMOKE_STEPS = 20  # a run this short is a pipeline check, not training (seed 002: 5 steps)
SHORTFALL = 0.9  # stopping before 90 % of the planned steps without an early-stopping reason
COLLAPSE_WATCHDOGS = ("collapse", "repetition")  # watchdog rule names that mean degenerate output
REPEAT = re.compile(r"(.{1,8}?)\1{7,}", re.DOTALL)  # a 1-8 character unit repeated 8+ times: "4444…"
DISTINCT_2_MIN = 0.2  # fewer distinct word bigrams than this across outputs: the model says one thing
SAME_OUTPUT_SHARE = 0.8  # the kept samples mix right and wrong answers: one text for most is one answer for all


@dataclass(frozen=True)
class Finding:
    severity: str  # "fail", "warn" or "info"
    title: str
    evidence: dict[str, Any] | str
    root_cause: str
    actions: list[str] = field(default_factory=list)
    name: str = ""  # filled in from the registry


Rule = Callable[[Record, Computed], Finding | None]
RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    """Register a diagnostic rule under `name` (unique)."""

    def register(fn: Rule) -> Rule:
        if name in RULES:
            raise ValueError(f"diagnostic rule {name!r} is registered twice")
        RULES[name] = fn
        return fn

    return register


def run_rule(name: str, record: Record, computed: Computed) -> Finding | None:
    found = RULES[name](record, computed)
    return replace(found, name=name) if found else None


def run_rules(record: Record, computed: Computed) -> list[Finding]:
    """All findings, failures first, then by name: the order is part of the deterministic output."""
    found = [f for name in RULES if (f := run_rule(name, record, computed))]
    return sorted(found, key=lambda f: (SEVERITIES.index(f.severity), f.name))


def experiment_verdict(computed: Computed, findings: list[Finding]) -> Verdict:
    """The experiment's own badge, from its findings and its target results (see status.overall)."""
    return overall([r.verdict for r in computed.suite("target")], [f.severity for f in findings])


# ---------------------------------------------------------------------------------------------------
# helpers


def describe(r: ResultRow) -> str:
    """'0.8500 → 0.7000 (-0.1500, 95% CI -0.2250 to -0.0750, paired bootstrap, n=120)'."""
    parts = [f"{r.interval.delta:+.4f}"]
    if r.interval.known:
        parts.append(f"95% CI {r.interval.low:+.4f} to {r.interval.high:+.4f}, {r.interval.method}")
    else:
        parts.append("no interval")
    if r.n is not None:
        parts.append(f"n={r.n}")
    text = f"{r.base:.4f} → {r.final:.4f} ({', '.join(parts)})"
    if r.flips is not None:
        text += f"; {r.flips.lost} items right→wrong, {r.flips.gained} wrong→right (McNemar p={r.flips.p:.2g})"
    return text


def _worse(r: ResultRow) -> bool:
    """The whole interval is on the worsening side."""
    if not r.interval.known:
        return False
    sign = 1 if r.higher_is_better else -1
    return max(sign * r.interval.low, sign * r.interval.high) < 0


def _general(computed: Computed) -> list[ResultRow]:
    return [r for r in computed.suite("general") if r.interval is not None]


def _forgetting(computed: Computed, low: float | None, high: float) -> list[ResultRow]:
    """General rows whose change is worse than `high` (and not worse than `low`), significant or untested."""
    return [r for r in _general(computed)
            if r.gain < high and (low is None or r.gain >= low) and (_worse(r) or not r.interval.known)]


def _safer_checkpoint(computed: Computed, fail: float) -> str | None:
    """The latest checkpoint whose every general change stays within the fail threshold (point estimates)."""
    full = max((n for *_, n in computed.general_worst), default=0)
    within = [(name, step, worst) for name, step, worst, n in computed.general_worst if n == full and worst >= fail]
    if not within:
        return None
    name, step, worst = within[-1]
    return f"{name} (step {step}, worst general change {worst:+.4f})"


# ---------------------------------------------------------------------------------------------------
# forgetting


@rule("catastrophic_forgetting")
def catastrophic_forgetting(record: Record, computed: Computed) -> Finding | None:
    """A general benchmark dropped past the `expect.forgetting.fail` threshold."""
    fail = Thresholds.for_suite("general", record.expect).fail
    fail = 0.0 if fail is None else fail
    hits = _forgetting(computed, None, fail)
    if not hits:
        return None
    tested = [r for r in hits if r.interval.known]
    evidence: dict[str, Any] = {r.label: describe(r) for r in hits}
    evidence["fail threshold"] = f"{fail:+g}"
    actions = [
        "Lower the learning rate (x0.2 to x0.5) or the LoRA scale (alpha / r); seed 000 went from "
        "-26.7% to -8% on MT-Bench by dropping lr 5e-5 → 1e-5 and r 16 → 8.",
        "Anchor to the base model: method.anchor: {type: kl, coef: 0.02-0.05}, with a warm-up.",
        "Mix general or reasoning data into training (a weight of 0.1-0.3) to keep those skills exercised.",
        "Evaluate every saved checkpoint (eval.checkpoints: all) and stop early on the general suite.",
    ]
    safer = _safer_checkpoint(computed, fail)
    if safer:
        actions.insert(0, f"Consider an earlier checkpoint: {safer} stays within the fail threshold.")
    title = "Catastrophic forgetting on " + ", ".join(r.label for r in hits)
    if not tested:
        title += " (point estimate only: no interval)"
    return Finding(
        "fail" if tested else "warn", title, evidence,
        "The update moved the model away from the base on skills the training data does not exercise; "
        "usual causes are a learning rate or LoRA scale too high for the data size, too many epochs, "
        "and no anchor to the base model.", actions)


@rule("mild_forgetting")
def mild_forgetting(record: Record, computed: Computed) -> Finding | None:
    """A general benchmark dropped past `expect.forgetting.warn` but not past `fail`."""
    t = Thresholds.for_suite("general", record.expect)
    if t.warn is None:
        return None
    hits = _forgetting(computed, 0.0 if t.fail is None else t.fail, t.warn)
    if not hits:
        return None
    evidence: dict[str, Any] = {r.label: describe(r) for r in hits}
    evidence["thresholds"] = f"warn {t.warn:+g}, fail {t.fail:+g}" if t.fail is not None else f"warn {t.warn:+g}"
    return Finding(
        "warn", "Mild forgetting on " + ", ".join(r.label for r in hits), evidence,
        "General skills eroded a little: typical of plain SFT without an anchor, and of subsets that "
        "over-represent a few domains.",
        ["Add or strengthen a KL anchor (coef +0.01 to +0.02) and compare with this run.",
         "Raise the share of general or reasoning data by 0.05-0.1.",
         "Check per-item flips in the general suite: a few categories often carry the whole drop."])


@rule("no_measurable_forgetting")
def no_measurable_forgetting(record: Record, computed: Computed) -> Finding | None:
    """Every general benchmark has an interval and none dropped significantly past `warn`."""
    rows = _general(computed)
    if not rows or not all(r.interval.known for r in rows):
        return None
    warn = Thresholds.for_suite("general", record.expect).warn
    if any(_worse(r) and r.gain < (0.0 if warn is None else warn) for r in rows):
        return None
    evidence = {r.label: describe(r) for r in rows}
    widest = max(rows, key=lambda r: r.interval.half_width)
    evidence["smallest change these n can detect"] = f"about ±{widest.interval.half_width:.4f} ({widest.label})"
    return Finding(
        "info", "No measurable forgetting on the general suite", evidence,
        "Every change on the general suite is within its noise (or within the warn tolerance). This is "
        "not proof of no change: a drop smaller than the interval would go unseen.",
        ["Keep these settings as the baseline for the next variant.",
         "If smaller drops matter, evaluate more items: the interval narrows with the square root of n."])


# ---------------------------------------------------------------------------------------------------
# training went wrong


def _degenerate(text: str) -> bool:
    text = text.strip()
    m = REPEAT.search(text)
    return len(text) >= 16 and m is not None and len(m.group()) >= len(text) / 2


def _distinct_2(outputs: list[str]) -> tuple[float, int] | None:
    grams = [tuple(w[i:i + 2]) for w in (o.split() for o in outputs) for i in range(len(w) - 1)]
    return (len(set(grams)) / len(grams), len(grams)) if len(grams) >= 20 else None


@rule("mode_collapse")
def mode_collapse(record: Record, computed: Computed) -> Finding | None:
    """Outputs degenerate into repetition ("4444…"), one answer, or a collapse watchdog fired."""
    evidence: dict[str, Any] = {}
    at = set(computed.evaluated)
    outputs: dict[str, list[str]] = {}
    for s in record.samples:
        if s.checkpoint in at:
            outputs.setdefault(s.task, []).append(s.output)
    for task, outs in sorted(outputs.items()):
        bad = [o for o in outs if _degenerate(o)]
        if bad:
            evidence[f"{task}: repetitive outputs"] = f"{len(bad)} of {len(outs)}, e.g. {bad[0].strip()[:60]!r}"
        top, count = Counter(o.strip() for o in outs).most_common(1)[0]
        if len(outs) >= 5 and count / len(outs) >= SAME_OUTPUT_SHARE:
            evidence[f"{task}: same output"] = f"{count} of {len(outs)} outputs are {top[:60]!r}"
        d2 = _distinct_2(outs)
        if d2 is not None and d2[0] < DISTINCT_2_MIN:
            evidence[f"{task}: distinct-2"] = f"{d2[0]:.3f} over {d2[1]} bigrams"
    events = [e for e in (record.training.watchdog if record.training else [])
              if any(w in e.rule for w in COLLAPSE_WATCHDOGS)]
    for e in events:
        evidence[f"watchdog at step {e.step}"] = f"{e.rule}: {e.message}"
    if not evidence:
        return None
    return Finding(
        "fail", "Mode collapse: the model repeats itself", evidence,
        "The policy concentrated on a degenerate output. In RL this follows an unstable update (seed 003: "
        "the PPO ratio reached 21.75 at batch ~999 and outputs became '4444…'); in SFT, a learning rate far "
        "too high or a dataset of near-identical targets.",
        ["Resume from the last checkpoint before the first watchdog step, with a lower learning rate.",
         "Keep the policy near the reference: a KL penalty (beta > 0), ratio clipping, max_grad_norm 1.0.",
         "With actor-reward training, use plain policy gradient instead of PPO (seed 003).",
         "Watch entropy and the share of repeated outputs during training, not only at the end."])


@rule("dry_run_or_undertrained")
def dry_run_or_undertrained(record: Record, computed: Computed) -> Finding | None:
    """A dry run, a run stopped short of its planned steps, or results from a checkpoint other than the final."""
    evidence: dict[str, Any] = {}
    fatal = False
    t = record.training
    if record.status == "dry_run" or (t is not None and t.dry_run):
        evidence["dry run"] = "the record is marked as a dry run"
        fatal = True
    if t is not None and t.actual_steps is not None:
        if t.actual_steps <= SMOKE_STEPS:
            cap = f" (max_steps={t.max_steps})" if t.max_steps is not None else ""
            evidence["steps"] = f"only {t.actual_steps} optimizer steps{cap}: a smoke test, not training"
            fatal = True
        elif t.planned_steps and t.actual_steps < SHORTFALL * t.planned_steps and not t.stopped_early:
            evidence["steps"] = f"{t.actual_steps} of {t.planned_steps} planned steps, with no early-stopping reason"
    elsewhere = sorted({r.checkpoint for r in computed.results if r.checkpoint != computed.final_checkpoint})
    if computed.final_checkpoint and elsewhere:
        evidence["evaluated checkpoint"] = (f"results come from {', '.join(elsewhere)}, "
                                            f"not the final checkpoint {computed.final_checkpoint}")
        fatal = True
    if not evidence:
        return None
    return Finding(
        "fail" if fatal else "warn", "The evaluated model is not the fully trained one", evidence,
        "What was evaluated is not what was planned: a dry run's output left in place, a job that died "
        "early, or a path pointing at an earlier checkpoint (seed 002 evaluated a 5-step dry run; seed 004 "
        "evaluated checkpoint-100 instead of checkpoint-290).",
        ["Rerun training to completion and evaluate the checkpoint flagged final.",
         "Give dry runs their own experiment name, so their outputs land in their own runs/<exp>/ folder.",
         "If the job died, resume from its last checkpoint (train stages resume) and look at the log tail."])


@rule("loss_fell_task_flat")
def loss_fell_task_flat(record: Record, computed: Computed) -> Finding | None:
    """Training loss fell clearly while no target metric improved beyond noise."""
    hist = [h for h in (record.training.history if record.training else []) if "loss" in h.values]
    target = [r for r in computed.suite("target") if r.interval is not None]
    if len(hist) < 2 or not target or any(r.verdict.badge == IMPROVED for r in target):
        return None
    hist.sort(key=lambda h: h.step)
    first, last = hist[0].values["loss"], hist[-1].values["loss"]
    if first == 0 or (first - last) / abs(first) < LOSS_DROP:
        return None
    evidence: dict[str, Any] = {"training loss": f"{first:.4f} at step {hist[0].step} → {last:.4f} at step {hist[-1].step}"}
    for r in target:
        evidence[r.label] = f"{describe(r)}: {r.verdict}"
        rate = number(r.extra.get("extraction_failure_rate"))
        if rate is not None:
            evidence[f"{r.label} extraction failures"] = f"{rate:.1%}"
    return Finding(
        "warn", "Training loss fell but the target did not improve", evidence,
        "The model fit the training distribution (format, surface patterns) without gaining the measured "
        "skill, or the measurement misses the gain: answer extraction, or a prompt format that differs "
        "between training and evaluation (seed 003: loss and reward improved while GSM8K stayed at 5%).",
        ["Read the wrong samples below: is the answer there but not extracted?",
         "Evaluate on a slice of the training set: high there and flat here means memorisation.",
         "Check that evaluation prompts use the training chat template.",
         "If the loss is still falling at the last step, train longer before drawing conclusions."])


@rule("reward_saturation")
def reward_saturation(record: Record, computed: Computed) -> Finding | None:
    """A 0/1 target metric is at ≥ 98%, or a logged reward stopped varying: no learning signal left."""
    evidence: dict[str, Any] = {}
    for r in computed.suite("target"):
        samples = record.metrics[r.index].samples
        binary = bool(samples) and all(x in (0.0, 1.0) for x in samples)
        if binary and r.final >= SATURATED:
            evidence[r.label] = f"{r.final:.4f} at {r.checkpoint}"
    hist = sorted(record.training.history, key=lambda h: h.step) if record.training else []
    tail = hist[len(hist) * 3 // 4:]
    for k in sorted({k for h in tail for k in h.values if "reward" in k}):
        vals = [h.values[k] for h in tail if k in h.values]
        if len(vals) < 3:
            continue
        # trl's GRPO logs: reward (mean), reward_std, rewards/<fn>/mean|std, frac_reward_zero_std
        if k == "frac_reward_zero_std":
            if min(vals) >= ZERO_STD_SHARE:
                evidence[f"{k} (last quarter)"] = f"≥ {min(vals):.0%} of prompts: all generations scored the same"
        elif k.endswith("std"):
            if max(abs(v) for v in vals) < 1e-3:
                evidence[f"{k} (last quarter)"] = f"≈ 0 over {len(vals)} logs: every rollout scored the same"
        elif max(vals) - min(vals) <= 1e-6 * max(1.0, abs(vals[0])):
            evidence[f"{k} (last quarter)"] = f"pinned at {vals[0]:.4g} over {len(vals)} logs"
    if not evidence:
        return None
    return Finding(
        "warn", "Saturated: the target (or reward) has no room left", evidence,
        "When every rollout gets the same reward, GRPO's advantages are zero and further steps add only "
        "drift (seed 001: GRPO on TriviaQA saturated at ~100% accuracy).",
        ["Stop training at the step where saturation began: later checkpoints only risk forgetting.",
         "Use harder prompts: drop those the base model already solves in every sample.",
         "Evaluate on a harder held-out split so the metric can still move."])


@rule("extraction_failures")
def extraction_failures(record: Record, computed: Computed) -> Finding | None:
    """More than 10% of target answers could not be extracted: accuracy is partly measuring format."""
    evidence: dict[str, Any] = {}
    for r in computed.suite("target"):
        rate = number(r.extra.get("extraction_failure_rate"))
        if rate is not None and rate > EXTRACTION_FAILURE_MAX:
            how = f" with {r.extra['extract']}" if "extract" in r.extra else ""
            evidence[r.label] = f"{rate:.1%} of answers not extracted{how} at {r.checkpoint}"
    if not evidence:
        return None
    return Finding(
        "warn", "Many answers could not be extracted", evidence,
        "The answers are not in the form the extractor expects, so they count as wrong whatever they say "
        "(seed 003 counted 'X' predictions as errors without reporting how many there were).",
        ["Read the wrong samples with no extracted answer below.",
         "Try another extractor (answer_anchor, last_number, mcq_word_boundary) and compare.",
         "Make the training targets end with the answer in the format the extractor reads."])


@rule("watchdog_alerts")
def watchdog_alerts(record: Record, computed: Computed) -> Finding | None:
    """A training watchdog fired (other than the collapse alerts, which mode_collapse reports)."""
    events = [e for e in (record.training.watchdog if record.training else [])
              if not any(w in e.rule for w in COLLAPSE_WATCHDOGS)]
    if not events:
        return None
    evidence = {f"step {e.step}: {e.rule}": e.message for e in sorted(events, key=lambda e: (e.step, e.rule))}
    return Finding(
        "warn", f"Training watchdog fired {len(events)} time(s)", evidence,
        "A training statistic left its healthy range; the first alert usually marks where the run went "
        "wrong.",
        ["Look at the training dynamics around the first alert's step.",
         "Resume from the checkpoint before it with a lower learning rate or tighter gradient clipping."])


# ---------------------------------------------------------------------------------------------------
# the plan and the pipeline


@rule("config_drift")
def config_drift(record: Record, computed: Computed) -> Finding | None:
    """A parameter or data ratio that ran differs from the planned one."""
    drift = [p for p in computed.params if p.state == "differs" and p.source in ("spec", "data")]
    if not drift:
        return None
    evidence = {p.key: f"planned {p.planned!r}, ran with {p.actual!r}" for p in drift}
    return Finding(
        "fail", "The run did not follow the plan: " + ", ".join(p.key for p in drift), evidence,
        "A default, a flag or a bug overrode a planned setting, so the results answer a different question "
        "from the one asked (seed 000 Experiment 2 trained on 100% of the data with 25% planned).",
        ["Rerun with the planned values, or change the spec to what ran and say so in the notes.",
         "Find where the value was overridden (a CLI default, the data stage) and add a test for it.",
         "Compare the data manifest's achieved ratios with the spec before training starts."])


@rule("baseline_missing")
def baseline_missing(record: Record, computed: Computed) -> Finding | None:
    """A target or general metric has no base-model value to compare with."""
    rows = [r for r in computed.results if r.reference == "none" and r.suite in ("target", "general")]
    if not rows:
        return None
    return Finding(
        "warn", "No baseline for " + ", ".join(r.label for r in rows),
        {r.label: f"{r.final:.4f} at {r.checkpoint}, no 'base' value" for r in rows},
        "Without the base model's score under the same settings, a number cannot be called a gain or a "
        "loss (seed 000 skipped the baseline to save time; seed 003 compared against a paper instead).",
        ["Evaluate the base model with the same eval settings (the shared baseline stage does this once).",
         "For an old run brought in by hand, add the base numbers as metrics at checkpoint 'base'."])


@rule("no_eval_during_training")
def no_eval_during_training(record: Record, computed: Computed) -> Finding | None:
    """Only the end of training was evaluated, so the curve (and early stopping) had nothing to go on."""
    t = record.training
    evaluated = {m.checkpoint for m in record.metrics if m.checkpoint != "base"}
    if t is None or t.evaluated_during_training or len(evaluated) > 1:
        return None
    evidence: dict[str, Any] = {"evaluated checkpoints": ", ".join(sorted(evaluated)) or "none",
                                "saved checkpoints": len(record.checkpoints)}
    stopping = sorted(k for k in record.planned if "early_stopping" in k)
    if stopping:
        evidence["early stopping planned"] = ", ".join(stopping) + ": it had no evaluations to act on"
    return Finding(
        "warn", "Nothing was evaluated during training", evidence,
        "With one evaluation at the end there is no way to see whether the model peaked earlier, and early "
        "stopping cannot trigger (seed 000 Experiment 2; seed 003 ran with eval_frequency null).",
        ["Evaluate saved checkpoints (eval.checkpoints: all, or every: N) to get the per-checkpoint curve.",
         "Save checkpoints often enough (save_every) that the curve has at least four points."])


@rule("eval_set_too_small")
def eval_set_too_small(record: Record, computed: Computed) -> Finding | None:
    """A result measured on fewer than 30 items: its interval is wide and itself unreliable."""
    rows = [r for r in computed.results if r.n is not None and r.n < SMALL_N]
    if not rows:
        return None
    evidence: dict[str, Any] = {}
    for r in rows:
        text = f"n={r.n}"
        if r.interval is not None and r.interval.known:
            text += f", CI ±{r.interval.half_width:.4f}"
            if r.interval.delta:
                need = math.ceil(r.n * (r.interval.half_width / abs(r.interval.delta)) ** 2)
                text += f"; about {need} items would resolve a change of {r.interval.delta:+.4f}"
        evidence[r.label] = text
    return Finding(
        "warn", "Evaluation sets too small to trust", evidence,
        "Below 30 items one or two answers swing the score by several points (seed 004: 40-60% win rates "
        "across reruns of the same 5 prompts; seed 003's SVAMP had 30 examples).",
        ["Evaluate on more items; the interval shrinks with the square root of n.",
         "Until then, read these rows as anecdotes, not results."])


@rule("subset_vs_full_disagree")
def subset_vs_full_disagree(record: Record, computed: Computed) -> Finding | None:
    """The same benchmark measured at two sizes gives changes of opposite sign."""
    groups: dict[tuple[str, str, str], list[ResultRow]] = {}
    for r in computed.results:
        if r.interval is not None:
            groups.setdefault((r.suite, r.task, r.metric), []).append(r)
    evidence: dict[str, Any] = {}
    for rows in groups.values():
        rows = sorted(rows, key=lambda r: r.n or 0)
        small, full = rows[0], rows[-1]
        if len(rows) > 1 and small.gain * full.gain < 0:
            evidence[small.label] = describe(small)
            evidence[full.label] = describe(full)
    if not evidence:
        return None
    return Finding(
        "warn", "A subset and the full benchmark disagree", evidence,
        "The subset is too small or not representative of the full set (seed 000: 16 MT-Bench questions "
        "said +20%, all 80 said -0.12).",
        ["Trust the larger n; report subset numbers only with their interval.",
         "Draw subsets stratified by category, and fix them once so runs are comparable."])


@rule("judge_position_bias")
def judge_position_bias(record: Record, computed: Computed) -> Finding | None:
    """An LLM judge changed its verdict when the two answers swapped places too often."""
    evidence: dict[str, Any] = {}
    for r in computed.suite("judge"):
        first, swapped = r.extra.get("verdicts"), r.extra.get("verdicts_swapped")
        if isinstance(first, list) and isinstance(swapped, list) and first and len(first) == len(swapped):
            consistency = sum(a == b for a, b in zip(first, swapped)) / len(first)
            kappa = cohen_kappa(first, swapped)
            extra = f", Cohen's kappa {kappa:.2f}" if kappa is not None else ""
            text = f"verdict kept after swapping in {consistency:.0%} of {len(first)} comparisons{extra}"
        elif number(r.extra.get("position_consistency")) is not None:
            consistency = number(r.extra["position_consistency"])
            text = f"verdict kept after swapping in {consistency:.0%} of comparisons"
        else:
            continue
        if consistency < POSITION_CONSISTENCY_MIN:
            evidence[r.label] = text
    if not evidence:
        return None
    return Finding(
        "warn", "The judge favours a position", evidence,
        "The judge's verdict depends on which answer comes first, so part of the win rate measures order, "
        "not quality (seed 004 also had its A/B mapping reversed in code).",
        ["Judge every pair in both orders and count a win only when both orders agree; report ties.",
         "Randomise the order per pair and record it with the verdict."])


@rule("target_gain_missed")
def target_gain_missed(record: Record, computed: Computed) -> Finding | None:
    """A target metric improved less than `expect.target_gain`."""
    want = number(record.expect.get("target_gain")) or 0.0
    rows = [r for r in computed.suite("target") if r.interval is not None and r.gain < want]
    if want <= 0 or not rows:
        return None
    return Finding(
        "warn", f"Target gain below the expected {want:+g}", {r.label: describe(r) for r in rows},
        "The run did not reach the improvement the spec asked for.",
        ["Check the training dynamics: still improving at the last step means train longer.",
         "Compare with a variant at a higher learning rate, watching the general suite."])


@rule("unpinned_inputs")
def unpinned_inputs(record: Record, computed: Computed) -> Finding | None:
    """The model or a data source has no pinned revision or hash: the run cannot be repeated exactly."""
    pins = ("resolved_revision", "revision", "sha256")
    evidence: dict[str, Any] = {}
    if record.model and not any(record.model.get(k) for k in pins):
        evidence["model"] = f"{record.model.get('base', '?')}: no revision or hash"
    for s in record.data.sources if record.data else []:
        if not (s.resolved_revision or s.revision or s.sha256):
            evidence[f"data {s.source}"] = "no revision or hash"
        elif s.pin == "not pinned in spec":
            evidence[f"data {s.source}"] = (f"the spec names '{s.revision or 'main'}', a branch or tag: this run read "
                                            f"{s.resolved_revision or '?'} (recorded), a rerun of the spec may read another")
    if not evidence:
        return None
    return Finding(
        "warn", "Inputs are not pinned", evidence,
        "A hub model or dataset without a commit can change under the same name, so a rerun may not "
        "reproduce these numbers.",
        ["Pin revision: in the spec (tunebook resolves it to a commit and records it).",
         "For a record written by hand, add the revision or sha256 if it is still known."])


@rule("data_differs_from_dvc")
def data_differs_from_dvc(record: Record, computed: Computed) -> Finding | None:
    """A DVC-tracked data file was read while it differed from its .dvc record (edited after `dvc add`)."""
    evidence = {f"data {s.source}": f"differs from {s.dvc.get('file', 'its .dvc file')} (md5 {s.dvc.get('md5', '?')})"
                for s in (record.data.sources if record.data else []) if s.dvc and s.dvc.get("matches") is False}
    if not evidence:
        return None
    return Finding(
        "warn", "Data differs from its DVC record", evidence,
        "The file was changed after `dvc add` (or not checked out): the run used rows that DVC's record, and "
        "so the next `dvc checkout` or a collaborator's copy, do not have.",
        ["If the edit is intended: `dvc add` the file and commit the .dvc file, then rerun.",
         "If not: `dvc checkout` the file and rerun `dvc repro`."])


@rule("reward_model_untrained")
def reward_model_untrained(record: Record, computed: Computed) -> Finding | None:
    """The reward model had weights missing from its checkpoint (an untrained score head): its rewards are noise."""
    found = {f"{m.task} · {m.checkpoint}": ", ".join(map(str, m.extra["untrained_weights"][:3]))
             for m in record.metrics if m.suite == "reward" and m.extra.get("untrained_weights")}
    if not found:
        return None
    model = next((m.extra.get("model") for m in record.metrics if m.extra.get("untrained_weights")), "?")
    return Finding(
        "warn", "Reward model has an untrained head: rewards are noise", {"model": model, **dict(list(found.items())[:3])},
        "The checkpoint named as reward model lacks the score head's weights (for example a causal LM, or the "
        "tiny model in smoke mode); they were initialized at random, so the mean reward measures nothing.",
        ["Point eval.reward.model at a trained sequence-classification reward model with one output.",
         "Until then, read the reward rows as a check of the code path only."])
