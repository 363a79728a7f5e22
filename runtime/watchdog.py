"""The training watchdog: stop a run that is breaking down, keep its last good checkpoint, say why.

Seed 003's PPO run went on for 5,000 batches after its policy ratio hit 21.75, its log-probs fell to
-41 and its outputs turned into "4444..." — nothing stopped it and nothing wrote down when it broke.
Here each rule is a small pure function over a logged step (or over sampled outputs); the callback
applies them during training, stops at the first finding, and the train stage writes the finding
into `summary.json` as `watchdog: [{step, rule, message, evidence}]` (the record's WatchdogEvent).

| rule | fires when | methods |
| --- | --- | --- |
| `nonfinite_loss` | loss or grad norm is NaN or infinite | all |
| `loss_spike` | loss > `loss_spike` x median of the previous (up to `spike_window`) logged losses | SFT, DPO |
| `policy_ratio` | largest policy ratio > `max_policy_ratio` | GRPO |
| `logprob_collapse` | mean log-prob of the sampled tokens < `min_logprob` | GRPO |
| `repetition` | more than `max_repetitive` of the checked samples repeat themselves ("4444...") | all |

Log rules run at every logged step; samples are checked as they are drawn (GRPO: every batch it
generates; SFT/DPO: a few greedy generations every `samples_every` steps).

Which weights are good: the loss logged at step s was computed with the weights of step s-1 (the
update of step s comes after it), so a clean log at step s vouches for the weights of step s-1, and a
NaN at step s condemns them. Only checkpoints up to the last vouched-for step are trusted.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

from transformers import TrainerCallback

from tunebook.compiler.schema import WatchdogSpec
from tunebook.runtime.generation import generate_ids

MIN_CHARS = 8  # shorter outputs ("19") carry too little text to call repetitive
NGRAM = 3
LOSS_FLOOR = 0.2  # a spike is measured against at least this, so noise on a near-zero loss is no spike


@dataclass
class Finding:
    rule: str
    message: str
    evidence: dict = field(default_factory=dict)


def distinct_ratio(text: str, n: int = NGRAM) -> float:
    """Share of distinct character n-grams: ~1 for prose, 1/len for '4444...'."""
    grams = [text[i : i + n] for i in range(len(text) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def check_loss(values: dict, previous_losses: list[float], cfg: WatchdogSpec, kind: str) -> list[Finding]:
    """Rules on the training loss of one logged step (previous_losses: earlier finite logged losses)."""
    out = []
    bad = {k: str(values[k]) for k in ("loss", "grad_norm") if k in values and not math.isfinite(values[k])}
    if bad:
        out.append(Finding("nonfinite_loss", f"{' and '.join(bad)} became {'/'.join(sorted(set(bad.values())))}: "
                           "the weights are no longer usable (learning rate too high?)", bad))
        return out
    loss = values.get("loss")
    recent = previous_losses[-cfg.spike_window:]
    if kind != "grpo" and loss is not None and recent:  # an RL loss sits near 0, either sign: no ratio to take
        # From the second log on: an absurd learning rate blows the loss up within a step or two and
        # keeps it there, so waiting for a full window would only compare the explosion with itself.
        median = statistics.median(recent)
        if loss > cfg.loss_spike * max(median, LOSS_FLOOR):
            out.append(Finding("loss_spike", f"loss {loss:.4g} is {loss / median:.1f}x the median {median:.4g} of the last "
                               f"{len(recent)} logged steps (limit {cfg.loss_spike}x)",
                               {"loss": loss, "median": median, "window": len(recent)}))
    return out


def check_policy(values: dict, cfg: WatchdogSpec) -> list[Finding]:
    """RL rules: the importance ratio and the log-probs of the policy's own samples."""
    out = []
    ratio = values.get("policy_ratio/max")
    if ratio is not None and (not math.isfinite(ratio) or ratio > cfg.max_policy_ratio):
        out.append(Finding("policy_ratio", f"policy ratio reached {ratio:.4g}, far outside the clip range "
                           f"(limit {cfg.max_policy_ratio}): updates have left the trust region",
                           {"policy_ratio_max": ratio, "limit": cfg.max_policy_ratio}))
    logp = values.get("logprobs/mean")
    if logp is not None and (not math.isfinite(logp) or logp < cfg.min_logprob):
        out.append(Finding("logprob_collapse", f"mean log-prob of sampled tokens fell to {logp:.4g} (limit {cfg.min_logprob}): "
                           "the policy samples tokens it considers nearly impossible",
                           {"logprobs_mean": logp, "limit": cfg.min_logprob}))
    return out


