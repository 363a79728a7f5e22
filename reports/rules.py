"""Diagnostic rules: named checks that turn a record into root-cause notes and next actions.

Each rule is a function `(record, computed) -> Finding | None`, registered with `@rule("name")`;
its docstring is the one-line description listed in docs/reports.md. A finding carries the evidence
the rule saw, so a reader can check the diagnosis instead of trusting it. Rules read statistics
(badges, intervals, n) and record structure, never a table of known metric names.

Add a rule: write the function here, decorate it, and add a firing and a non-firing unit test, and a test
marked @texts(name) that checks each sentence it writes against the record it read (issue 13, item 16).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tunebook.reports.compute import Computed, ResultRow, interval_for, own_interval
from tunebook.reports.record import Record
from tunebook.reports.stats import ALPHA, cohen_kappa, items_needed
from tunebook.reports.status import DEFAULT_RELATIVE, IMPROVED, SMALL_N, Verdict, ci_text, number, overall, thresholds_for

SEVERITIES = ("fail", "warn", "info")

# thresholds of the rules, each with why
LOSS_DROP = 0.10  # a training loss 10 % below its start has clearly learned *something*
SATURATED = 0.98  # a 0/1 score this close to 1 leaves almost no items to learn from
ZERO_STD_SHARE = 0.9  # most prompts' generations all scoring alike: GRPO has almost no advantage left
NEAR_ZERO_BASE = 0.05  # a target the base model almost never gets right: GRPO's samples are all wrong alike
QUARANTINE_SHARE = 0.05  # more than 1 row in 20 rejected: the data is not what the spec assumes
QUARANTINE_ROWS = 10  # ... or more than a handful of rows, whatever their share
POSITION_CONSISTENCY_MIN = 0.80  # a fair judge keeps its verdict when the answers swap places
EXTRACTION_FAILURE_MAX = 0.10  # more than 1 in 10 unparsable answers and accuracy measures format
SMOKE_STEPS = 20  # a run this short is a pipeline check, not training (seed 002: 5 steps)
SHORTFALL = 0.9  # stopping before 90 % of the planned steps without an early-stopping reason
COLLAPSE_WATCHDOGS = ("collapse", "repetition")  # watchdog rule names that mean degenerate output
REPEAT = re.compile(r"(.{1,8}?)\1{7,}", re.DOTALL)  # a 1-8 character unit repeated 8+ times: "4444…"
DISTINCT_2_MIN = 0.2  # fewer distinct word bigrams than this across outputs: the model says one thing
SAME_OUTPUT_SHARE = 0.8  # the kept samples mix right and wrong answers: one text for most is one answer for all
DEFAULT_FAIL_RELATIVE = DEFAULT_RELATIVE[1]  # a reference with no threshold for its units: 5 % short of it
# training dynamics that show a collapse without any kept sample (the watchdog's defaults, compiler/schema.py)
MAX_POLICY_RATIO = 10.0  # clipping keeps the ratio near 1 ± 0.2: 10 means the update left the trust region
MIN_LOGPROB = -15.0  # mean log-prob of the policy's own tokens: it samples what it thinks nearly impossible
LOGPROB_FALL = 10.0  # log-probs an order of magnitude more negative than at the start
MIN_NORMALIZED_REWARD = -3.0  # a normalized reward 3 standard deviations below its mean, and staying there
POSITION_LABELS = {"A": "B", "B": "A", "TIE": "TIE"}  # verdicts that name a slot, not the candidate
ENTROPY_FALL = 0.1  # entropy at a tenth of its start: the policy picks one token everywhere


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
    """'0.8500 → 0.7000 (-0.1500, 95% CI -0.2349 to -0.0726, Tango score, n=120); 22 items right→wrong, …'."""
    iv = r.interval
    parts = [f"{iv.delta:+.4f}"]
    if iv.known:
        parts.append(f"95% CI {iv.low:+.4f} to {iv.high:+.4f}, {iv.method}")
        if iv.p is not None and r.flips is None:
            parts.append(f"{iv.test} p={iv.p:.2g}")
    else:
        parts.append("no interval")
    if iv.note:
        parts.append(iv.note)
    if r.n is not None:
        parts.append(f"n={r.n}")
    text = (f"{r.base:.4f} → {r.final:.4f} ({', '.join(parts)})" if r.final is not None
            else f"change only ({', '.join(parts)})")
    worst = r.extra.get("worst") if r.index < 0 else None
    if isinstance(worst, dict):
        text += f"; worst member {worst['task']} {worst['delta']:+.4f}"
    if r.flips is not None:
        text += f"; {r.flips.lost} items right→wrong, {r.flips.gained} wrong→right (McNemar p={r.flips.p:.2g})"
    return text


def _pct(x: float) -> str:
    """A share as a whole percent that never rounds to an edge it is not at: 0.996 is '99.6%', not '100%'."""
    for digits in (0, 1):
        text = f"{x:.{digits}%}"
        if (text != f"{0:.{digits}%}" or x == 0) and (text != f"{1:.{digits}%}" or x == 1):
            return text
    return "<0.1%" if x < 0.5 else ">99.9%"


def _anchor(record: Record) -> str | None:
    """The anchor to the base model the record shows (planned or actual), e.g. 'type kl, coef 0.03'."""
    found = {}
    for params in (record.planned, record.actual):
        for k, v in params.items():
            if ".anchor." in f".{k}." and v not in (None, False, "none", 0, 0.0):
                found.setdefault(k.split("anchor.", 1)[-1] if "anchor." in k else k, v)
    if not found or found.get("type") in (None, "none") and "coef" not in found:
        return None
    return ", ".join(f"{k} {v}" for k, v in sorted(found.items()))


def _worse(r: ResultRow) -> bool:
    """A regression that counts for the forgetting verdict: significant after Holm's adjustment across the
    general suite (one family: ten benchmarks tested at 5 % each would flag one in three unchanged runs),
    and at least the size of the practical floor."""
    if not r.interval.known or r.gain >= 0 or abs(r.gain) < r.thresholds.floor:
        return False
    p = r.family_p if r.family_p is not None else r.interval.p
    return p < ALPHA if p is not None else r.interval.significant


def _general(computed: Computed) -> list[ResultRow]:
    """The general suite's rows with a baseline, changes recorded without values included."""
    return [r for r in computed.suite("general") + [c for c in computed.changes if c.suite == "general"]
            if r.interval is not None]


