"""DPO on the tiny model, on a generated preference file: right subtraction chosen, wrong rejected."""

from __future__ import annotations

import json

from .test_train import history, lora_b_norm, one_thread, project, spec_text, train, weights  # noqa: F401 - fixture


def preference_file(root, n: int = 48) -> str:
    path = root / "prefs.jsonl"
    root.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for i in range(n):
            a, b = 20 + i % 30, i % 17
            f.write(json.dumps({"prompt": f"{a}-{b}=", "chosen": str(a - b), "rejected": str(a - b + 1 + i % 3)}) + "\n")
    return path.name


def test_dpo_lora_learns_the_preference(tmp_path):
    data = {"train": [{"source": preference_file(tmp_path)}]}  # detected as format: preference
    ctx = project(tmp_path, spec_text(method={"kind": "dpo", "lr": 5e-3, "max_steps": 6, "log_every": 2}, data=data))
    s = train(ctx)
    assert s["method"] == "dpo" and s["actual_steps"] == 6
    assert lora_b_norm(ctx.run_dir / "train" / "final") > 0
    last = history(ctx)[-1]["values"] if "loss" in history(ctx)[-1]["values"] else history(ctx)[-2]["values"]
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen"} <= set(last)
    assert last["rewards/margins"] > 0  # the policy moved toward the chosen answers
    assert ctx.spec.method.dpo.beta == 0.1  # defaults written out in params


def test_dpo_full_fine_tuning(tmp_path):
    data = {"train": [{"source": preference_file(tmp_path, 16)}]}
    method = {"kind": "dpo", "lora": None, "lr": 1e-4, "max_steps": 2, "log_every": 1, "dpo": {"beta": 0.2, "loss_type": "ipo"}}
    ctx = project(tmp_path, spec_text(method=method, data=data))
    train(ctx)
    base, final = weights(tmp_path / "models" / "tiny"), weights(ctx.run_dir / "train" / "final")
    assert any(not (base[k] == final[k]).all() for k in base if k in final)
