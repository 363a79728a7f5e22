"""Helpers for the eval-stage tests (test_evaluate, test_general, test_judge, test_reward): a project
shaped like one after `dvc repro train-exp`, with distinct LoRA checkpoints made in a second instead
of trained.

Imports only tests.conftest, yaml and tunebook's schema; torch, peft and transformers load inside
`make_project`, so collecting a test module stays cheap.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tests.conftest import ROOT as REPO
from tunebook.compiler.schema import Spec

TINY = REPO / "models" / "tiny"

VALIDATION = [{"prompt": f"{a}-{b}=", "completion": str(a - b)} for a, b in [(27, 1), (10, 5), (49, 26), (31, 12), (40, 8), (33, 20)]]


def make_project(root: Path, eval_spec: dict, steps=(2, 4), final_step: int = 6, seed: int = 0) -> Path:
    """A project in `root` shaped like one after `dvc repro train-exp`: the tiny model, its data, and
    LoRA checkpoints (random adapters, distinct per checkpoint, made with peft in a second) plus the
    train summary the eval stage reads."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    shutil.copytree(TINY, root / "models" / "tiny", dirs_exist_ok=True)
    shutil.copytree(REPO / "data" / "tiny", root / "data" / "tiny", dirs_exist_ok=True)
    (root / "data" / "exp").mkdir(parents=True, exist_ok=True)
    (root / "data" / "exp" / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in VALIDATION))
    train = root / "runs" / "exp" / "train"
    for i, step in enumerate([*steps, final_step]):
        torch.manual_seed(seed + i)
        base = AutoModelForCausalLM.from_pretrained(TINY)
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
        model = get_peft_model(base, cfg)
        with torch.no_grad():  # small, so the model still mostly subtracts
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.mul_(0.05)
        model.save_pretrained(train / (f"checkpoint-{step}" if step != final_step else "final"))
    summary = {"checkpoints": [{"name": f"checkpoint-{s}", "step": s} for s in steps], "final": {"name": "final", "step": final_step}}
    (train / "summary.json").write_text(json.dumps(summary))
    spec = Spec.model_validate({"name": "exp", "model": {"base": "builtin:tiny"},
                                "data": {"train": [{"source": "data/tiny/subtraction_train.jsonl"}]},
                                "method": {"lora": {"r": 4, "alpha": 8}, "max_seq_length": 32}, "eval": eval_spec})
    params = {"exp": {"spec": "specs/exp.yaml", "baseline": "x", **spec.model_dump(mode="json", exclude={"name"})}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root