def _catastrophic(r: ResultRow) -> bool:
    """Past the fail threshold that applies to the row's units (significant, or untested)."""
    fail = r.thresholds.fail
    return fail is not None and r.gain < fail and (_worse(r) or not r.interval.known)


def _family(rows: list[ResultRow]) -> str:
    return (f"Holm-adjusted across the {len(rows)} general benchmark(s): a row counts when its adjusted p is below {ALPHA:g} "
            "and its change is at least the practical floor")


def _safer_checkpoint(computed: Computed, fail: float | None) -> str | None:
    """The latest checkpoint whose every general change stays within the fail threshold (point estimates)."""
    if fail is None:
        return None
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
    """A general benchmark dropped past its fail threshold, significantly across the suite (Holm)."""
    rows = _general(computed)
    hits = [r for r in rows if _catastrophic(r)]
    members = [(r, w) for r in rows if r.index < 0 and isinstance(w := r.extra.get("worst"), dict)
               and r.thresholds.fail is not None and w["delta"] * (1 if r.higher_is_better else -1) < r.thresholds.fail]
    if not hits and not members:
        return None
    tested = [r for r in hits if r.interval.known]
    evidence: dict[str, Any] = {r.label: describe(r) for r in hits}
    for r in hits:
        evidence[f"{r.label} threshold"] = r.thresholds.source
    for r, w in members:
        evidence[f"{w['task']} (worst member of {r.label})"] = (
            f"{w['delta']:+.4f}, past fail {r.thresholds.fail:+.4g} ({r.thresholds.source}); point estimate only")
    hits = hits + [replace(r, label=f"{w['task']} (in {r.label})") for r, w in members if r not in hits]
    evidence["family"] = _family(rows)
    anchor = _anchor(record)
    actions = [
        "Lower the learning rate (x0.2 to x0.5) or the LoRA scale (alpha / r); seed 000 went from "
        "-26.7% to -8% on MT-Bench by dropping lr 5e-5 → 1e-5 and r 16 → 8.",
        f"Strengthen the anchor to the base model ({anchor}): double its coef, or start it earlier."
        if anchor else "Anchor to the base model: method.anchor: {type: kl, coef: 0.02-0.05}, with a warm-up.",
        "Mix general or reasoning data into training (a weight of 0.1-0.3) to keep those skills exercised.",
        ("Stop early on the general suite (method.early_stopping: {on: general}): this run's checkpoints are "
         "already evaluated, see the table by checkpoint." if len(computed.general_worst) > 1 else
         "Evaluate every saved checkpoint (eval.checkpoints: all) and stop early on the general suite."),
    ]
    fails = {r.thresholds.fail for r in hits}
    safer = _safer_checkpoint(computed, fails.pop() if len(fails) == 1 and len({r.thresholds.fail for r in rows}) == 1
                              else None)
    if safer:
        actions.insert(0, f"Consider an earlier checkpoint: {safer} stays within the fail threshold.")
    title = "Catastrophic forgetting on " + ", ".join(r.label for r in hits)
    if not tested:
        title += " (point estimate only: no interval)"
    cause = ("The update moved the model away from the base on skills the training data does not exercise; "
             "usual causes are a learning rate or LoRA scale too high for the data size and too many epochs"
             + (f"; the run had an anchor ({anchor}), too weak to hold these skills." if anchor
                else ", with no anchor to the base model."))
    return Finding("fail" if tested else "warn", title, evidence, cause, actions)


@rule("mild_forgetting")
def mild_forgetting(record: Record, computed: Computed) -> Finding | None:
    """A general benchmark dropped past its warn threshold but not past fail, significantly across the suite (Holm)."""
    rows = _general(computed)
    hits = [r for r in rows if _worse(r) and not _catastrophic(r)]
    if not hits:
        return None
    evidence: dict[str, Any] = {r.label: describe(r) for r in hits}
    for r in hits:
        evidence[f"{r.label} thresholds"] = r.thresholds.source
    evidence["family"] = _family(rows)
    anchor = _anchor(record)
    return Finding(
        "warn", "Mild forgetting on " + ", ".join(r.label for r in hits), evidence,
        "General skills eroded a little: " + (f"the run's anchor ({anchor}) did not hold them entirely" if anchor
                                               else "typical of plain SFT without an anchor")
        + ", and of subsets that over-represent a few domains.",
        [f"Strengthen the anchor ({anchor}): coef +0.01 to +0.02, and compare with this run." if anchor
         else "Add a KL anchor (method.anchor: {type: kl, coef: 0.02}) and compare with this run.",
         "Raise the share of general or reasoning data by 0.05-0.1.",
         "Check per-item flips in the general suite: a few categories often carry the whole drop."])


