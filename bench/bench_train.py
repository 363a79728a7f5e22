"""Training throughput: what tunebook's train stage costs over a bare trl script, and what the KL
anchor costs over plain SFT.

    python -m bench train

- `sft_vs_trl_steps_ratio`: LoRA SFT steps/s through `runtime.train.run` (callbacks, history.json,
  dvclive, watchdog) over a bare `trl.SFTTrainer` script with the same config and rows. Target >= 0.95.
- `kl_anchor_cost_ratio`: seconds per step with `anchor: {type: kl}` (own forward + a no-grad
  reference forward) over the same run without it. Target <= 1.30.

Sides alternate, several repeats, medians; training time only (model loading and data preparation
excluded on both sides). One torch thread: on this shared 2-core machine a second OpenMP thread
makes steps of the tiny model ~10x slower, and the noise would swamp the ratios.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from bench import alternate, line

ROOT = Path(__file__).resolve().parent.parent
STEPS, BATCH, LR = 60, 16, 1e-3
LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}


def ensure_tiny(wait_s: float = 600) -> bool:
    """models/tiny exists, or is built here. Another process may be building it right now: wait."""
    config = ROOT / "models" / "tiny" / "config.json"
    deadline = time.time() + wait_s
    while not config.exists() and (ROOT / "models" / "tiny").exists() and time.time() < deadline:
        time.sleep(5)  # a build in progress elsewhere
    if config.exists():
        return True
    from tunebook.runtime import builtin

    cfg = yaml.safe_load((ROOT / "compiler" / "tiny.yaml").read_text())
    with tempfile.TemporaryDirectory(dir=ROOT) as d:
        builtin.build(cfg, Path(d) / "models", Path(d) / "data")
        for src, dst in ((Path(d) / "models", ROOT / "models" / "tiny"), (Path(d) / "data", ROOT / "data" / "tiny")):
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                src.rename(dst)
    return config.exists()


def project(root: Path, name: str, anchor: dict | None):
    """A throwaway project with one compiled spec and its data stage run; returns its StageContext."""
    from tunebook.compiler import compile_specs, load_specs, write_pipeline
    from tunebook.runtime import data
    from tunebook.runtime.context import experiment_context
    from tunebook.runtime.stages import _quiet_libraries

    for d in ("models/tiny", "data/tiny"):
        if not (root / d).exists():
            shutil.copytree(ROOT / d, root / d)
    method = {"kind": "sft", "lora": LORA, "lr": LR, "max_steps": STEPS, "batch_size": BATCH, "max_seq_length": 32,
              "log_every": 10, "watchdog": {"samples_every": 50}}
    if anchor:
        method["anchor"] = anchor
    spec = {"name": name, "model": {"base": "builtin:tiny"}, "data": {"train": [{"source": "data/tiny/subtraction_train.jsonl"}]},
            "method": method}
    (root / "specs").mkdir(exist_ok=True)
    (root / "specs" / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    write_pipeline(root, compile_specs(load_specs(sorted((root / "specs").glob("*.yaml")), root)), force=True)
    _quiet_libraries()
    ctx = experiment_context(root, name)
    with contextlib.redirect_stdout(io.StringIO()):
        data.run(ctx)
    return ctx


def tunebook_seconds(ctx) -> float:
    """Training seconds of one fresh run of the train stage (its summary excludes loading and saving)."""
    from tunebook.runtime import train

    shutil.rmtree(ctx.run_dir, ignore_errors=True)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        train.run(ctx)
    return json.loads((ctx.run_dir / "train" / "summary.json").read_text())["timings"]["training"]


def bare_trl_seconds(rows: list[dict], out: Path) -> float:
    """The same LoRA SFT as a plain trl script would write it: trainer.train() wall time."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    with contextlib.redirect_stderr(io.StringIO()):  # weight-loading progress bars
        tok = AutoTokenizer.from_pretrained(ROOT / "models" / "tiny")
        model = AutoModelForCausalLM.from_pretrained(ROOT / "models" / "tiny")
    cfg = SFTConfig(output_dir=str(out), per_device_train_batch_size=BATCH, learning_rate=LR, max_steps=STEPS,
                    logging_steps=10, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                    max_length=32, completion_only_loss=True, seed=0, dataloader_num_workers=0)
    peft = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=peft)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        t0 = time.perf_counter()
        trainer.train()
        return time.perf_counter() - t0


def main() -> None:
    import datasets
    import torch

    if not ensure_tiny():
        print("# bench_train: models/tiny is missing and could not be built; skipped", flush=True)
        return
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    rows = [json.loads(line) for line in (ROOT / "data" / "tiny" / "subtraction_train.jsonl").open()]
    with tempfile.TemporaryDirectory() as d:
        plain = project(Path(d) / "plain", "plain", None)
        anchored = project(Path(d) / "anchored", "anchored", {"type": "kl", "coef": 0.1})
        tunebook_seconds(plain)  # warm-up: first-call imports and allocations on neither side's clock
        bare_trl_seconds(rows, Path(d) / "bare")

        t_tb, t_bare = alternate(lambda: tunebook_seconds(plain), lambda: bare_trl_seconds(rows, Path(d) / "bare"), repeats=5)
        print(f"# LoRA SFT, {STEPS} steps x batch {BATCH}: tunebook {STEPS / t_tb:.1f} steps/s, bare trl {STEPS / t_bare:.1f} steps/s", flush=True)
        line("sft_vs_trl_steps_ratio", t_bare / t_tb, "x", ">=", 0.95)

        t_kl, t_plain = alternate(lambda: tunebook_seconds(anchored), lambda: tunebook_seconds(plain), repeats=5)
        print(f"# KL anchor: {t_kl / STEPS * 1e3:.1f} ms/step vs {t_plain / STEPS * 1e3:.1f} ms/step plain", flush=True)
        line("kl_anchor_cost_ratio", t_kl / t_plain, "x", "<=", 1.30)


if __name__ == "__main__":
    main()
