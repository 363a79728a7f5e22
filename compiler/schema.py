"""The experiment spec: frozen pydantic models, unknown keys rejected.

A spec is built from parts (model, data, method, eval, expect); each part is its own small model so
that a stage can depend on exactly the part it reads. `tunebook schema` exports the JSON Schema that
editors use for completion (shipped specs point at it on their first line).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from tunebook.compiler.errors import did_you_mean
from tunebook.compiler.policy import redact
from tunebook.compiler.registries import answer_transforms, extractors

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*(-[a-z0-9_]+)*$")


class Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- model -----------------------------------------------------------------------------------------
class ModelSpec(Part):
    """Which weights to start from."""

    base: str = Field(description="'builtin:tiny', a Hugging Face repo id, or a local folder")
    revision: str | None = Field(None, description="hub commit, tag or branch; a commit pins it")
    trust_remote_code: bool = Field(False, description="run code shipped with the model (off unless set)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights as loaded; auto: float32 on CPU, the checkpoint's own dtype on a GPU")


# --- data ------------------------------------------------------------------------------------------
# The canonical columns of each data format: what the data stage writes and the trainers read.
FORMAT_FIELDS = {
    "prompt_completion": ("prompt", "completion"),
    "messages": ("messages",),
    "preference": ("prompt", "chosen", "rejected"),  # DPO
    "verifiable": ("prompt", "answer"),  # GRPO: a prompt and its reference answer
}


class Source(Part):
    """One dataset: a local file (.jsonl/.json/.csv/.parquet, DVC-tracked or not), a local dataset folder
    (`save_to_disk` output or a folder of data files), or `hf:<repo>` on the Hugging Face hub."""

    source: str
    revision: str | None = Field(None, description="hf: sources only: a commit pins it; a branch or tag is resolved to its commit, which is recorded")
    config: str | None = Field(None, description="dataset folders and hf: sources: the config name")
    split: str = Field("train", description="dataset folders and hf: sources: the split to read")
    weight: float | None = Field(None, gt=0, le=1, description="share of the mixture; weights sum to 1")
    limit: int | None = Field(None, gt=0, description="read at most this many rows (the first ones)")
    format: Literal["auto", "prompt_completion", "messages", "preference", "verifiable"] = Field(
        "auto", description="auto: told from the columns, trying preference, messages, prompt_completion, verifiable")
    fields: dict[str, str] = Field(default_factory=dict, description="canonical field -> this source's column, e.g. {prompt: question}")

    @field_validator("fields")
    @classmethod
    def _canonical_names(cls, v: dict[str, str]) -> dict[str, str]:
        known = {f for names in FORMAT_FIELDS.values() for f in names}
        for name in v:
            if name not in known:
                hint = did_you_mean(name, known)
                raise ValueError(f"'{name}' is not a canonical field ({', '.join(sorted(known))})" + (f"; {hint}" if hint else ""))
        return v

    @model_validator(mode="after")
    def _revision_is_for_hub(self):
        if self.revision and not self.source.startswith("hf:"):
            raise ValueError("revision applies to hf: sources; a local file is pinned by its sha256 (and DVC md5)")
        return self


class DataSpec(Part):
    """Training and validation data: sources mixed by weight, then held out, sampled and capped, all seeded.
    docs/data.md describes each step and the manifest the data stage writes."""

    train: list[Source] = Field(min_length=1)
    validation: Source | None = Field(None, description="a separate validation set (held-out loss, contamination check)")
    validation_split: float | None = Field(None, gt=0, lt=1, description="instead of validation: hold out this fraction of the mixed training rows (seeded, same mixture and strata)")
    sample_ratio: float = Field(1.0, gt=0, le=1, description="fraction of the (mixed) training rows to keep, after any validation_split")
    limit: int | None = Field(None, gt=0, description="cap on training rows after mixing and sampling")
    stratify: str | None = Field(None, description="a column of every train source (e.g. category): mixing, hold-out and sampling keep each value's share")
    on_invalid: Literal["quarantine", "fail"] = Field(
        "quarantine", description="a row that fails validation: quarantine (kept in quarantine.jsonl with its reason, counted in the manifest) or fail (stop, listing the reasons)")
    standardize: bool = Field(
        False, description="turn values that are not plain text into text instead of rejecting them: stringified JSON and JSON objects/lists "
                           "are rendered (an object as 'Key: value' lines, e.g. 'Explanation: ...\\nAnswer: ...'), numbers written out")
    seed: int = Field(0, description="seeds mixing, hold-out, sampling and row order")

    @model_validator(mode="after")
    def _weights(self):
        ws = [s.weight for s in self.train]
        if len(self.train) > 1:
            if any(w is None for w in ws):
                raise ValueError("with several train sources, give every one a weight")
            if abs(sum(ws) - 1.0) > 1e-6:
                raise ValueError(f"train weights sum to {sum(ws):g}, they must sum to 1")
        return self

    @model_validator(mode="after")
    def _one_validation(self):
        if self.validation and self.validation_split:
            raise ValueError("give validation (a separate set) or validation_split (held out from train), not both")
        return self


# --- method ----------------------------------------------------------------------------------------
class LoraSpec(Part):
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0, description="usually 2 x r")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class AnchorSpec(Part):
    """Pull the policy toward a reference while fine-tuning: loss = task loss + coef(step) x divergence.

    The reference is the base model: the adapter disabled for LoRA, a frozen copy for full fine-tuning.
    The divergence is averaged over completion tokens (prompt tokens never count).
    """

    type: Literal["kl", "kl_rev", "js"] = Field("kl", description="kl: KL(reference || policy), forward; kl_rev: KL(policy || reference); js: Jensen-Shannon")
    coef: float = Field(gt=0)
    start_step: int = Field(0, ge=0, description="no anchor before this optimizer step")
    warmup_steps: int = Field(0, ge=0, description="linear ramp of coef after start_step")
    last_tokens: int | None = Field(None, gt=0, description="only the last N completion tokens of each sequence")


class EarlyStoppingSpec(Part):
    """Measure a score while training, keep the best checkpoint as the result, stop when it stalls."""

    on: Literal["general", "loss"] = Field("general", description="general: eval.general on a subset (forgetting); loss: held-out loss on data.validation")
    every: int = Field(gt=0, description="measure every N optimizer steps; a checkpoint is saved at each")
    patience: int = Field(3, gt=0, description="measurements without improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="an improvement smaller than this counts as none")
    limit: int | None = Field(50, gt=0, description="docs per general task, or validation rows, per measurement")
    metric: str = Field("acc", description="general: the lm-eval metric averaged over eval.general.tasks")

    @model_validator(mode="before")
    @classmethod
    def _bare_on(cls, data):
        # YAML 1.1 reads an unquoted `on:` key as the boolean true; take it as the user meant it
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data


class WatchdogSpec(Part):
    """Stop a run that is breaking down, keep its last good checkpoint, and write down why (seed 003).

    Rules are checked at every logged step (log_every); checkpoints newer than the last weights the
    rules vouched for are not trusted and are moved to `discarded/`.
    """

    enabled: bool = True
    loss_spike: float = Field(10.0, gt=1, description="stop when the loss exceeds this multiple of the median of the previous spike_window logged losses")
    spike_window: int = Field(5, gt=0, description="how many previous logged losses the spike rule takes the median of")
    max_policy_ratio: float = Field(10.0, gt=1, description="RL: stop when the largest policy ratio exceeds this (clipping keeps it near 1 +- epsilon)")
    min_logprob: float = Field(-15.0, lt=0, description="RL: stop when the mean log-prob of the sampled tokens falls below this")
    min_distinct: float = Field(0.3, gt=0, le=1, description="a sample whose share of distinct character 3-grams is below this is repetitive ('4444...')")
    max_repetitive: float = Field(0.5, ge=0, lt=1, description="stop when more than this share of the checked samples is repetitive")
    samples_every: int | None = Field(50, gt=0, description="SFT/DPO: generate from a few training prompts every N steps to check for repetition; RL checks its own samples")
    num_samples: int = Field(4, gt=0)
    max_new_tokens: int = Field(32, gt=0)


# Answer extractors and answer transforms by name (a reward, a teacher filter or an eval task uses them):
# the built-ins of runtime/extract.py, which editors are offered, or a plugin's (`plugins:`, docs/plugins.md).
# `tunebook compile` checks the names against both (compiler/inputs.py), with a did-you-mean.
Extract = Annotated[str, Field(json_schema_extra={"examples": list(extractors())})]
# Omitted from params.yaml when unset, so specs without one compile to what they did before it existed.
AnswerTransform = Annotated[str | None, Field(exclude_if=lambda v: v is None, json_schema_extra={"examples": list(answer_transforms())},
                                              description="prepares the reference answer before it is compared, e.g. "
                                                          "gsm8k_hash ('... #### 42' -> '42') or boxed (MATH's \\boxed{...})")]


def _system_needs_chat(block):
    """A block's `system:` with `chat: false` asks two things at once: refused."""
    if block.system is not None and block.chat is False:
        raise ValueError("a system prompt needs chat: true")
    return block