@rule("no_measurable_forgetting")
def no_measurable_forgetting(record: Record, computed: Computed) -> Finding | None:
    """Every general benchmark has an interval and none dropped significantly (Holm) by more than the practical floor."""
    rows = _general(computed)
    if not rows or not all(r.interval.known for r in rows):
        return None
    if any(_worse(r) for r in rows):
        return None
    evidence = {r.label: describe(r) for r in rows}
    evidence["family"] = _family(rows)
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
    """Outputs degenerate into repetition ("4444…") or one answer, a collapse watchdog fired, or the training dynamics show it (policy ratio, log-prob, normalized reward, entropy, KL)."""
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
    seen_in_outputs = bool(evidence)
    for key, text in _collapse_dynamics(record):
        evidence[f"training history: {key}"] = text
    if not evidence:
        return None
    title = ("Mode collapse: the model repeats itself" if seen_in_outputs
             else "Mode collapse: the training dynamics show the policy collapsing (no kept output shows it)")
    return Finding(
        "fail", title, evidence,
        "The policy concentrated on a degenerate output. In RL this follows an unstable update (seed 003: "
        "the PPO ratio reached 21.75 at batch ~999 and outputs became '4444…'); in SFT, a learning rate far "
        "too high or a dataset of near-identical targets.",
        [("Resume from the last checkpoint before the first watchdog step, with a lower learning rate." if events
          else "Resume from a checkpoint before the signals above turned, with a lower learning rate."),
         (f"Keep the policy nearer the reference: the run already had a KL term ({kl}); raise it, and clip the "
          "ratio and gradients (max_grad_norm 1.0)." if (kl := _kl_term(record)) else
          "Keep the policy near the reference: a KL penalty (beta > 0), ratio clipping, max_grad_norm 1.0."),
         "With actor-reward training, use plain policy gradient instead of PPO (seed 003).",
         "Watch entropy and the share of repeated outputs during training, not only at the end."])


def _kl_term(record: Record) -> str | None:
    """The KL penalty or anchor the record shows ('beta 0.04', 'type kl, coef 0.03'), or None."""
    anchor = _anchor(record)
    if anchor:
        return anchor
    for params in (record.actual, record.planned):
        for k, v in sorted(params.items()):
            if k.rsplit(".", 1)[-1] == "beta" and isinstance(v, (int, float)) and v > 0:
                return f"beta {v:g}"
    return None


def _samples_action(record: Record, computed: Computed, tasks: set[str], what: str) -> str:
    """'Read the wrong samples below…' only when the log shows wrong samples of these tasks."""
    at = {r.task: r.checkpoint for r in computed.results}
    shown = any(s.task in tasks and s.correct is False and s.checkpoint == at.get(s.task, computed.final_checkpoint)
                for s in record.samples)
    if shown:
        return f"Read the wrong samples below: {what}"
    return f"Keep a few wrong outputs in the record (samples) and read them: {what}"


