"""Reproducible means the same numbers: two clean `dvc repro` runs of the small quickstart, in two
fresh projects, give identical metrics and identical DVC hashes for the data and evaluation outputs (the training
output holds trainer state with dates and paths, and is compared by its weights).

When a hash differs, the test says which file and which JSON key differ, so that the cause (a
timing, a date, a thread count) is named rather than guessed. The record carries what could explain
a difference between machines: package versions, torch threads, device, project commit, spec hash.
"""

from __future__ import annotations

import json

import pytest
import yaml


pytestmark = [pytest.mark.slow, pytest.mark.e2e]

def lock_outs(lock: str) -> dict[str, str]:
    """{output path: md5} of every stage in a dvc.lock."""
    out = {}
    for stage in yaml.safe_load(lock)["stages"].values():
        for o in stage.get("outs", []):
            out[o["path"]] = o.get("md5")
    return out


def json_diff(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in json_diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in json_diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r:.60} vs {b!r:.60}"]


def explain(out: str, a: dict[str, bytes], b: dict[str, bytes]) -> list[str]:
    """Which files under one output differ between the two runs, and for JSON, which keys."""
    names = sorted({n for n in (*a, *b) if n == out or n.startswith(out + "/")})
    lines = []
    for n in names:
        if a.get(n) == b.get(n):
            continue
        if n.endswith(".json") and n in a and n in b:
            lines += [f"{n}: {d}" for d in json_diff(json.loads(a[n]), json.loads(b[n]))]
        else:
            lines.append(f"{n}: bytes differ" if n in a and n in b else f"{n}: only in {'first' if n in a else 'second'} run")
    return lines


def result_outputs(lock: str) -> list[str]:
    return sorted(o for o in lock_outs(lock) if o.startswith(("data/mini", "runs/mini/eval", "runs/_baselines/")))


def test_two_clean_runs_give_the_same_metrics(built, second):
    a = sorted((m["checkpoint"], m["task"], m["metric"], m["value"], m.get("n"), m.get("stderr"), m.get("samples"))
               for m in built.record["metrics"])
    b = sorted((m["checkpoint"], m["task"], m["metric"], m["value"], m.get("n"), m.get("stderr"), m.get("samples"))
               for m in second.record["metrics"])
    assert a and a == b
    assert [s for s in built.record["samples"]] == [s for s in second.record["samples"]]
    assert built.files["data/mini/train.jsonl"] == second.files["data/mini/train.jsonl"]
    weights = sorted(n for n in built.files if n.startswith("runs/mini/train/") and n.endswith(".safetensors"))
    assert weights and all(built.files[n] == second.files.get(n) for n in weights), "trained weights differ"


def test_two_clean_runs_hash_data_and_evaluation_identically(built, second):
    """Every file DVC hashes for data and evaluation (rows, answers, scores, samples, caches) is the
    same, so dvc.lock records the same hashes: durations live outside the outputs (runs/<exp>/timings/),
    and weight fingerprints hash only the weight files."""
    a, b = lock_outs(built.lock), lock_outs(second.lock)
    outs = result_outputs(built.lock)
    assert any(o.startswith("data/") for o in outs) and any("/eval" in o for o in outs), outs
    differing = [o for o in outs if a[o] != b.get(o)]
    assert not differing, "\n".join(line for o in differing for line in explain(o, built.files, second.files))


def test_durations_are_kept_outside_the_outputs(built):
    """The timings the record reports still exist: beside the outputs, not in them."""
    for stage in ("data", "eval"):
        assert (built.project.root / "runs/mini/timings" / f"{stage}.json").exists(), stage
    t = built.record["timings"]
    assert t["data"] > 0 and t["evaluation"] > 0 and t["model_io"] > 0, t


def test_the_record_carries_what_explains_a_difference(built):
    env = built.record["environment"]
    for pkg in ("torch", "transformers", "peft", "trl", "numpy", "tokenizers", "dvc"):
        assert env["packages"].get(pkg), pkg
    assert isinstance(env["torch_threads"], int) and env["torch_threads"] >= 1
    assert env["device"] in ("cpu", "cuda") and env["cpu_count"] >= 1
    assert len(env["git_commit"]) == 40 and env["specs_dirty"] is False
    assert len(built.record["spec_sha256"]) == 64
    assert "HF_TOKEN" not in json.dumps(env)  # named settings only, never the environment wholesale