class ChatPrompts(Part):
    """How a method that builds its own prompts from plain-text rows (GRPO, DPO) hands them to trl.
    Unset, resolved at compile time (Spec._chat_as_trained) to the way the target tasks ask, so that
    training and evaluation see one prompt, and params.yaml (the train stage's params and fingerprint)
    carries it: flipping a target task's `chat` retrains."""

    # shown in params.yaml only when set: a spec that asks raw compiles to the same bytes as before these fields
    chat: bool | None = Field(None, exclude_if=lambda v: not v,
                              description="each prompt goes to trl as one user turn through the model's chat template (DPO: each "
                                          "answer as the assistant's turn); unset: as the target tasks ask (chat when every "
                                          "eval.target task has chat: true)")
    system: str | None = Field(None, exclude_if=lambda v: v is None,
                               description="with chat: the system prompt (unset: the target tasks' when they share one, else the "
                                           "template's own default)")

    _system = model_validator(mode="after")(_system_needs_chat)


class GRPOSpec(ChatPrompts):
    """Online RL with verifiable rewards (trl GRPOTrainer). Data rows: {prompt, answer}."""

    rewards: list[str] = Field(min_length=1, description="reward functions by name (runtime/rewards.py or a plugin), e.g. [numeric_match, format]")
    reward_weights: list[float] | None = Field(None, description="one weight per reward; default 1 each")
    extract: Extract = Field("first_number", description="how answer-checking rewards read a completion")
    answer_transform: AnswerTransform = None
    num_generations: int = Field(8, ge=2, description="completions per prompt; batch_size x grad_accum must divide by it")
    temperature: float = Field(1.0, gt=0)
    max_completion_length: int = Field(64, gt=0)
    beta: float = Field(0.0, ge=0, description="KL coefficient toward the reference; 0 loads no reference model")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo"] = "dapo"
    epsilon: float = Field(0.2, gt=0, description="clip range of the policy ratio: 1 +- epsilon")
    epsilon_high: float | None = Field(None, gt=0, description="upper clip if different (DAPO uses 0.28)")
    num_iterations: int = Field(1, ge=1, description="updates per generation batch; above 1 the ratio moves and clipping bites")

    @model_validator(mode="after")
    def _weights(self):
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            raise ValueError(f"{len(self.reward_weights)} reward_weights for {len(self.rewards)} rewards")
        return self


