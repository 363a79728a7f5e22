"""DPO on the tiny model, on a generated preference file: right subtraction chosen, wrong rejected."""

from __future__ import annotations

import json

import pytest

from .train_helpers import history, lora_b_norm, project, spec_text, train, weights

pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_dpo_with_a_validation_split_is_evaluated_on_held_out_pairs(tmp_path):
    """Issue 12: the eval stage crashed with `error: 'completion'` (held-out loss assumed SFT rows).
    Held-out pairs get DPO's own numbers: preference accuracy and the implicit reward margin."""
    from tunebook.reports.record import Metric
    from tunebook.runtime import evaluate

    data = {"train": [{"source": preference_file(tmp_path, 40)}], "validation_split": 0.2}
    ctx = project(tmp_path, spec_text(method={"kind": "dpo", "lr": 5e-3, "max_steps": 6, "log_every": 2}, data=data))
    train(ctx)
    evaluate.run(ctx)
    out = ctx.run_dir / "eval"
    assert sorted(p.name for p in (out / "final").glob("*.json")) == ["preference.json"]
    base = {m["metric"]: m for m in json.loads((out / "base" / "preference.json").read_text())["metrics"]}
    final = {m["metric"]: m for m in json.loads((out / "final" / "preference.json").read_text())["metrics"]}
    assert set(final) == {"accuracy", "margin"} and final["accuracy"]["n"] == 8 == len(final["accuracy"]["samples"])
    # the base model is its own reference: every implicit reward is 0, every pair a tie (chance)
    assert base["accuracy"]["value"] == 0.5 and base["margin"]["value"] == 0.0
    # trained toward the chosen answers, the held-out margin opens in their favour
    assert final["margin"]["value"] > 0 and final["accuracy"]["value"] > 0.5
    for m in final.values():
        Metric.model_validate(m)  # cells feed the record as they are