def _collapse_dynamics(record: Record) -> list[tuple[str, str]]:
    """Signals of a collapse in the logged history, as the watchdog reads them during training: the policy
    ratio, the log-prob of the policy's own tokens, a normalized reward, entropy and KL."""
    hist = sorted(record.training.history, key=lambda h: h.step) if record.training else []
    found = []
    for key in sorted({k for h in hist for k in h.values}):
        pts = [(h.step, h.values[key]) for h in hist if key in h.values and math.isfinite(h.values[key])]
        if not pts:
            continue
        low = key.lower()
        (s0, v0), (s1, v1) = pts[0], pts[-1]
        worst_step, worst = min(pts, key=lambda p: p[1])
        if "ratio" in low and not any(w in low for w in ("clip", "frac", "zero", "min", "low")):
            step, top = max(pts, key=lambda p: p[1])
            if top > MAX_POLICY_RATIO:
                found.append((key, f"reached {top:.4g} at step {step}, far past the clip range (limit {MAX_POLICY_RATIO:g})"))
        elif any(w in low for w in ("logp", "log_prob", "logprob")):
            if worst < MIN_LOGPROB or (len(pts) > 1 and v0 < 0 and worst < LOGPROB_FALL * v0):
                found.append((key, f"fell from {v0:.4g} at step {s0} to {worst:.4g} at step {worst_step} "
                                   f"(limit {MIN_LOGPROB:g}, or {LOGPROB_FALL:g}x its start)"))
        elif "entropy" in low:
            if len(pts) > 1 and v0 > 0 and v1 < ENTROPY_FALL * v0:
                found.append((key, f"fell from {v0:.4g} at step {s0} to {v1:.4g} at step {s1} "
                                   f"(below {ENTROPY_FALL:g}x its start)"))
        elif "reward" in low and any(w in low for w in ("norm", "advantage", "zscore")):
            tail = [v for _, v in pts[len(pts) * 3 // 4:]]
            if tail and max(tail) < MIN_NORMALIZED_REWARD:
                found.append((key, f"stayed below {MIN_NORMALIZED_REWARD:g} over the last quarter of training "
                                   f"(last {v1:.4g} at step {s1})"))
        elif low == "kl" or low.endswith("/kl") or low.startswith("kl"):
            start = max(v0, 0.01)
            if len(pts) > 1 and v1 > 1.0 and v1 > 10 * start:
                found.append((key, f"rose from {v0:.4g} at step {s0} to {v1:.4g} at step {s1} (more than 10x): "
                                   "the policy left the reference far behind"))
    return found


def _cut_short(record: Record) -> str:
    """'max_steps=6 ended training after 0.5 of the 1 planned epoch(s), at step 6'."""
    t = record.training
    cap = f"max_steps={t.max_steps}" if t is not None and t.max_steps is not None else "max_steps"
    planned, ran = number(record.planned.get("method.epochs")), number(record.actual.get("epochs_run"))
    if planned is not None and ran is not None:
        at = f", at step {t.actual_steps}" if t is not None and t.actual_steps is not None else ""
        return f"{cap} ended training after {ran:.3g} of the {planned:g} planned epoch(s){at}"
    if t is not None and t.max_steps is not None:
        return f"the record is marked as a shortened (dry) run: {cap} ended training before its planned epochs"
    return "the record is marked as a shortened (dry) run; it does not record max_steps or the epochs run"


@rule("dry_run_or_undertrained")
def dry_run_or_undertrained(record: Record, computed: Computed) -> Finding | None:
    """A smoke-test-sized run, a run stopped short of its planned steps or epochs, or results from a checkpoint other than the final."""
    evidence: dict[str, Any] = {}
    fatal = False
    t = record.training
    # max_steps alone is a run length (as in HF trainers); the train stage marks the run only when it
    # ended training before the spec's epochs were done
    shortened = record.status == "dry_run" or (t is not None and t.dry_run)
    capped = t is not None and t.max_steps is not None
    if shortened:
        evidence["max_steps" if capped else "dry run"] = _cut_short(record)
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
    if list(evidence) == ["dry run"]:  # marked short by hand: the record does not say by what
        return Finding(
            "warn", "A shortened (dry) run", evidence,
            "The record is marked as a dry run (a shortened training); it does not say what cut it short or by "
            "how much.",
            ["Rerun training to completion and evaluate the checkpoint flagged final.",
             "For a record written by hand, add training.max_steps, planned_steps and actual_steps if known."])
    if list(evidence) == ["max_steps"]:  # said once, as what it is: a shorter run than the epochs plan
        return Finding(
            "warn", "max_steps ended training before the planned epochs", evidence,
            "max_steps sets the run length and overrides epochs (as in Hugging Face trainers); here it came "
            "first, so the model saw only part of the data the spec's epochs plan.",
            ["If the shorter run is what you meant, say it with epochs (a fraction works, e.g. epochs: 0.5) "
             "instead of max_steps, and this note goes away.",
             "Otherwise raise or drop max_steps and rerun: this run is shelved under its params, not lost."])
    return Finding(
        "fail" if fatal else "warn", "The evaluated model is not the fully trained one", evidence,
        ("The results were read from a checkpoint other than the final one: an eval path pointing at an earlier "
         "checkpoint (seed 004 evaluated checkpoint-100 instead of checkpoint-290)."
         if list(evidence) == ["evaluated checkpoint"] else
         "What was evaluated is not what was planned: a dry run's output left in place, a job that died "
         "early, or a path pointing at an earlier checkpoint (seed 002 evaluated a 5-step dry run; seed 004 "
         "evaluated checkpoint-100 instead of checkpoint-290)."),
        # when only the evaluated checkpoint is wrong, the record shows no short training: nothing to rerun
        [f"Evaluate the final checkpoint {computed.final_checkpoint}, and point the eval stage's model path at "
         "the checkpoint flagged final.",
         "Nothing in the record says training stopped short: check its log before rerunning it."]
        if list(evidence) == ["evaluated checkpoint"] else
        ["Rerun training to completion and evaluate the checkpoint flagged final.",
         "Give dry runs their own experiment name, so their outputs land in their own runs/<exp>/ folder.",
         "If the job died, resume from its last checkpoint (train stages resume) and look at the log tail."])


@rule("loss_fell_task_flat")
def loss_fell_task_flat(record: Record, computed: Computed) -> Finding | None:
    """Training loss fell clearly while no target metric improved beyond noise (against the base, a reference value, or the first evaluated checkpoint)."""
    hist = [h for h in (record.training.history if record.training else []) if "loss" in h.values]
    target = computed.suite("target")
    if len(hist) < 2 or not target or any(r.verdict.badge == IMPROVED for r in target):
        return None
    hist.sort(key=lambda h: h.step)
    first, last = hist[0].values["loss"], hist[-1].values["loss"]
    if first == 0 or (first - last) / abs(first) < LOSS_DROP:
        return None
    flat = {r.label: text for r in target if (text := _flat(record, computed, r))}
    if not flat:
        return None
    evidence: dict[str, Any] = {"training loss": f"{first:.4f} at step {hist[0].step} → {last:.4f} at step {hist[-1].step}"}
    for r in target:
        if r.label not in flat:
            continue
        evidence[r.label] = flat[r.label]
        rate = number(r.extra.get("extraction_failure_rate"))
        if rate is not None:
            evidence[f"{r.label} extraction failures"] = f"{rate:.1%}"
    return Finding(
        "warn", "Training loss fell but the target did not improve", evidence,
        "The model fit the training distribution (format, surface patterns) without gaining the measured "
        "skill, or the measurement misses the gain: answer extraction, or a prompt format that differs "
        "between training and evaluation (seed 003: loss and reward improved while GSM8K stayed at 5%).",
        [_samples_action(record, computed, {r.task for r in target if r.label in flat},
                         "is the answer there but not extracted?"),
         "Evaluate on a slice of the training set: high there and flat here means memorisation.",
         "Check that evaluation prompts use the training chat template.",
         "If the loss is still falling at the last step, train longer before drawing conclusions."])


def _flat(record: Record, computed: Computed, r: ResultRow) -> str:
    """Why a target row shows no gain ('' when nothing says so): its badge against the base, else the
    reference value, else its first evaluated checkpoint."""
    if r.interval is not None:
        return f"{describe(r)}: {r.verdict}"
    if r.reference_value is not None:
        gap = (r.final - r.reference_value) * (1 if r.higher_is_better else -1)
        if gap <= 0:
            return (f"{r.final:.4f} at {r.checkpoint}, no baseline; reference {r.reference_value:.4f}"
                    f"{f' ({r.reference_source})' if r.reference_source else ''}: {gap:+.4f} in the better direction")
    first = _earliest(record, r)
    if first is not None:
        iv, _ = interval_for(record.metrics[r.index], first)
        gain = iv.delta if r.higher_is_better else -iv.delta
        if not (iv.significant and gain > 0):
            return (f"no baseline; {first.value:.4f} at {first.checkpoint} → {r.final:.4f} at {r.checkpoint} "
                    f"({iv.delta:+.4f}, {'not significant' if iv.known else 'no interval'})")
    return ""


def _earliest(record: Record, r: ResultRow):
    """The same series at the earliest other evaluated checkpoint (same n), or None."""
    steps = {c.name: c.step for c in record.checkpoints}
    others = [m for m in record.metrics if (m.suite, m.task, m.metric) == (r.suite, r.task, r.metric)
              and m.checkpoint not in ("base", r.checkpoint) and m.n == r.n]
    keyed = [(m.step if m.step is not None else steps.get(m.checkpoint, 0), m.checkpoint, m) for m in others]
    return min(keyed, key=lambda x: (x[0] is None, x[0] or 0, x[1]))[2] if keyed else None


@rule("below_reference")
def below_reference(record: Record, computed: Computed) -> Finding | None:
    """A result is far below the reference value it is measured against (a paper's claim, the previous best run)."""
    evidence: dict[str, Any] = {}
    for r in computed.results:
        if r.reference_value is None:
            continue
        t = thresholds_for(r.suite, r.task, r.metric, record.expect, r.reference_value, r.final, r.higher_is_better)
        gap = (r.final - r.reference_value) * (1 if r.higher_is_better else -1)
        fail = t.fail if t.fail is not None else DEFAULT_FAIL_RELATIVE * abs(r.reference_value)
        if gap >= fail:
            continue
        own = r.own or own_interval(record.metrics[r.index])
        inside = own is not None and own.low <= r.reference_value <= own.high
        if inside:
            continue
        source = f" ({r.reference_source})" if r.reference_source else ""
        how = (f"outside the value's 95% interval {own.low:.4f} to {own.high:.4f}" if own is not None
               else "point estimates only: the value has no stderr")
        evidence[r.label] = (f"{r.final:.4f} at {r.checkpoint} vs reference {r.reference_value:.4f}{source}: "
                             f"{gap:+.4f} in the better direction, past {fail:+.4g}; {how}")
    if not evidence:
        return None
    return Finding(
        "warn", "Below the reference value", evidence,
        "The run falls well short of the number it is measured against: a different evaluation set-up (prompt "
        "format, few-shot count, answer extraction), a weaker base model than the reference used, or a "
        "reference reported under other conditions (seed 003 compared against a paper's number).",
        ["Evaluate the base model under the same settings: a baseline explains more than a reference.",
         "Check the reference's evaluation settings (shots, prompt, metric variant) against this run's.",
         _samples_action(record, computed, {r.task for r in computed.results if r.label in evidence},
                        "answers right but not extracted point at the set-up, not the model.")])


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
            continue  # groups that all scored alike are grpo_no_signal's, over the whole run
        if k.endswith("std"):
            if max(abs(v) for v in vals) < 1e-3:
                evidence[f"{k} (last quarter)"] = f"≈ 0 over {len(vals)} logs: every rollout scored the same"
        elif max(vals) - min(vals) <= 1e-6 * max(1.0, abs(vals[0])):
            evidence[f"{k} (last quarter)"] = f"pinned at {vals[0]:.4g} over {len(vals)} logs"
    if not evidence:
        return None
    from_rewards = any("(last quarter)" in k for k in evidence)
    return Finding(
        "warn", "Saturated: the target (or reward) has no room left", evidence,
        "When every rollout gets the same reward, GRPO's advantages are zero and further steps add only "
        "drift (seed 001: GRPO on TriviaQA saturated at ~100% accuracy)." if from_rewards else
        "A 0/1 target this close to 1 leaves almost no wrong items to learn from or to show a gain on; "
        "further training adds only drift.",
        ["Stop training at the step where saturation began: later checkpoints only risk forgetting.",
         "Use harder prompts: drop those the base model already solves in every sample.",
         "Evaluate on a harder held-out split so the metric can still move."])


@rule("grpo_no_signal")
def grpo_no_signal(record: Record, computed: Computed) -> Finding | None:
    """Most GRPO groups (≥ 90% on average, or all) had equal rewards for every completion: no advantage, no learning signal."""
    hist = sorted(record.training.history, key=lambda h: h.step) if record.training else []
    share = [(h.step, h.values["frac_reward_zero_std"]) for h in hist if "frac_reward_zero_std" in h.values]
    if not share:
        return None
    mean = sum(v for _, v in share) / len(share)
    everywhere = all(v >= 1.0 for _, v in share)
    if not everywhere and mean < ZERO_STD_SHARE:
        return None
    span = f"steps {share[0][0]}–{share[-1][0]}" if len(share) > 1 else f"step {share[0][0]}"
    evidence: dict[str, Any] = {"frac_reward_zero_std": (
        f"1.0 at every one of {len(share)} logged steps ({span}): within each prompt's group every completion scored the same"
        if everywhere else f"{_pct(mean)} of groups on average over {len(share)} logged steps ({span})")}
    rewards = [h.values["reward"] for h in hist if "reward" in h.values]
    if rewards:
        evidence["reward"] = f"{min(rewards):.4g} to {max(rewards):.4g} over the run"
    # a target the model started near zero on: its samples are wrong alike, and no temperature fixes that
    cold = [r for r in computed.suite("target") if r.base is not None and r.higher_is_better and r.base <= NEAR_ZERO_BASE]
    for r in cold:
        evidence[f"{r.label} at the start"] = f"{r.base:.4g}: the model being trained almost never answers right"
    warm_up = (["Warm the model up with SFT first, then run GRPO from it: train an SFT experiment on solved examples, "
                "then start this spec from its adapter with `model.base: runs/<sft-exp>/train/final` (merged into its "
                f"base when loaded). The base scores {', '.join(f'{r.base:.4g} on {r.label}' for r in cold)}, so "
                "its samples are all wrong alike and more or hotter samples rarely help."] if cold else [])
    return Finding(
        "fail" if everywhere else "warn",
        "No learning signal: every GRPO group's rewards were equal" if everywhere
        else f"Little learning signal: {_pct(mean)} of GRPO groups had equal rewards", evidence,
        "GRPO learns from differences between the completions of one prompt; when all of them get the same "
        "reward (all wrong, all right, or a reward that cannot read them) every advantage is zero and the "
        "update is only drift. A low-entropy model at a low temperature samples near-identical completions.",
        warm_up +
        ["Read a few completions with their rewards: an answer cut off by max_completion_length or in a form "
         "the extractor cannot read scores 0 every time.",
         "Make completions differ: raise grpo.temperature or grpo.num_generations.",
         "Use prompts of the right difficulty: drop those every completion solves or none does."])


@rule("rows_quarantined")
def rows_quarantined(record: Record, computed: Computed) -> Finding | None:
    """More than 5% of the rows read, or more than 10 rows, were rejected into quarantine."""
    d = record.data
    if d is None or not d.rejected_rows:
        return None
    # a share only over what every source says it read: a source without rows_read would inflate it
    read = sum(s.rows_read for s in d.sources) if d.sources and all(s.rows_read for s in d.sources) else 0
    share = d.rejected_rows / read if read else None
    if d.rejected_rows <= QUARANTINE_ROWS and (share is None or share <= QUARANTINE_SHARE):
        return None
    of = f" of {read} rows read ({share:.1%})" if share is not None else ""
    evidence: dict[str, Any] = {"quarantined": f"{d.rejected_rows}{of}" + (f", kept in {d.quarantine} with their reasons"
                                                                         if d.quarantine else "")}
    for s in d.sources:
        if s.rejected:
            evidence[f"data {s.source}"] = (f"{s.rejected} of {s.rows_read} rows rejected" if s.rows_read
                                            else f"{s.rejected} rows rejected (rows read not recorded)")
    return Finding(
        "warn", f"{d.rejected_rows} data rows quarantined" + (f" ({_pct(share)} of those read)" if share is not None else ""),
        evidence,
        "Rows that do not have the format the spec expects (missing or empty fields, stringified JSON, "
        "numbers where text belongs) were left out of training: the model trained on less, and on a "
        "different mix, than the source holds.",
        [f"Read the quarantine file ({d.quarantine}): every row carries the reason it was rejected." if d.quarantine
         else "The record names no quarantine file: find the rejected rows and their reasons in the data stage's output.",
         ("Map columns with fields:; standardize was already on, so these rows failed for another reason."
          if record.planned.get("data.standardize") is True or d.converted_rows else
          "Map columns with fields:, or set standardize: true to convert stringified JSON and numbers."),
         "If no row may be lost, set on_invalid: fail so the data stage stops instead."])


@rule("validation_is_test")
def validation_is_test(record: Record, computed: Computed) -> Finding | None:
    """The validation set is a target task's test set, or shares prompts with it."""
    contamination = record.data.contamination if record.data else {}
    evidence: dict[str, Any] = {}
    same = []
    for key, v in sorted(contamination.items()):
        if not key.startswith("validation vs target:") or not isinstance(v, dict):
            continue
        task, hits = key.split(":", 1)[1], number(v.get("normalized")) or 0
        if v.get("same_file"):
            same.append(task)
            evidence[task] = f"validation reads {v.get('source')}, the test set of {task}"
        elif hits:
            of = f" of {v['n']}" if v.get("n") is not None else ""
            evidence[task] = f"{int(hits)}{of} test prompts of {task} are also validation prompts"
    if not evidence:
        return None
    selects = record.planned.get("method.early_stopping.on") == "loss"
    return Finding(
        "warn" if selects else "info",
        (f"The validation set is the test set of {', '.join(same)}" if same
         else f"Validation overlaps the test set of {', '.join(evidence)}"), evidence,
        "Whatever is chosen on the validation set (early stopping on held-out loss, the delivered checkpoint, "
        "settings compared across variants) is then chosen on the test set, and the test score is optimistic."
        + (" This run stops early on the validation loss." if selects else ""),
        # validation already split off the training rows: the test prompts are in the training data itself
        [("Validation is already held out of the training data (data.validation_split), so these test prompts are "
          "in the training data: remove them from it before the split."
          if record.planned.get("data.validation_split") else
          "Hold validation out of the training data (data.validation_split) or give it a file of its own."),
         "Keep the test set for the final number only."])


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
        [_samples_action(record, computed, {r.task for r in computed.suite("target") if r.label in evidence},
                         "which have no extracted answer, and what do they say?"),
         "Try another extractor (answer_anchor, last_number, mcq_word_boundary) and compare.",
         "Make the training targets end with the answer in the format the extractor reads."])


@rule("watchdog_alerts")
def watchdog_alerts(record: Record, computed: Computed) -> Finding | None:
    """A training watchdog fired (other than the collapse alerts, which mode_collapse reports)."""
    events = [e for e in (record.training.watchdog if record.training else [])
              if not any(w in e.rule for w in COLLAPSE_WATCHDOGS)]
    if not events:
        return None
    events = sorted(events, key=lambda e: (e.step, e.rule))
    evidence: dict[str, Any] = {}
    for e in events:  # two alerts of one rule at one step are both shown
        key = f"step {e.step}: {e.rule}"
        evidence[key] = f"{evidence[key]}; {e.message}" if key in evidence else e.message
    first = events[0].step
    before = [c for c in record.checkpoints if c.step < first]
    resume = (f"Resume from {max(before, key=lambda c: c.step).name} (step {max(c.step for c in before)}), the last "
              f"checkpoint before step {first}, with a lower learning rate or tighter gradient clipping." if before else
              f"No checkpoint in the record was saved before step {first}: rerun with a lower learning rate or tighter "
              "gradient clipping, saving checkpoints more often (save_every).")
    return Finding(
        "warn", f"Training watchdog fired {len(events)} time(s)", evidence,
        "A training statistic left its healthy range; the first alert usually marks where the run went "
        "wrong.",
        [f"Look at the training dynamics around step {first}, the first alert's.", resume])


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
         "Find where the value was overridden (a CLI default, the data stage) and add a test for it."]
        # a data ratio's check belongs only to a run whose data drifted
        + (["Compare the data manifest's achieved ratios with the spec before training starts."]
           if any(p.source == "data" or p.key.startswith("data.") for p in drift) else []))


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