class DPOSpec(ChatPrompts):
    """Direct preference optimization (trl DPOTrainer). Data rows: {prompt, chosen, rejected}."""

    beta: float = Field(0.1, gt=0, description="strength of the implicit KL toward the reference")
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust", "apo_zero", "apo_down"] = "sigmoid"


class TeacherSpec(Part):
    """Teacher-SFT (seed 001's SF-SFT): sample solutions from a teacher, keep the ones the reward
    accepts (rejection sampling), fine-tune on them. Data rows: {prompt, answer}."""

    base: str = Field(description="the teacher: 'builtin:tiny', a Hugging Face repo id, or a local folder")
    revision: str | None = None
    trust_remote_code: bool = False
    reward: str = Field("numeric_match", description="reward function (runtime/rewards.py or a plugin); a completion passes at reward >= 1")
    extract: Extract = "first_number"
    answer_transform: AnswerTransform = None
    num_samples: int = Field(4, gt=0, description="completions sampled per prompt")
    temperature: float = Field(0.7, ge=0, description="0 is greedy")
    max_new_tokens: int = Field(64, gt=0)
    keep_per_prompt: int | None = Field(1, gt=0, description="distinct passing completions kept per prompt; null keeps all")
    batch_size: int = Field(32, gt=0)
    seed: int = 0
    # shown in params.yaml only when set: a spec from before these fields compiles to the same bytes
    chat: bool | None = Field(None, exclude_if=lambda v: not v,
                              description="ask the teacher through its chat template (one user turn); unset: as the training data, "
                                          "true when a train source has format: messages. The kept rows stay {prompt, completion}")
    system: str | None = Field(None, exclude_if=lambda v: v is None,
                               description="with chat: the teacher's system prompt (unset: the template's own default)")

    _system = model_validator(mode="after")(_system_needs_chat)


class KindBlocks(NamedTuple):
    """The `method:` blocks one kind reads: the one it cannot run without (`hint`: what the error for
    a missing one says after its name), the ones it may take, and whether `packing` applies."""

    needs: str | None = None
    hint: str = ""
    takes: tuple[str, ...] = ()
    packing: bool = False


