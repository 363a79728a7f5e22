"""Checkpoint sweeps: seconds per LoRA checkpoint when every checkpoint reloads the base model versus
when one loaded base model swaps adapters (what runtime.evaluate.Models does).

    python -m bench sweep

The bench makes its own LoRA checkpoints of the tiny model with peft (random adapters, a second) and
runs the same small evaluation on each (held-out loss on 64 subtraction rows), so the figure is the
per-checkpoint cost of a sweep, not of loading alone. Sides alternate, several repeats, medians.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from bench import alternate, line

ROOT = Path(__file__).resolve().parent.parent
N_CHECKPOINTS = 6  # the quickstart's sweep


def make_checkpoints(folder: Path, n: int) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(n):
        torch.manual_seed(i)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(ROOT / "models" / "tiny"),
                               LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False))
        paths.append(folder / f"checkpoint-{i}")
        model.save_pretrained(paths[-1])
    return paths


def main() -> None:
    import logging

    import torch
    from peft import PeftModel

    from tunebook.compiler.schema import ModelSpec
    from tunebook.runtime.evaluate import Models
    from tunebook.runtime.suites.heldout import eval_loss
    from tunebook.runtime.models import load_model, load_tokenizer

    if not (ROOT / "models" / "tiny" / "config.json").exists():
        print("# bench_sweep: models/tiny is missing (tunebook run pretrain tiny); skipped", flush=True)
        return
    logging.getLogger("transformers").setLevel(logging.ERROR)
    # One thread: on the shared 2-core machine two threads oversubscribe, and the same 64-row loss took
    # 0.2-2.8 s instead of 0.03-0.08 s — noise that would swamp the loading cost being measured.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    spec = ModelSpec(base="builtin:tiny")
    rows = [{"prompt": r["prompt"], "completion": r["answer"]}
            for r in map(json.loads, (ROOT / "data/tiny/subtraction_test.jsonl").read_text().splitlines()[:64])]
    try:
        with tempfile.TemporaryDirectory() as d:
            ckpts = make_checkpoints(Path(d), N_CHECKPOINTS)

            def reload_each():  # a fresh base model and tokenizer for every checkpoint
                losses = []
                for c in ckpts:
                    model = PeftModel.from_pretrained(load_model(ROOT, spec), str(c)).eval()
                    losses.append(eval_loss(model, load_tokenizer(ROOT, spec), rows, 32, c.name)["metrics"][0]["value"])
                return losses

            def swap():  # one base model for the sweep, adapters swapped (includes loading the base once)
                models = Models(ROOT, spec, lora=True)
                losses = []
                for c in ckpts:
                    models.load(c, c.name)
                    losses.append(eval_loss(models.model, models.tok, rows, 32, c.name)["metrics"][0]["value"])
                return losses

            a, b = reload_each(), swap()  # warm-up, and the check that both give the same numbers
            worst = max(abs(x - y) for x, y in zip(a, b))
            t_reload, t_swap = alternate(reload_each, swap, repeats=15)
    finally:
        torch.set_num_threads(threads)
    per_reload, per_swap = t_reload / N_CHECKPOINTS, t_swap / N_CHECKPOINTS
    print(f"# {N_CHECKPOINTS} LoRA checkpoints, 1 thread: reload {per_reload:.3f} s/ckpt, swap {per_swap:.3f} s/ckpt; "
          f"max |delta loss| {worst:.1e}", flush=True)
    line("sweep_adapter_swap_speedup", per_reload / per_swap, "x", ">=", 1.5)


if __name__ == "__main__":
    main()
