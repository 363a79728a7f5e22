"""bench/bench_gpu.py: the module imports without a GPU, and its FLOPs and MFU arithmetic is right
(parameter counts checked against the models transformers and peft actually build). No timing."""

from __future__ import annotations

import pytest
import yaml

from bench import bench_gpu as bg

TINY = {"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 64, "tie_word_embeddings": False}


def test_both_sizes_in_the_config_are_complete():
    sizes = yaml.safe_load(bg.CONFIG.read_text())
    for name in ("gpu", "small"):
        s = sizes[name]
        assert {"dtype", "model", "sft", "lora", "loglik", "generate"} <= set(s)
        assert s["sft"]["steps"] > bg.WARM_STEPS + 1  # a steady state to time
        assert s["model"]["vocab_size"] >= bg.WORDS + len(bg.SPECIALS)  # every token id fits the model
    assert sizes["gpu"]["dtype"] == "bfloat16" and sizes["small"]["dtype"] == "float32"
    assert 200e6 < bg.matmul_params(sizes["gpu"]["model"]) < 1e9  # "a few hundred million"


def test_matmul_params_count_every_linear_weight_of_the_built_model():
    """N in 6N: the weights of every matmul (projections and LM head), not embeddings or norms;
    grouped-query attention (k, v narrower than q) included."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(**TINY))
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert bg.matmul_params(TINY) == linear
    assert linear < sum(p.numel() for p in model.parameters())  # embeddings and norms are left out


def test_lora_params_match_peft_all_linear():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    model = get_peft_model(LlamaForCausalLM(LlamaConfig(**TINY)),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert bg.lora_params(TINY, 4) == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_train_flops_per_token_full_and_lora():
    cfg = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
           "num_key_value_heads": 2, "vocab_size": 10}
    n = 2 * (4 * 8 * 8 + 3 * 8 * 16) + 8 * 10  # q k v o, gate up down, per layer; LM head
    assert bg.matmul_params(cfg) == n == 1360
    attention = 12 * 2 * 32 * 8  # 12 x layers x sequence x hidden
    assert bg.train_flops_per_token(cfg, 32, None) == 6 * n + attention
    adapters = 2 * 1 * (4 * (8 + 8) + 2 * (8 + 16) + (16 + 8))  # r=1: (in + out) per projection
    assert bg.lora_params(cfg, 1) == adapters
    assert bg.train_flops_per_token(cfg, 32, 1) == 4 * n + 6 * adapters + attention


def test_mfu_is_achieved_over_peak():
    assert bg.mfu(1000.0, 6e9, 1e13) == pytest.approx(0.6)
    gpu = yaml.safe_load(bg.CONFIG.read_text())["gpu"]
    per_token = bg.train_flops_per_token(gpu["model"], 512, None)
    # ~370M params: 6N ~ 2 GFLOP per token; 100k tokens/s on an H200 is then ~21 % MFU
    assert 1.9e9 < per_token < 2.4e9
    assert bg.mfu(1e5, per_token, bg.device_peak("NVIDIA H200")) == pytest.approx(1e5 * per_token / 989.5e12)


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989.5e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989.5e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A100-PCIE-40GB", 312e12),
    ("NVIDIA L4", 121e12), ("NVIDIA L40S", 362e12), ("NVIDIA A10G", 70e12), ("NVIDIA GeForce RTX 4090", 165.2e12),
    ("Tesla T4", None),  # no bf16 tensor cores: not in the table, a measured peak is used instead
])
def test_device_peak_matches_the_longest_name(name, peak):
    assert bg.device_peak(name) == peak


def test_steady_seconds():
    ends = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 20.0, 21.0]  # step 8 hit by a burst of someone else's load
    after = ends[bg.WARM_STEPS - 1 :]
    assert bg.steady_seconds(ends, "cuda") == after[-1] - after[0]
    assert bg.steady_seconds(ends, "cpu") == 1.0 * (len(after) - 1)  # median step: the burst is not counted