# The training methods, by kind: one module each in runtime/methods/ (tests/unit/runtime/test_methods.py
# checks that the runtime registers exactly these kinds). `kind`'s choices and the check that each
# block matches the kind both come from this table; a new method adds its row and its block field.
METHOD_BLOCKS: dict[str, KindBlocks] = {
    "sft": KindBlocks(takes=("anchor",), packing=True),
    "grpo": KindBlocks(needs="grpo", hint=" naming its rewards, e.g. grpo: {rewards: [numeric_match]}"),
    "dpo": KindBlocks(needs="dpo", hint=", e.g. dpo: {beta: 0.1}"),  # written out with defaults when absent
    "teacher-sft": KindBlocks(needs="teacher", hint=", e.g. teacher: {base: builtin:tiny, num_samples: 4}",
                              takes=("anchor",), packing=True),
}
MethodKind = Literal[tuple(METHOD_BLOCKS)]


def kinds_reading(block: str) -> list[str]:
    """The kinds a `method:` block belongs to, in table order."""
    return [k for k, b in METHOD_BLOCKS.items() if block == b.needs or block in b.takes]


class MethodSpec(Part):
    """How to train. `kind` picks the trainer; the block named after it holds that trainer's settings."""

    kind: MethodKind = "sft"
    lora: LoraSpec | None = Field(default_factory=LoraSpec, description="null for full fine-tuning")
    lr: float = Field(1e-4, gt=0, lt=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="run length in optimizer steps, as in HF/trl; a run it cuts short of its epochs is marked shortened (20 steps or fewer: a smoke test)")
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_seq_length: int = Field(512, gt=0)
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    packing: bool = Field(False, description="SFT: pack several rows into each sequence (fewer pad tokens)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less memory, ~1.5x the step time "
                                         "(trl's configs turn it on by default; here only the spec does)")
    anchor: AnchorSpec | None = None
    grpo: GRPOSpec | None = None
    dpo: DPOSpec | None = None
    teacher: TeacherSpec | None = None
    early_stopping: EarlyStoppingSpec | None = None
    watchdog: WatchdogSpec = Field(default_factory=WatchdogSpec)
    save_every: int | None = Field(None, gt=0, description="checkpoint every N steps (final is always kept)")
    log_every: int = Field(10, gt=0)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _dpo_defaults(cls, data):
        # written out in params.yaml, so the values that ran are visible without reading code
        if isinstance(data, dict) and data.get("kind") == "dpo" and data.get("dpo") is None:
            data = {**data, "dpo": {}}
        return data

    @model_validator(mode="after")
    def _blocks_match_kind(self):
        mine = METHOD_BLOCKS[self.kind]
        for block in dict.fromkeys(b for kb in METHOD_BLOCKS.values() for b in (kb.needs, *kb.takes) if b):
            if getattr(self, block) is not None and block != mine.needs and block not in mine.takes:
                raise ValueError(f"`{block}:` is used only when kind is {' or '.join(kinds_reading(block))} (kind is {self.kind})")
        if self.packing and not mine.packing:
            raise ValueError(f"packing is for SFT kinds only (kind is {self.kind})")
        if mine.needs and getattr(self, mine.needs) is None:
            raise ValueError(f"kind {self.kind} needs a `{mine.needs}:` block{mine.hint}")
        if self.kind == "grpo":
            per_step = self.batch_size * self.grad_accum
            if per_step % self.grpo.num_generations:
                raise ValueError(f"batch_size x grad_accum ({per_step}) must be a multiple of grpo.num_generations ({self.grpo.num_generations})")
        return self


class ResourcesSpec(Part):
    """How many processes train: more than one starts through torch's launchers (runtime/launch.py).
    The processes set the global batch, so this is a parameter; where they run is cluster.yaml's."""

    gpus: int = Field(1, gt=0, description="processes per node (one per GPU; on CPU, gloo processes)")
    nodes: int = Field(1, gt=0, description="more than one needs a SLURM job (cluster.yaml)")
    strategy: Literal["ddp", "fsdp", "deepspeed"] = "ddp"
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    zero_stage: int = Field(2, ge=0, le=3, description="deepspeed only")


