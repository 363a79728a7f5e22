"""The experiment spec: frozen pydantic models, unknown keys rejected.

A spec is built from parts (model, data, method, eval, expect); each part is its own small model so
that a stage can depend on exactly the part it reads. `tunebook schema` exports the JSON Schema that
editors use for completion (shipped specs point at it on their first line).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
class Source(Part):
    """One dataset: a local file (jsonl/json/csv/parquet), a local dataset folder, or `hf:<repo>`."""

    source: str
    revision: str | None = Field(None, description="for hf: sources: commit, tag or branch")
    config: str | None = Field(None, description="for hf: sources: the dataset config name")
    split: str = "train"
    weight: float | None = Field(None, gt=0, le=1, description="share of the mixture; weights sum to 1")
    limit: int | None = Field(None, gt=0, description="read at most this many rows")
    format: Literal["auto", "prompt_completion", "messages", "preference", "verifiable"] = "auto"
    fields: dict[str, str] = Field(default_factory=dict, description="canonical name -> column, e.g. {prompt: question}")


class DataSpec(Part):
    train: list[Source] = Field(min_length=1)
    validation: Source | None = None
    sample_ratio: float = Field(1.0, gt=0, le=1, description="fraction of the (mixed) training rows to keep")
    limit: int | None = Field(None, gt=0, description="cap on training rows after mixing")
    seed: int = 0

    @model_validator(mode="after")
    def _weights(self):
        ws = [s.weight for s in self.train]
        if len(self.train) > 1:
            if any(w is None for w in ws):
                raise ValueError("with several train sources, give every one a weight")
            if abs(sum(ws) - 1.0) > 1e-6:
                raise ValueError(f"train weights sum to {sum(ws):g}, they must sum to 1")
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
class GeneralEval(Part):
    """General-capability (forgetting) suite through lm-evaluation-harness."""

    tasks: list[str] = Field(min_length=1)
    include_path: str | None = Field(None, description="folder of local lm-eval task YAMLs")
    limit: int | None = Field(None, gt=0)
    batch_size: int = Field(32, gt=0)
    num_fewshot: int = Field(0, ge=0)


class TargetTask(Part):
    """A generation task scored by answer extraction (the skill being trained)."""

    name: str
    source: str
    split: str = "test"
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    extract: Literal["first_number", "last_number", "answer_anchor", "boxed", "mcq_word_boundary", "mcq_first_letter", "exact"] = "first_number"
    max_new_tokens: int = Field(32, gt=0)
    limit: int | None = Field(None, gt=0)
    batch_size: int = Field(64, gt=0)


class EveryK(Part):
    every: int = Field(gt=0)


class EvalSpec(Part):
    general: GeneralEval | None = None
    target: list[TargetTask] = Field(default_factory=list)
    loss: bool = Field(True, description="held-out loss and perplexity on data.validation")
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