def check_samples(texts: list[str], cfg: WatchdogSpec) -> list[Finding]:
    """Collapse into repetition: too many long-enough samples with few distinct n-grams."""
    judged = [t for t in texts if len(t.strip()) >= MIN_CHARS]
    if not judged:
        return []
    repetitive = [t for t in judged if distinct_ratio(t.strip()) < cfg.min_distinct]
    share = len(repetitive) / len(judged)
    if share <= cfg.max_repetitive:
        return []
    return [Finding("repetition", f"{len(repetitive)} of {len(judged)} sampled outputs repeat themselves "
                    f"(distinct {NGRAM}-grams < {cfg.min_distinct}), e.g. {repetitive[0][:40]!r}: mode collapse",
                    {"share": round(share, 3), "checked": len(judged), "examples": [t[:80] for t in repetitive[:3]],
                     "distinct": [round(distinct_ratio(t.strip()), 3) for t in repetitive[:3]]})]


class WatchdogCallback(TrainerCallback):
    """Applies the rules during training. Put it after callbacks that may request a save: when it
    fires it cancels that save (the weights at this step are not trusted) and stops the run.

    `sampler(model, tokenizer) -> list[str]` draws outputs for the repetition rule every
    `cfg.samples_every` steps; RL trainers instead hand their own samples to `observe_samples`.
    """

    def __init__(self, cfg: WatchdogSpec, kind: str, sampler=None):
        self.cfg, self.kind, self.sampler = cfg, kind, sampler
        self.events: list[dict] = []
        self.trusted_step = 0  # the latest step whose weights every rule has vouched for
        self._losses: list[float] = []
        self._samples: list[str] = []
        self._lag = 0  # how many steps older than the current one the weights that made _samples are

    def observe_samples(self, texts: list[str]) -> None:
        # an RL trainer samples at the start of a step, with the weights of the step before
        self._samples, self._lag = list(texts), 1

    @property
    def fired(self) -> bool:
        return bool(self.events)

    def _fire(self, findings: list[Finding], step: int, control) -> None:
        for f in findings:
            self.events.append({"step": step, **asdict(f)})
            print(f"[watchdog] step {step}: {f.rule}: {f.message}", flush=True)
        control.should_training_stop = True
        control.should_save = False

    def on_train_begin(self, args, state, control, **kw):
        self.trusted_step = state.global_step  # a resumed run starts from a trusted checkpoint

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kw):
        if not self.cfg.enabled or self.fired:
            return
        every = self.cfg.samples_every
        if self.sampler is not None and every and state.global_step % every == 0:
            self._samples, self._lag = self.sampler(model, processing_class), 0
        if self._samples:
            findings = check_samples(self._samples, self.cfg)
            self._samples = []
            if findings:
                # the weights that produced these samples are not good
                self.trusted_step = min(self.trusted_step, state.global_step - self._lag - 1)
                self._fire(findings, state.global_step, control)

    def on_log(self, args, state, control, logs=None, **kw):
        if not self.cfg.enabled or self.fired or not logs:
            return
        values = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if "loss" not in values and "policy_ratio/max" not in values:
            return  # the end-of-training summary line, or an evaluation
        findings = check_loss(values, self._losses, self.cfg, self.kind) + check_policy(values, self.cfg)
        if findings:
            self._fire(findings, state.global_step, control)
            return
        if "loss" in values:
            self._losses.append(values["loss"])
        self.trusted_step = max(self.trusted_step, state.global_step - 1)


def sampler_inputs(rows: list[dict], tok) -> list[list[int]]:
    """Token ids of the watchdog's prompts: a prompt row's `prompt` as the model reads it in training
    (with the tokenizer's special tokens); a chat row's conversation up to its last assistant turn,
    through the chat template with the generation prompt (the template carries its special tokens)."""
    ids = []
    for r in rows:
        if "messages" in r:
            msgs = r["messages"]
            cut = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=len(msgs))
            if cut == 0:
                continue  # nothing before the first answer to continue from
            text = tok.apply_chat_template(msgs[:cut], tokenize=False, add_generation_prompt=True)
            ids.append(tok(text, add_special_tokens=False)["input_ids"])
        elif "prompt" in r:
            ids.append(tok(r["prompt"])["input_ids"])
    return ids


def greedy_sampler(rows: list[dict], max_new_tokens: int):
    """Greedy continuations of a few fixed training prompts (prompt or chat rows): collapse shows
    first under greedy decoding."""

    def sample(model, tok) -> list[str]:
        ids = sampler_inputs(rows, tok)
        if not ids:
            return []
        was_training = model.training
        model.eval()
        try:
            return [outs[0] for outs in generate_ids(model, tok, ids, max_new_tokens, batch_size=len(ids))]
        finally:
            model.train(was_training)

    return sample