# --- eval ------------------------------------------------------------------------------------------
# Seed 001's forgetting suite: ten lm-eval benchmarks, zero-shot, and the one metric that counts for
# each (the rest are still recorded). `preset: forgetting-10` expands to exactly this.
PRESETS: dict[str, dict[str, str]] = {
    "forgetting-10": {
        "arc_challenge": "acc_norm",
        "arc_easy": "acc_norm",
        "hellaswag": "acc_norm",
        "winogrande": "acc",
        "piqa": "acc_norm",
        "boolq": "acc",
        "openbookqa": "acc_norm",
        "truthfulqa_mc2": "acc",
        "mmlu": "acc",
        "ifeval": "prompt_level_strict_acc",
    },
}
# Cell names the eval stage uses for its own suites; a target task may not take one.
RESERVED_CELLS = ("general", "loss", "preference", "verifiable", "reward", "judge")
ENV_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class GeneralEval(Part):
    """General-capability (forgetting) suite through lm-evaluation-harness: standard tasks by name,
    local task folders (`include_path`), or a named preset."""

    preset: Literal["forgetting-10"] | None = Field(None, description="a named suite; its tasks come first, `tasks` adds more")
    tasks: list[str] = Field(default_factory=list, description="lm-eval task or group names")
    primary_metrics: dict[str, str] = Field(default_factory=dict, description="task -> the metric that counts (a preset fills its own)")
    include_path: str | None = Field(None, description="folder of local lm-eval task YAMLs")
    limit: int | None = Field(None, gt=0)
    batch_size: int = Field(32, gt=0)
    num_fewshot: int = Field(0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data):
        # Expand here, not at run time, so params.yaml (and so DVC and the record) shows every task
        # and metric. Idempotent: validating the expanded form again changes nothing.
        if isinstance(data, dict) and isinstance(data.get("preset"), str) and data["preset"] in PRESETS:
            preset = PRESETS[data["preset"]]
            extra = [t for t in data.get("tasks") or [] if t not in preset]
            data = {**data, "tasks": [*preset, *extra], "primary_metrics": {**preset, **(data.get("primary_metrics") or {})}}
        return data

    @model_validator(mode="after")
    def _check(self):
        if not self.tasks:
            raise ValueError("give `tasks` or a `preset` (e.g. preset: forgetting-10)")
        stray = sorted(set(self.primary_metrics) - set(self.tasks))
        if stray:
            raise ValueError(f"primary_metrics names tasks that are not in `tasks`: {stray}")
        return self


class TargetTask(Part):
    """A generation task scored by answer extraction (the skill being trained). Greedy decoding
    unless `temperature` > 0; sampling settings are recorded with the result."""

    name: str
    source: str
    split: str = "test"
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    extract: Extract = "first_number"
    answer_transform: AnswerTransform = None
    max_new_tokens: int = Field(32, gt=0)
    limit: int | None = Field(None, gt=0)
    batch_size: int = Field(64, gt=0)
    temperature: float = Field(0.0, ge=0, description="0 = greedy (deterministic); > 0 samples")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling, only with temperature > 0")
    num_samples: int = Field(1, gt=0, description="answers per prompt when sampling; an item scores the mean")
    seed: int = Field(0, description="sampling seed")
    chat: bool | None = Field(None, description="ask through the model's chat template (one user turn); "
                                                "unset: as the training data, true when a train source has format: messages")
    system: str | None = Field(None, description="with chat: the system prompt (unset: the template's own default)")

    @model_validator(mode="after")
    def _sampling(self):
        if self.temperature == 0 and (self.num_samples > 1 or self.top_p < 1):
            raise ValueError("num_samples > 1 and top_p < 1 need sampling: set temperature > 0")
        if self.name in RESERVED_CELLS:
            raise ValueError(f"'{self.name}' is reserved for a suite; name the target task something else")
        if self.system is not None and self.chat is False:
            raise ValueError("a system prompt needs chat: true")
        return self


class PromptSet(Part):
    """Prompts the checkpoints answer (generated greedily), for the reward model and the judges."""

    prompts: str = Field(description="a local jsonl/json/csv/parquet file with one prompt per row")
    prompt_field: str = "prompt"
    limit: int | None = Field(None, gt=0)
    chat: bool | None = Field(None, description="ask the evaluated model through its chat template (one user turn); "
                                                "unset: as the training data, true when a train source has format: messages")
    max_new_tokens: int = Field(128, gt=0)
    batch_size: int = Field(16, gt=0)
    # in params.yaml and the cells' settings only when set, so earlier specs and cells keep their bytes
    system: str | None = Field(None, exclude_if=lambda v: v is None,
                               description="with chat: the evaluated model's system prompt (unset: the template's own default)")

    @model_validator(mode="after")
    def _system(self):
        if self.system is not None and self.chat is False:
            raise ValueError("a system prompt needs chat: true")
        return self


class RewardEval(PromptSet):
    """Mean score of a sequence-classification reward model (num_labels=1) on each checkpoint's answers
    (seed 000's MT-Bench role). Scores are cached by (prompt, answer)."""

    name: str = Field("reward", description="the task name in the record")
    model: str = Field(description="a local folder or a Hugging Face repo id")
    revision: str | None = None
    trust_remote_code: bool = False
    max_length: int = Field(1024, gt=0, description="reward-model input tokens (longer inputs keep their end)")