def early_stopping_plan(planned: dict[str, Any]) -> dict[str, Any]:
    """The settings of the early stopping the plan switched on, by name (`patience`: 3): the keys under
    `method.early_stopping` (the spec's block, or an old log's settings imported there). A block set to
    null, false, "none" or "off" is no plan, and neither is a key elsewhere that only mentions early stopping."""
    def off(v: Any) -> bool:
        return v is None or v is False or (isinstance(v, str) and v.strip().lower() in ("none", "off", "false", "no", ""))

    if "method.early_stopping" in planned and off(planned["method.early_stopping"]):
        return {}
    return {k.removeprefix("method.early_stopping."): v for k, v in sorted(planned.items())
            if k.startswith("method.early_stopping.") and not off(v)}


@rule("no_eval_during_training")
def no_eval_during_training(record: Record, computed: Computed) -> Finding | None:
    """Only the end of training was evaluated, so the curve (and early stopping) had nothing to go on."""
    t = record.training
    evaluated = {m.checkpoint for m in record.metrics if m.checkpoint != "base"}
    # None means the record does not say: unknown is not false
    if t is None or t.evaluated_during_training is not False or len(evaluated) > 1:
        return None
    evidence: dict[str, Any] = {"evaluated checkpoints": ", ".join(sorted(evaluated)) or "none"}
    # record.checkpoints are the checkpoints the eval stage was given (a runtime record lists only the
    # evaluated ones), not every one training saved: how many were saved only the plan can say
    listed = [c.name for c in record.checkpoints if c.name not in evaluated]
    if listed:
        evidence["listed in the record, not evaluated"] = ", ".join(listed)
    every, steps = record.planned.get("method.save_every"), t.actual_steps
    every = every if isinstance(every, int) and every > 0 else None
    # the trainer saves every `every` steps and always at the end: the final is a point of its own
    # unless the last save fell on it
    points = steps // every + (steps % every != 0) if every and steps else None
    if every:
        evidence["saving planned"] = (f"a checkpoint every {every} steps (method.save_every)"
                                      + (f" over {steps} steps: {points}, the final included" if points else ""))
    elif "method.save_every" in record.planned and record.planned["method.save_every"] is None:
        evidence["saving planned"] = "the final checkpoint only (method.save_every not set)"
    stopping = early_stopping_plan(record.planned)
    if stopping:
        evidence["early stopping planned"] = ("method.early_stopping (" + ", ".join(f"{k} {v}" for k, v in stopping.items())
                                              + "): it had no evaluations to act on")
    n = len(record.checkpoints)
    if points and points >= 4:
        curve = (f"By its plan this run saved {points} checkpoints (every {every} steps, the final included): enough "
                 "for a curve, they only need evaluating.")
    elif n >= 4:
        curve = f"The record lists {n} checkpoints: enough for a curve, they only need evaluating."
    else:
        curve = ("Save checkpoints often enough (method.save_every) that the curve has at least four points "
                 + (f"(this run planned {points}, the final included)." if points else
                    f"(this run planned one every {every} steps)." if every else
                    "(this run planned the final one only)." if "saving planned" in evidence else
                    f"(the record lists {n} checkpoint{'s' if n != 1 else ''} and does not say how many were saved)." if n else
                    "(the record does not say how many were saved)."))
    return Finding(
        "warn", "Nothing was evaluated during training", evidence,
        ("With one evaluation at the end" if evaluated else "With no trained checkpoint evaluated")
        + " there is no way to see whether the model peaked earlier"
        + (", and the planned early stopping could not trigger" if stopping else "")
        + " (seed 000 Experiment 2; seed 003 ran with eval_frequency null).",
        ["Evaluate saved checkpoints (eval.checkpoints: all, or every: N) to get the per-checkpoint curve.", curve])


