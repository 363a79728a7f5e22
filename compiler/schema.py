"""The experiment spec: frozen pydantic models, unknown keys rejected.

A spec is built from parts (model, data, method, eval, expect); each part is its own small model so
that a stage can depend on exactly the part it reads. `tunebook schema` exports the JSON Schema that
editors use for completion (shipped specs point at it on their first line).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from compiler.errors import did_you_mean

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*(-[a-z0-9_]+)*$")


class Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- model -----------------------------------------------------------------------------------------
class ModelSpec(Part):
    """Which weights to start from."""

    base: str = Field(description="'builtin:tiny', a Hugging Face repo id, or a local folder")
    revision: str | None = Field(None, description="hub commit, tag or branch; a commit pins it")
    trust_remote_code: bool = Field(False, description="run code shipped with the model (off unless set)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


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
    """Regularize toward the reference model (adapter disabled for LoRA, frozen copy otherwise)."""

    type: Literal["kl", "kl_rev", "js"] = "kl"
    coef: float = Field(gt=0)
    start_step: int = Field(0, ge=0)
    warmup_steps: int = Field(0, ge=0, description="linear ramp of coef after start_step")
    last_tokens: int | None = Field(None, gt=0, description="only the last N tokens of each sequence")


class MethodSpec(Part):
    kind: Literal["sft"] = "sft"
    lora: LoraSpec | None = Field(default_factory=LoraSpec, description="null for full fine-tuning")
    lr: float = Field(1e-4, gt=0, lt=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="stop after N steps: the run is marked a dry run")
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_seq_length: int = Field(512, gt=0)
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    anchor: AnchorSpec | None = None
    save_every: int | None = Field(None, gt=0, description="checkpoint every N steps (final is always kept)")
    log_every: int = Field(10, gt=0)
    seed: int = 0


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
RESERVED_CELLS = ("general", "loss", "reward", "judge")
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
        if isinstance(data, dict) and data.get("preset") in PRESETS:
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
    extract: Literal["first_number", "last_number", "answer_anchor", "boxed", "mcq_word_boundary", "mcq_first_letter", "exact"] = "first_number"
    max_new_tokens: int = Field(32, gt=0)
    limit: int | None = Field(None, gt=0)
    batch_size: int = Field(64, gt=0)
    temperature: float = Field(0.0, ge=0, description="0 = greedy (deterministic); > 0 samples")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling, only with temperature > 0")
    num_samples: int = Field(1, gt=0, description="answers per prompt when sampling; an item scores the mean")
    seed: int = Field(0, description="sampling seed")

    @model_validator(mode="after")
    def _sampling(self):
        if self.temperature == 0 and (self.num_samples > 1 or self.top_p < 1):
            raise ValueError("num_samples > 1 and top_p < 1 need sampling: set temperature > 0")
        if self.name in RESERVED_CELLS:
            raise ValueError(f"'{self.name}' is reserved for a suite; name the target task something else")
        return self


class PromptSet(Part):
    """Prompts the checkpoints answer (generated greedily), for the reward model and the judges."""

    prompts: str = Field(description="a local jsonl/json/csv/parquet file with one prompt per row")
    prompt_field: str = "prompt"
    limit: int | None = Field(None, gt=0)
    chat: bool = Field(False, description="wrap each prompt in the evaluated model's chat template")
    max_new_tokens: int = Field(128, gt=0)
    batch_size: int = Field(16, gt=0)


class RewardEval(PromptSet):
    """Mean score of a sequence-classification reward model (num_labels=1) on each checkpoint's answers
    (seed 000's MT-Bench role). Scores are cached by (prompt, answer)."""

    name: str = Field("reward", description="the task name in the record")
    model: str = Field(description="a local folder or a Hugging Face repo id")
    revision: str | None = None
    trust_remote_code: bool = False
    max_length: int = Field(1024, gt=0, description="reward-model input tokens (longer inputs keep their end)")


class JudgeModel(Part):
    """One judge: a local causal LM prompted for a verdict, or an OpenAI-compatible chat endpoint."""

    name: str
    kind: Literal["hf", "openai"] = "hf"
    model: str = Field(description="hf: 'builtin:tiny', a local folder or repo id; openai: the model name sent")
    revision: str | None = None
    url: str | None = Field(None, description="openai: base URL, e.g. http://127.0.0.1:8000/v1 (/chat/completions is added)")
    api_key_env: str | None = Field(None, description="NAME of the environment variable holding the key (never the key)")
    max_new_tokens: int = Field(64, gt=0)
    timeout_s: float = Field(60.0, gt=0)
    retries: int = Field(4, ge=0, description="retries on connection errors, 429 and 5xx, with exponential backoff")
    backoff_s: float = Field(1.0, ge=0, description="first wait; doubles each retry")

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "openai" and not self.url:
            raise ValueError(f"judge '{self.name}': kind openai needs `url` (e.g. http://127.0.0.1:8000/v1)")
        if self.kind == "hf" and (self.url or self.api_key_env):
            raise ValueError(f"judge '{self.name}': url and api_key_env are for kind openai")
        if self.api_key_env is not None and not ENV_VAR_RE.match(self.api_key_env):
            raise ValueError(f"judge '{self.name}': api_key_env must be the NAME of an environment variable "
                             "(e.g. JUDGE_API_KEY), not the key itself; put the key in the environment")
        return self


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
    loss: bool = Field(True, description="held-out loss and perplexity on data.validation")
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
class Threshold(Part):
    warn: float = Field(description="a delta at or below this (in the metric's units, worse-is-negative) warns")
    fail: float = Field(description="a significant delta at or below this fails")

    @model_validator(mode="after")
    def _order(self):
        if self.fail > self.warn:
            raise ValueError(f"fail ({self.fail}) must be at or below warn ({self.warn})")
        return self


class ExpectSpec(Part):
    forgetting: Threshold = Field(default_factory=lambda: Threshold(warn=-0.01, fail=-0.05))
    target_gain: float = Field(0.0, description="minimum improvement on target tasks to call it a success")


# --- the spec --------------------------------------------------------------------------------------
class Spec(Part):
    name: str = Field(description="experiment name: lowercase letters, digits, '_' and '-'")
    description: str = ""
    model: ModelSpec
    data: DataSpec
    method: MethodSpec = Field(default_factory=MethodSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    expect: ExpectSpec = Field(default_factory=ExpectSpec)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"'{v}' is not a valid name: use lowercase letters, digits, '_' and '-' (e.g. 'twix-kl-warmup')")
        return v


# The parts each stage reads: a stage's DVC params are exactly these keys, so changing an eval
# setting never retrains.
STAGE_PARTS = {
    "data": ("data",),
    "train": ("model", "method"),
    "eval": ("model", "eval"),
    "report": ("expect",),
}
