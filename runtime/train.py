"""The train stage: supervised fine-tuning through trl's SFTTrainer, LoRA (peft) or full.

    tunebook run train <exp>       # what the `train-<exp>` DVC stage runs

Writes `runs/<exp>/train/`: trainer checkpoints (`checkpoint-<step>/`, adapter + optimizer state, so a
killed run resumes), `final/` (the model at the last step), `history.json` (every logged step),
`summary.json` (planned vs actual steps, dry-run flag, timings) and `dvclive/` (metrics and plots that
`dvc plots show` finds). The folder is a persistent DVC output: `fingerprint.json` says which params
produced it, and a folder from other params is set aside, never resumed into.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path

from runtime.progress import Progress
from runtime.stages import StageContext


def fingerprint(ctx: StageContext) -> str:
    """What determines the training run: model, method, and the exact prepared data."""
    manifest = json.loads((ctx.data_dir / "manifest.json").read_text())
    ident = {"model": ctx.spec.model.model_dump(mode="json"), "method": ctx.spec.method.model_dump(mode="json"),
             "data": manifest.get("sha256")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def prepare_out_dir(out: Path, fp: str) -> None:
    """Reuse `out` only if it was produced by the same params; otherwise move it aside whole."""
    marker = out / "fingerprint.json"
    if out.exists():
        old = json.loads(marker.read_text()).get("fingerprint") if marker.exists() else None
        if old == fp:
            return
        if any(out.iterdir()):
            aside = out.with_name(f"{out.name}.superseded-{(old or 'unknown')[:8]}")
            shutil.rmtree(aside, ignore_errors=True)
            out.rename(aside)
            print(f"[train] earlier outputs from other params moved to {aside.name}/ (not resumed)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": fp}) + "\n")


def last_checkpoint(out: Path) -> Path | None:
    ckpts = [p for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[1])) if ckpts else None


def read_jsonl(path: Path) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def build_trainer(ctx: StageContext, out: Path, train_rows: list[dict], callbacks: list):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from runtime.models import load_model, load_tokenizer

    m = ctx.spec.method
    torch.manual_seed(m.seed)
    tok = load_tokenizer(ctx.root, ctx.spec.model)
    model = load_model(ctx.root, ctx.spec.model)
    steps_per_epoch = math.ceil(len(train_rows) / (m.batch_size * m.grad_accum))
    planned = m.max_steps or math.ceil(steps_per_epoch * m.epochs)
    cfg = SFTConfig(
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
        save_strategy="steps",
        save_steps=m.save_every or planned,
        save_only_model=False,
        report_to="none",
        seed=m.seed,
        data_seed=m.seed,
        max_length=m.max_seq_length,
        completion_only_loss=True,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    peft_config = None
    if m.lora:
        peft_config = LoraConfig(r=m.lora.r, lora_alpha=m.lora.alpha, lora_dropout=m.lora.dropout,
                                 target_modules=m.lora.target_modules, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(train_rows),
                         processing_class=tok, peft_config=peft_config, callbacks=callbacks)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # our ProgressCallback prints shorter lines
    return trainer, planned


class ProgressCallback:
    """Progress lines with time left, and the step history kept for the record."""

    def __init__(self, label: str):
        from transformers import TrainerCallback

        self.label, self.history, self.progress = label, [], None

        outer = self

        class _CB(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                outer.progress = Progress(outer.label, state.max_steps, "steps")

            def on_log(self, args, state, control, logs=None, **kw):
                vals = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float)) and math.isfinite(v)}
                if vals:
                    outer.history.append({"step": state.global_step, "values": vals})
                loss = vals.get("loss")
                if outer.progress:
                    outer.progress.update(state.global_step, f"loss {loss:.4f}" if loss is not None else "")

        self.callback = _CB()


def _dvclive_callback(out: Path):
    """dvclive without its defaults that hurt here: no dvc.yaml rewrite, no auto-committed experiment."""
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    live = Live(dir=str(out / "dvclive"), save_dvc_exp=False, dvcyaml=None, report=None)
    return DVCLiveCallback(live=live, log_model=None)


def run(ctx: StageContext) -> None:
    out = ctx.run_dir / "train"
    fp = fingerprint(ctx)
    prepare_out_dir(out, fp)
    t0 = time.time()
    train_rows = read_jsonl(ctx.data_dir / "train.jsonl")
    prog = ProgressCallback(f"train {ctx.name}")
    t_io = time.time()
    trainer, planned = build_trainer(ctx, out, train_rows, [prog.callback, _dvclive_callback(out)])
    io_s = time.time() - t_io
    resume = last_checkpoint(out)
    if resume:
        print(f"[train {ctx.name}] resuming from {resume.name} (finished steps are not redone)", flush=True)
    t_train = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_s = time.time() - t_train
    t_io = time.time()
    final = out / "final"
    trainer.save_model(str(final))
    io_s += time.time() - t_io

    m = ctx.spec.method
    ckpts = sorted((int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")))
    summary = {
        "method": m.kind,
        "planned_steps": planned,
        "actual_steps": int(trainer.state.global_step),
        "max_steps": m.max_steps,
        "dry_run": m.max_steps is not None,
        "resumed_from": resume.name if resume else None,
        "checkpoints": [{"name": f"checkpoint-{s}", "step": s} for s in ckpts],
        "final": {"name": "final", "step": int(trainer.state.global_step)},
        "train_loss": float(result.training_loss) if result.training_loss is not None else None,
        "timings": {"training": round(train_s, 2), "model_io": round(io_s, 2), "total": round(time.time() - t0, 2)},
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
    }
    history = prog.history
    hist_path = out / "history.json"
    if resume and hist_path.exists():  # keep the steps logged before the interruption
        before = [h for h in json.loads(hist_path.read_text()) if h["step"] <= int(resume.name.split("-")[1])]
        history = before + [h for h in history if h["step"] > int(resume.name.split("-")[1])]
    hist_path.write_text(json.dumps(history, indent=1) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    dry = " (DRY RUN: max_steps set; the record and the log say so)" if summary["dry_run"] else ""
    print(f"[train {ctx.name}] {summary['actual_steps']}/{planned} steps in {train_s:.1f}s, "
          f"final loss {summary['train_loss']:.4f}{dry}. Next: eval-{ctx.name}", flush=True)
