"""The one generation loop: every stage that makes a model write text (target tasks, held-out GRPO
reward, judges, the teacher, the training watchdog) goes through `generate` or `generate_ids`.

Prompts are tokenized one by one and left-padded per batch by hand, which gives the same tensors as the
tokenizer's own padding, so plain prompts, chat turns (rendered through the model's chat template,
runtime/chat.py) and pre-tokenized ids share one loop. Greedy unless `temperature` > 0; sampling is
seeded once per call, so the same call gives the same answers.
"""

from __future__ import annotations

from tunebook.runtime.chat import chat_prompt


def encode(tok, prompts: list[str], *, chat: bool = False, system: str | None = None) -> list[list[int]]:
    """Token ids of each prompt as the model reads it: plain text with the tokenizer's special tokens,
    or (with `chat`) one user turn (after `system`, if given) in the chat template, which carries its own."""
    if chat:
        return [tok(chat_prompt(tok, p, system), add_special_tokens=False)["input_ids"] for p in prompts]
    return [tok(p)["input_ids"] for p in prompts]


def generate_ids(model, tok, ids: list[list[int]], max_new_tokens: int, batch_size: int, *, temperature: float = 0.0,
                 num_samples: int = 1, seed: int = 0, **sampling) -> list[list[str]]:
    """`num_samples` decoded continuations of each token-id prompt, `batch_size` prompts at a time.
    `sampling` passes generate() settings through (top_p, top_k; None switches a library default off)."""
    import torch

    sampled = temperature > 0
    if sampled:
        torch.manual_seed(seed)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    kw = dict(do_sample=True, temperature=temperature, num_return_sequences=num_samples, **sampling) if sampled \
        else dict(do_sample=False, num_return_sequences=num_samples)
    out: list[list[str]] = []
    for i in range(0, len(ids), max(batch_size, 1)):
        batch = ids[i : i + batch_size]
        width = max(len(x) for x in batch)
        input_ids = torch.tensor([[pad] * (width - len(x)) + list(x) for x in batch], device=model.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch], device=model.device)
        with torch.no_grad():
            gen = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad, eos_token_id=tok.eos_token_id, **kw)
        texts = tok.batch_decode(gen[:, width:], skip_special_tokens=True)
        out += [texts[j : j + num_samples] for j in range(0, len(texts), num_samples)]
    return out


def generate(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int, *, chat: bool = False,
             system: str | None = None, temperature: float = 0.0, top_p: float = 1.0, num_samples: int = 1,
             seed: int = 0, **sampling) -> list[list[str]]:
    """`num_samples` answers per text prompt (a list per prompt)."""
    if temperature > 0:
        sampling.setdefault("top_p", top_p)
    return generate_ids(model, tok, encode(tok, prompts, chat=chat, system=system), max_new_tokens, batch_size,
                        temperature=temperature, num_samples=num_samples, seed=seed, **sampling)
