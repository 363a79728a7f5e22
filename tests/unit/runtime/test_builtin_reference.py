"""builtin:tiny is the same model on every machine of this kind, whatever its core count or load.

models/tiny was built by conftest.py in this test process (torch's default thread count is the
machine's core count here), exactly as the pretrain-tiny stage builds it; its bytes must be the
reference build the README's figures come from (compiler/tiny.weights.json).
"""

from __future__ import annotations

import json

import yaml

from tests.conftest import ROOT
from tunebook.runtime import builtin
from tunebook.files import file_sha256


def test_the_built_tiny_model_is_the_reference_build_byte_for_byte():
    ref = json.loads((ROOT / "compiler/tiny.weights.json").read_text())
    cfg = yaml.safe_load((ROOT / "compiler/tiny.yaml").read_text())
    assert ref["config_sha256"] == builtin.config_digest(cfg), "compiler/tiny.yaml changed: rebuild and update the reference"
    weights = file_sha256(ROOT / "models/tiny/model.safetensors")
    summary = json.loads((ROOT / "models/tiny/pretrain_summary.json").read_text())
    assert summary["weights_sha256"] == weights
    assert weights == ref["weights_sha256"], "builtin:tiny differs from the reference build on this machine"
    assert summary["reference"] == "match" and summary["threads"] == 1


def test_pretraining_runs_on_one_thread_whatever_the_process_had(monkeypatch, tmp_path):
    import torch

    seen = []
    monkeypatch.setattr(builtin, "_build", lambda cfg, m, d: seen.append(torch.get_num_threads()) or {})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        builtin.build({}, tmp_path, tmp_path)
        assert seen == [1] and torch.get_num_threads() == 2, "pre-training must use one thread and restore the count"
    finally:
        torch.set_num_threads(before)


def test_reference_check_tells_a_variant_from_a_different_machine(tmp_path):
    cfg = {"seed": 1, "pretrain": {"steps": 3}}
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"config_sha256": builtin.config_digest(cfg), "weights_sha256": "a" * 64}))
    assert builtin.reference_check(cfg, "a" * 64, ref) == "match"
    assert builtin.reference_check(cfg, "b" * 64, ref) == "differs"
    assert builtin.reference_check({**cfg, "seed": 2}, "a" * 64, ref) == "other-config"
    assert builtin.reference_check(cfg, "a" * 64, tmp_path / "missing.json") == "other-config"