class JudgeModel(Part):
    """One judge: a local causal LM prompted for a verdict, or an OpenAI-compatible chat endpoint. A local
    judge's unset `chat` is decided at run time by its tokenizer (runtime/suites/judge.judge_chat)."""

    name: str
    kind: Literal["hf", "openai"] = "hf"
    model: str = Field(description="hf: 'builtin:tiny', a local folder or repo id; openai: the model name sent")
    revision: str | None = None
    url: str | None = Field(None, description="openai: base URL, e.g. http://127.0.0.1:8000/v1 (/chat/completions is added)")
    api_key_env: str | None = Field(None, description="NAME of the environment variable holding the key (never the key)")
    max_new_tokens: int = Field(64, gt=0)
    # hf only; in params.yaml and the judge's identity only when set (unset is what judges did before)
    chat: bool | None = Field(None, exclude_if=lambda v: v is None,
                              description="hf: put the judge prompt as one user turn through the judge's chat template; "
                                          "unset: true when its tokenizer has a chat template (judges are instruct models)")
    system: str | None = Field(None, exclude_if=lambda v: v is None,
                               description="the judge's system prompt (hf with chat, or sent as a system message to openai)")
    timeout_s: float = Field(60.0, gt=0)
    retries: int = Field(4, ge=0, description="retries on connection errors, 429 and 5xx, with exponential backoff")
    backoff_s: float = Field(1.0, ge=0, description="first wait; doubles each retry")

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "openai" and not self.url:
            raise ValueError(f"judge '{self.name}': kind openai needs `url` (e.g. http://127.0.0.1:8000/v1)")
        if self.kind == "hf" and (self.url or self.api_key_env):
            raise ValueError(f"judge '{self.name}': url and api_key_env are for kind openai")
        if self.kind == "openai" and self.chat is not None:
            raise ValueError(f"judge '{self.name}': chat is for kind hf (an openai endpoint is always sent chat messages)")
        if self.system is not None and self.chat is False:
            raise ValueError(f"judge '{self.name}': a system prompt needs chat (unset or true)")
        if self.api_key_env is not None and not ENV_VAR_RE.match(self.api_key_env):
            raise ValueError(f"judge '{self.name}': api_key_env must be the NAME of an environment variable "
                             "(e.g. JUDGE_API_KEY), not the key itself; put the key in the environment")
        return self


# What a judge template must contain (the runtime fills exactly these, in one pass).
JUDGE_PLACEHOLDERS = ("{question}", "{answer_a}", "{answer_b}")


class JudgeEval(PromptSet):
    """Pairwise judging: each checkpoint's answer against the base model's, shown to every judge in both
    orders (position bias cancels); win rate with a Wilson interval, position consistency, kappa."""

    name: str = Field("judge", description="the judge set's task name in the record")
    judges: list[JudgeModel] = Field(min_length=1)
    template: str | None = Field(None, description="file with the judge prompt: {question}, {answer_a}, {answer_b}")

    @field_validator("judges")
    @classmethod
    def _unique(cls, v):
        names = [j.name for j in v]
        if len(set(names)) != len(names):
            raise ValueError(f"judge names must be unique: {names}")
        return v


class EveryK(Part):
    every: int = Field(gt=0)


class EvalSpec(Part):
    general: GeneralEval | None = None
    target: list[TargetTask] = Field(default_factory=list)
    loss: bool = Field(True, description="held-out evaluation on data.validation: loss and perplexity for SFT, preference accuracy and margin for DPO, mean reward for GRPO and teacher-SFT")
    reward: RewardEval | None = None
    judge: JudgeEval | None = None
    checkpoints: Literal["all", "final"] | EveryK = "all"
    samples_per_task: int = Field(6, ge=0, description="outputs kept in the record for the log")

    @field_validator("target")
    @classmethod
    def _unique(cls, v):
        names = [t.name for t in v]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"target task names must be unique, repeated: {sorted(dup)}")
        return v


# --- expectations ----------------------------------------------------------------------------------
# A threshold is a change in the better direction, negative meaning worse: a number is absolute in the
# metric's units, "-5%" is relative to the baseline. The same grammar and checks as the reports'
# (reports/status.parse_level; compiler and reports do not import each other, so
# tests/unit/compiler/test_thresholds.py holds the two to the same answers on a grid of inputs).
_PERCENT = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*%\s*$")
Level = float | Annotated[str, StringConstraints(pattern=_PERCENT.pattern)]