@rule("eval_set_too_small")
def eval_set_too_small(record: Record, computed: Computed) -> Finding | None:
    """A result measured on 30 items or fewer: its interval is wide and one or two answers swing it."""
    rows = [r for r in computed.results if r.n is not None and r.n <= SMALL_N]
    if not rows:
        return None
    evidence: dict[str, Any] = {}
    for r in rows:
        text = f"n={r.n}"
        if r.interval is not None and r.interval.known:
            text += f", {ci_text(r.interval, 4)} ({r.interval.method})"
            need = items_needed(r.interval)
            if need is not None and not r.interval.significant:
                text += (f"; about {need} items would resolve a change of {r.interval.delta:+.4f} "
                         f"(the same {r.interval.method} interval, computed at larger n)")
        evidence[r.label] = text
    return Finding(
        "warn", "Evaluation sets too small to trust", evidence,
        "At 30 items or fewer one or two answers swing the score by several points (seed 004: 40-60% win rates "
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
        if len(rows) > 1 and small.n and full.n and small.n < full.n and small.gain * full.gain < 0:
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


def _kept(share: float) -> str:
    """A consistency below the threshold never printed as the threshold: 0.797 is '79.7%', not '80%'."""
    return f"{share:.1%}" if _pct(share) == f"{POSITION_CONSISTENCY_MIN:.0%}" else _pct(share)


@rule("judge_position_bias")
def judge_position_bias(record: Record, computed: Computed) -> Finding | None:
    """An LLM judge changed its verdict when the two answers swapped places too often."""
    evidence: dict[str, Any] = {}
    for r in computed.suite("judge"):
        first, swapped = r.extra.get("verdicts"), r.extra.get("verdicts_swapped")
        if isinstance(first, list) and isinstance(swapped, list) and first and len(first) == len(swapped):
            # labels naming a position ("A"/"B") mean the other answer after the swap: map them back, so
            # only candidate-relative verdicts ("win"/"loss"/"tie") are compared as they are
            if {str(v).upper() for v in first + swapped} <= set(POSITION_LABELS):
                swapped = [POSITION_LABELS.get(str(v).upper(), v) for v in swapped]
                first = [str(v).upper() for v in first]
            kept = sum(a == b for a, b in zip(first, swapped))
            consistency = kept / len(first)
            kappa = cohen_kappa(first, swapped)
            extra = f", Cohen's kappa {kappa:.2f}" if kappa is not None else ""
            text = f"verdict kept after swapping in {kept} of {len(first)} comparisons ({_kept(consistency)}){extra}"
        elif number(r.extra.get("position_consistency")) is not None:
            consistency = number(r.extra["position_consistency"])
            text = f"verdict kept after swapping in {_kept(consistency)} of comparisons"
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
        # the rule fires only on a judge that already saw both orders: do not ask for that again
        ["This judge already saw every pair in both orders: count a win only when both orders agree, and a "
         "disagreement as a tie.",
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
        "The run did not reach the improvement " + ("the spec asked for (expect.target_gain)." if record.spec_file
                                                     else "the record's expect.target_gain asks for."),
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
    # a model named by a path is a local folder; any other name is a hub id
    local_model = str(record.model.get("base", "")).startswith(("/", ".", "~"))
    hub = [k for k in evidence if (k == "model" and not local_model) or k.startswith("data hf:")]
    local = [k for k in evidence if k not in hub]
    cause = "; ".join((["a hub model or dataset without a commit can change under the same name"] if hub else [])
                      + (["a local file or folder without a hash can be edited in place"] if local else []))
    return Finding(
        "warn", "Inputs are not pinned", evidence,
        cause[0].upper() + cause[1:] + ", so a rerun may not reproduce these numbers.",
        (["Pin revision: in the spec for hub inputs (tunebook resolves it to a commit and records it)."] if hub else [])
        + (["Track local files with DVC (dvc add), or record their sha256."] if local else [])
        + ["For a record written by hand, add the revision or sha256 if it is still known."])


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
    found = {f"{m.task} · {m.checkpoint}": ", ".join(map(str, w[:3])) + (f" and {len(w) - 3} more" if len(w) > 3 else "")
             for m in record.metrics if m.suite == "reward" and (w := m.extra.get("untrained_weights"))}
    if not found:
        return None
    models = sorted({str(m.extra["model"]) for m in record.metrics if m.suite == "reward"
                     and m.extra.get("untrained_weights") and m.extra.get("model")})
    evidence: dict[str, Any] = {"model": ", ".join(models)} if models else {}
    evidence.update(list(found.items())[:3])
    if len(found) > 3:
        evidence["other reward rows"] = f"{len(found) - 3} more with missing weights"
    return Finding(
        "warn", "Reward model has an untrained head: rewards are noise", evidence,
        "The checkpoint named as reward model lacks the score head's weights (for example a causal LM, or the "
        "tiny model in smoke mode); they were initialized at random, so the mean reward measures nothing.",
        ["Point eval.reward.model at a trained sequence-classification reward model with one output.",
         "Until then, read the reward rows as a check of the code path only."])
