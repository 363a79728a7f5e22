"""trl's fused LM head on CPU projects only the labelled positions once the train stage patched it
(runtime/methods/lm_head.py), and computes the same loss, entropy, top-1 flags and LoRA gradients as
the unpatched head, which projects every position."""

from __future__ import annotations

import pytest
import torch
import trl.trainer.utils as trl_utils
from trl.kernels import chunked_logprob
from trl.trainer.utils import add_fused_lm_head

from tunebook.runtime.methods.lm_head import score_labelled_positions_only

from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")

FIELDS = ("log_probs", "entropy", "is_top1")


@pytest.fixture
def unpatched(monkeypatch):
    """trl as it ships; whatever this test patches is undone afterwards."""
    monkeypatch.setattr(trl_utils, "_use_triton", chunked_logprob._use_triton)


def model_and_batch():
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(ROOT / "models" / "tiny", dtype=torch.float32)
    add_fused_lm_head(model, outputs=FIELDS)  # as trl's SFTTrainer does before wrapping with peft
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    ids = torch.randint(5, 60, (3, 12))
    attention = torch.ones_like(ids)
    attention[2, 9:] = 0  # a padded row
    labels = torch.full_like(ids, -100)
    labels[0, 8:] = ids[0, 8:]  # completions: the end of each row
    labels[1, 5:] = ids[1, 5:]
    labels[2, 6:9] = ids[2, 6:9]
    return model, {"input_ids": ids, "attention_mask": attention, "labels": labels}


def step(model, batch):
    """One SFT loss as trl computes it (sum of -log p over labelled tokens / their count), with the
    per-token fields and the LoRA gradients it leaves."""
    model.zero_grad()
    out = model(**batch, fused_lm_head=True, use_cache=False)
    loss = -out.log_probs.sum() / out.label_mask.sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), {f: getattr(out, f).detach() for f in FIELDS}, grads


def test_the_patch_takes_once_and_leaves_trls_kernel_choice_alone(unpatched):
    assert trl_utils._use_triton(torch.device("cpu")) is False  # trl as shipped: every position on CPU
    assert score_labelled_positions_only() is True
    assert score_labelled_positions_only() is True  # idempotent
    assert trl_utils._use_triton(torch.device("cpu")) is True
    assert trl_utils._use_triton(torch.device("mps")) is True
    assert chunked_logprob._use_triton(torch.device("cpu")) is False  # Triton kernels stay CUDA/XPU-only


def test_a_trl_that_moved_the_name_is_left_alone_and_said(unpatched, monkeypatch, capsys):
    monkeypatch.setattr(trl_utils, "_use_triton", lambda device: False)  # not the kernel module's function
    assert score_labelled_positions_only() is False
    assert "trl's fused LM head changed" in capsys.readouterr().err


def test_only_labelled_positions_are_projected_with_the_same_results(unpatched, monkeypatch):
    model, batch = model_and_batch()
    n_labelled = int((batch["labels"][:, 1:] != -100).sum())
    projected = []
    real = trl_utils._ChunkedLogProbFunction

    class Spy:
        @staticmethod
        def apply(hidden, *args):
            projected.append(hidden.shape[0])
            return real.apply(hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Spy)
    loss_all, fields_all, grads_all = step(model, batch)
    assert score_labelled_positions_only()
    loss_few, fields_few, grads_few = step(model, batch)

    positions = batch["input_ids"].shape[0] * (batch["input_ids"].shape[1] - 1)
    assert projected == [positions, n_labelled] and n_labelled < positions / 2
    assert torch.allclose(loss_all, loss_few, atol=1e-6)
    for f in FIELDS:  # zero where the label is -100 on both paths
        assert torch.allclose(fields_all[f].float(), fields_few[f].float(), atol=1e-5), f
    assert grads_all.keys() == grads_few.keys() and len(grads_all) > 0
    for name, g in grads_all.items():
        assert torch.allclose(g, grads_few[name], atol=1e-6, rtol=1e-4), name