def _level(x: float | str | None, key: str) -> tuple[float, bool] | None:
    """(value, relative) of one threshold; ValueError naming the key for a positive or unreadable one."""
    if x is None:
        return None
    if isinstance(x, str):
        m = _PERCENT.match(x)
        if not m:
            raise ValueError(f"{key}: {x!r} is not a threshold (a number like -0.05 or a string like '-5%')")
        value, relative = float(m.group(1)) / 100, True
    else:
        value, relative = float(x), False
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{key}: not a finite number")
    if value > 0:
        shown = f"{-value * 100:g}%" if relative else f"{-value:g}"
        raise ValueError(f"{key}: {x!r} is positive; thresholds are changes in the better direction, negative "
                         f"meaning worse: did you mean {shown}?")
    return value, relative


class TaskThreshold(Part):
    warn: Level | None = Field(None, description="warn at a change at or below this: -0.01 (metric units) or '-1%' (of the baseline)")
    fail: Level | None = Field(None, description="a significant change at or below this fails: -0.05 or '-5%'")

    @model_validator(mode="after")
    def _order(self):
        warn, fail = _level(self.warn, "warn"), _level(self.fail, "fail")
        if warn and fail and warn[1] == fail[1] and fail[0] > warn[0]:
            raise ValueError(f"fail ({self.fail}) must be at or below warn ({self.warn}): fail is the larger drop")
        return self


class Threshold(TaskThreshold):
    tasks: dict[str, TaskThreshold] = Field(
        default_factory=dict, description="per task ('mt_bench') or task/metric ('wikitext/word_perplexity'): "
                                          "for metrics whose scale the top-level numbers do not fit")


class ExpectSpec(Part):
    forgetting: Threshold = Field(default_factory=lambda: Threshold(warn=-0.01, fail=-0.05),
                                  description="absolute numbers apply to 0–1 metrics; other scales need '-x%' or tasks:")
    target_gain: float = Field(0.0, description="minimum improvement on target tasks to call it a success")


# --- the spec --------------------------------------------------------------------------------------
def _as_targets_ask(block: dict, targets: list[dict]) -> dict:
    """A GRPO/DPO block's `chat` and `system`, resolved (raw spec dicts, targets already resolved): as
    set; a system prompt alone asks for chat; else chat when every target task asks through the
    template, with their system prompt when they share one."""
    if block.get("chat") is not None:
        return block
    if block.get("system") is not None:
        return {**block, "chat": True}
    if not targets or not all(t.get("chat") for t in targets):
        return {**block, "chat": False}
    systems = {t.get("system") for t in targets}
    system = systems.pop() if len(systems) == 1 else None
    return {**block, "chat": True, **({"system": system} if system is not None else {})}


