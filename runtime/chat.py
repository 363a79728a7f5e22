"""Chat formatting, one implementation for every stage: how a `messages` row becomes training tokens
(loss on the assistant's tokens only) and how a prompt becomes a chat turn to generate from.

Why by hand: trl's `completion_only_loss` masks only prompt/completion rows, and its
`assistant_only_loss` needs `{% generation %}` markers that real templates (SmolLM2's ChatML,
Qwen, Llama) do not carry. Measured on SmolLM2-135M-Instruct: without a mask all 57 of 57 tokens of
a chat row carried loss (system prompt and question included), and the tuned model scored 0.02
instead of 0.28. Here the template itself tells where each assistant turn starts and ends: the text
rendered up to the turn with the generation prompt is where its answer starts, the text rendered
through the turn is where it ends. So the answer and the template's end-of-turn token (`<|im_end|>`,
which teaches the model to stop) carry loss; the role header and the newline after the turn do not.
"""

from __future__ import annotations


def render(tok, messages: list[dict], *, generation_prompt: bool = False) -> str:
    if not messages:
        return ""
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(tok, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """(the rendered conversation, character spans of the assistant's trained text).

    A template that renders earlier turns differently once more follow (e.g. one that drops the
    reasoning of past turns) is not prefix-stable: there only the last assistant turn is trained."""
    full = render(tok, messages)
    spans = []
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        start_text = render(tok, messages[:i], generation_prompt=True)
        upto = full if i == len(messages) - 1 else render(tok, messages[: i + 1])
        if not (full.startswith(upto) and upto.startswith(start_text)):
            if i != last:
                continue
            if not full.startswith(start_text):
                raise ValueError("the chat template renders the conversation differently from its prefix; "
                                 "cannot tell which tokens are the assistant's")
        # the turn's trailing whitespace (ChatML's newline after <|im_end|>) is template glue
        spans.append((len(start_text), len(upto.rstrip())))
    return full, spans


def assistant_tokens(tok, messages: list[dict]) -> dict:
    """{"input_ids", "assistant_masks"}: the conversation as the template renders it, and 1 for each
    token whose text starts inside an assistant turn (what trl turns into labels; 0 -> -100)."""
    if not getattr(tok, "is_fast", False):
        raise ValueError("assistant-only loss needs a fast tokenizer (character offsets)")
    full, spans = assistant_spans(tok, messages)
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a <= s < b for a, b in spans) and e > s) for s, e in enc["offset_mapping"]]
    return {"input_ids": list(enc["input_ids"]), "assistant_masks": mask}


def prompt_messages(prompt: str, system: str | None = None) -> list[dict]:
    """One user turn, after the system prompt when one is given (else the template's own default)."""
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def chat_prompt(tok, prompt: str, system: str | None = None) -> str:
    """The text a chat model generates its answer after: the template's rendering plus its generation prompt."""
    return render(tok, prompt_messages(prompt, system), generation_prompt=True)
