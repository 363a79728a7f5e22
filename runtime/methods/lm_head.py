"""trl's fused LM head without Triton: score only the labelled positions.

trl 1.16 trains SFT, DPO and GRPO through a fused LM head (`trl.trainer.utils.add_fused_lm_head`):
the forward returns per-token log-probs of the labels instead of the (batch, time, vocab) logits,
computed tile by tile and recomputed in the backward pass. On CUDA/XPU with Triton it projects only
the positions whose label is not -100. Everywhere else it projects *every* position, masked
afterwards, because on compiled backends (its comment names Neuron) a changing number of positions
would change the tile shapes and recompile on every batch.

CPU and Apple's MPS run eagerly: nothing recompiles, and projecting every position through a 49k-word
head only to throw most of them away is the biggest single cost of a small model's step. In the
smollm2 example's chat rows 4 of ~60 positions a row carry loss, so a LoRA step on 8 rows took
4.8 s with every position and 3.2 s with the labelled ones (the same loss to 1e-6; a bare
transformers loop that builds the full logits: 3.8 s). DPO and GRPO score their completions through
the same head and gain the same way.

`score_labelled_positions_only()` makes the fused head take its compact branch on CPU and MPS too. It
changes which positions are projected, not what is computed for them: the log-probs, entropy and
top-1 flags of the labelled positions are bit for bit the tile computation trl runs anyway (its torch
fallback; Triton stays CUDA/XPU-only, chosen inside trl's kernel by its own `_use_triton`).
It patches one private name of trl's, so it checks that the name is still there and still the one
trl's kernel module defines; if a trl release moves it, nothing is patched, training runs as trl
ships it (slower on CPU), and the stage says so once. tests/unit/runtime/test_lm_head.py checks the
patch takes, the positions projected, and that the loss and gradients match the unpatched head.

Imported by the train stage only (trl at module level).
"""

from __future__ import annotations

import sys

import torch
import trl.trainer.utils as trl_utils
from trl.kernels import chunked_logprob

EAGER_DEVICES = ("cpu", "mps")  # no recompilation per shape: the compact branch costs nothing extra


def _compact_on_eager(device: torch.device) -> bool:
    """trl's `compact` choice: True where Triton runs (trl's own test), and on CPU and MPS."""
    return chunked_logprob._use_triton(device) or device.type in EAGER_DEVICES


def score_labelled_positions_only() -> bool:
    """Patch trl's fused LM head to project only labelled positions on CPU and MPS. Idempotent.

    Returns whether the patch is in place (False when trl no longer has the name it patches)."""
    current = getattr(trl_utils, "_use_triton", None)
    if current is _compact_on_eager:
        return True
    if current is not chunked_logprob._use_triton:
        print("tunebook: trl's fused LM head changed (trl.trainer.utils._use_triton); it scores every position "
              "on CPU (slower, same results)", file=sys.stderr)
        return False
    trl_utils._use_triton = _compact_on_eager
    return True