class Spec(Part):
    name: str = Field(description="experiment name: lowercase letters, digits, '_' and '-'")
    description: str = ""
    model: ModelSpec
    data: DataSpec
    method: MethodSpec = Field(default_factory=MethodSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    expect: ExpectSpec = Field(default_factory=ExpectSpec)
    resources: ResourcesSpec | None = Field(None, description="GPUs for the train stage; unset: one process")
    plugins: list[str] = Field(default_factory=list, exclude_if=lambda v: not v,
                               description="the project's .py files that add rewards, answer extractors and answer transforms "
                                           "(docs/plugins.md), e.g. [plugins/my_rewards.py]")
    allow_external_inputs: bool = Field(
        False, description="let input paths (data, eval sets, templates, local models) point outside the project, "
                            "symlinks included; off: such a path is an error. Outputs always stay inside")

    @model_validator(mode="before")
    @classmethod
    def _chat_as_trained(cls, data):
        # Whatever a model is asked (target tasks, the reward and judge prompt sets, the teacher) is asked
        # the way the model was trained: through the chat template when the training data is chat; a
        # system prompt alone asks for chat. Resolved here, so params.yaml, the shared baseline's key and
        # the record show it. (A judge's own `chat` is not: it follows the judge's tokenizer, runtime.)
        try:
            chat = any(src.get("format") == "messages" for src in data["data"]["train"])
        except (KeyError, TypeError, AttributeError):
            return data  # not a well-formed spec: the field validators say what is wrong

        def resolve(part):
            if isinstance(part, dict) and part.get("chat") is None:
                return {**part, "chat": chat or part.get("system") is not None}
            return part

        ev = data.get("eval")
        if isinstance(ev, dict):
            ev = {**ev, **{k: resolve(ev[k]) for k in ("reward", "judge") if ev.get(k) is not None}}
            if isinstance(ev.get("target"), list):
                ev["target"] = [resolve(t) for t in ev["target"]]
            data = {**data, "eval": ev}
        method = data.get("method")
        if isinstance(method, dict):
            if isinstance(method.get("teacher"), dict):
                method = {**method, "teacher": resolve(method["teacher"])}
            # GRPO and DPO ask the other way round: as the (resolved) target tasks ask
            targets = [t for t in ev.get("target") or [] if isinstance(t, dict)] if isinstance(ev, dict) else []
            blocks = {"grpo": method.get("grpo"), "dpo": method.get("dpo")}
            if method.get("kind") == "dpo" and blocks["dpo"] is None:
                blocks["dpo"] = {}  # DPO runs on defaults without a block: its chat is resolved all the same
            method = {**method, **{k: _as_targets_ask(b, targets) for k, b in blocks.items() if isinstance(b, dict)}}
            data = {**data, "method": method}
        return data

    @field_validator("description")
    @classmethod
    def _no_secret(cls, v: str) -> str:
        # free text travels (params.yaml, dvc exp show, the record's title, the log's heading): a pasted
        # token is cut out here, and `tunebook compile` warns about it (compiler/policy.py)
        return redact(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        # fullmatch: `$` alone would also accept a trailing newline, which ends up in stage names and paths
        if not NAME_RE.fullmatch(v) or len(v) > MAX_NAME:
            raise ValueError(f"{v[:80]!r} is not a valid name: use lowercase letters, digits, '_' and '-', at most "
                             f"{MAX_NAME} characters (e.g. 'twix-kl-warmup')")
        if v in RESERVED_NAMES:
            raise ValueError(f"'{v}' is reserved ({RESERVED_NAMES[v]}); pick another experiment name")
        return v


# The name becomes params.yaml's top-level key and the folders data/<name>, runs/<name>,
# logs/<name>.md: these would collide with what tunebook writes there itself.
MAX_NAME = 64
RESERVED_NAMES = {"baselines": "params.yaml key of the shared baselines", "builtin": "params.yaml key of the builtin models",
                  "tiny": "data/tiny and models/tiny belong to builtin:tiny", "review": "logs/review.md is `tunebook review`'s log"}


# The parts each stage reads: a stage's DVC params are exactly these keys, so changing an eval
# setting never retrains.
STAGE_PARTS = {
    "data": ("data",),
    "train": ("model", "method"),
    "eval": ("model", "eval"),
    "report": ("expect",),
}


# --- the schema of spec files, for editors ----------------------------------------------------------
EXTENDS_SCHEMA = {
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
    "description": "parent spec file(s), relative to this file: deep-merged, this file wins; lists are replaced",
}


def file_schema() -> dict:
    """The JSON Schema of spec files as an editor sees them: one raw file, before `extends:` merging.

    A file may be a partial base (`_base.yaml`) or a variant that names only what it changes, and the
    merge is deep, so no key of a mapping is required here: the CLI checks the merged spec for what
    is missing. Items of a list are complete (a child's list replaces the parent's whole), so they keep
    their required keys. Everything else (types, bounds, choices, unknown keys) is checked as the CLI
    checks it. `tunebook schema` writes this; tests/unit/compiler/test_schema.py runs a validator over
    every shipped spec and base file with it.
    """
    schema = Spec.model_json_schema()
    defs = schema.pop("$defs", {})
    out: dict = {}

    def ref(name: str, partial: bool) -> str:
        key = f"{name}Partial" if partial else name
        if key not in out:
            out[key] = {}  # reserved first: definitions may refer to themselves
            out[key] = walk(defs[name], partial)
        return f"#/$defs/{key}"

    def walk(node, partial: bool):
        if isinstance(node, list):
            return [walk(n, partial) for n in node]
        if not isinstance(node, dict):
            return node
        res = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/"):
                res[k] = ref(v.removeprefix("#/$defs/"), partial)
            elif k == "required" and partial:
                continue
            elif k in ("items", "prefixItems"):
                res[k] = walk(v, False)  # a list replaces the parent's: each item is complete
            elif k in ("properties", "patternProperties", "$defs"):
                res[k] = {name: walk(sub, partial) for name, sub in v.items()}
            elif k in ("default", "examples", "const", "enum", "description", "title"):
                res[k] = v  # values, not schemas
            else:
                res[k] = walk(v, partial)
        return res

    root = walk(schema, True)
    root["properties"] = {"extends": EXTENDS_SCHEMA, **root["properties"]}
    root["title"] = "tunebook spec file"
    root["description"] = ("A tunebook experiment spec, or a base that specs extend. Keys are optional here because a "
                           "file may inherit them (`extends:`); `tunebook compile` checks the merged spec.")
    root["$defs"] = dict(sorted(out.items()))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **root}


def file_schema_text() -> str:
    """specs/schema.json as `tunebook schema` writes it (sorted keys: the same bytes every time)."""
    return json.dumps(file_schema(), indent=1, sort_keys=True) + "\n"
