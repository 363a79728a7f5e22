"""What every tunebook trainer shares, whatever the method (SFT, GRPO, DPO, teacher-SFT): the
TrainingArguments built from the spec, the LoRA config, how a run really trained (the effective
arguments and precision, read off the trainer, for the record) and the portable adapter config.
Imported by runtime/train.py and the method modules (runtime/methods/); imports none of them.
"""

from __future__ import annotations

from pathlib import Path

from tunebook.runtime.models import device


def trainer_args(m, out: Path) -> dict:
    """TrainingArguments every tunebook trainer shares (SFTConfig, GRPOConfig and DPOConfig extend it).

    trl's configs default to bf16 autocast and gradient checkpointing, on any device; both are turned
    off here. The precision is the spec's `model.dtype` (the weights as loaded) plus `resources.
    mixed_precision` (`accelerate launch --mixed_precision`, which TrainingArguments still reads from
    the environment), so a float32 spec trains in float32. Checkpointing recomputes every forward in
    the backward pass: measured with bench/bench_gpu.py on CPU, trl's defaults ran LoRA SFT at ~0.57x a
    bare loop's tokens/s (docs/performance.md)."""
    from transformers import TrainingArguments

    # transformers >= 5.2x renamed gradient_checkpointing (the old name warns); older 5.x know only it
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient_checkpointing"
    return dict(
        output_dir=str(out),
        per_device_train_batch_size=m.batch_size,
        gradient_accumulation_steps=m.grad_accum,
        learning_rate=m.lr,
        num_train_epochs=m.epochs,
        max_steps=m.max_steps or -1,
        lr_scheduler_type=m.scheduler,
        warmup_steps=m.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
        weight_decay=m.weight_decay,
        max_grad_norm=m.max_grad_norm,
        logging_steps=m.log_every,
        logging_nan_inf_filter=False,  # the default hides a NaN loss from the logs (and the watchdog)
        save_strategy="steps",
        save_steps=m.save_every or 10**9,  # without save_every: only the end-of-run checkpoint
        save_only_model=False,  # optimizer state too: resuming must not change the trajectory
        report_to="none",
        seed=m.seed,
        data_seed=m.seed,
        use_cpu=device() == "cpu",  # CUDA, else Apple MPS, else CPU: where every stage runs (runtime/models.py)
        disable_tqdm=True,
        dataloader_num_workers=0,
        bf16=False,
        fp16=False,
        **{checkpointing: m.gradient_checkpointing},
    )


def actual_precision(trainer) -> dict:
    """How the run really trained, read off the trainer and the model (not the spec): device, weights
    dtype, autocast and activation checkpointing. Recorded, because trl's defaults once differed
    silently from the spec (bf16 autocast and checkpointing on a float32 CPU run)."""
    model = trainer.model
    p = next(model.parameters())
    trainable = next((q for q in model.parameters() if q.requires_grad), p)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    ckpt = getattr(base, "is_activation_checkpointing", None)
    if ckpt is None:
        ckpt = getattr(base, "is_gradient_checkpointing", False)
    return {"device": p.device.type, "weights_dtype": str(p.dtype).removeprefix("torch."),
            "trainable_dtype": str(trainable.dtype).removeprefix("torch."),
            "autocast": str(trainer.accelerator.mixed_precision), "gradient_checkpointing": bool(ckpt)}


# What the record compares with the spec (planned vs actual): the TrainingArguments fields a spec sets
TRAINING_ARGS = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
                 "max_steps", "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm", "seed", "bf16", "fp16")


def training_args(trainer) -> dict:
    """The effective TrainingArguments, read back off the built trainer (not the spec): a trl default,
    an environment variable or a subclass that overrode the spec shows here. `gradient_checkpointing`
    is whichever of the two names this transformers version holds (see `trainer_args`)."""
    args = trainer.args
    out = {k: getattr(args, k) for k in TRAINING_ARGS}
    out["lr_scheduler_type"] = getattr(out["lr_scheduler_type"], "value", out["lr_scheduler_type"])  # an enum
    ckpt = getattr(args, "activation_checkpointing", None)
    out["gradient_checkpointing"] = bool(ckpt if ckpt is not None else getattr(args, "gradient_checkpointing", False))
    return out


def lora_config(m):
    if m.lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=m.lora.r, lora_alpha=m.lora.alpha, lora_dropout=m.lora.dropout,
                      target_modules=m.lora.target_modules, task_type="CAUSAL_LM")


def portable_adapter_config(model, spec) -> None:
    """What every saved adapter_config.json records: the spec's base model (`builtin:tiny`, a hub id
    at its revision, or the project-relative folder) instead of this machine's absolute path, and the
    target modules sorted (peft keeps a set, whose order changes with the hash seed). The same
    training then writes the same files in any checkout."""
    for cfg in (getattr(model, "peft_config", None) or {}).values():
        cfg.base_model_name_or_path, cfg.revision = spec.base, spec.revision
        if isinstance(cfg.target_modules, (set, list, tuple)):
            cfg.target_modules = sorted(cfg.target_modules)
