"""Spec generators shared by the fuzz tests (test_fuzz_compile, test_hand_edits): two valid starting
specs that between them touch every part of the schema, hostile values for any key, and helpers to
walk, edit and dump a spec document.

Imports only yaml and hypothesis: no tunebook, so a generator never depends on what it tests.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import strategies as st

# Two valid starting points that between them touch every part of the schema.
QUICKSTART = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "specs/quickstart.yaml").read_text().replace("name: quickstart", "name: fuzz"))
RICH = {
    "name": "rich",
    "description": "two weighted sources, anchor, early stopping, every eval suite",
    "model": {"base": "org/model", "revision": "main", "dtype": "bfloat16"},
    "data": {"train": [{"source": "data/a.jsonl", "weight": 0.25, "fields": {"prompt": "q"}},
                       {"source": "hf:org/set", "revision": "abc", "weight": 0.75, "limit": 10}],
             "validation_split": 0.1, "sample_ratio": 0.5, "stratify": "category", "seed": 3},
    "method": {"kind": "sft", "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}, "lr": 1e-4,
               "anchor": {"type": "kl", "coef": 0.1, "warmup_steps": 5},
               "early_stopping": {"on": "loss", "every": 10, "patience": 2}, "save_every": 10},
    "eval": {"general": {"preset": "forgetting-10", "limit": 20},
             "target": [{"name": "gsm", "source": "data/gsm.jsonl", "extract": "answer_anchor", "temperature": 0.7, "num_samples": 2}],
             "judge": {"prompts": "data/p.jsonl", "judges": [{"name": "j", "kind": "openai", "model": "m",
                                                               "url": "http://127.0.0.1:9/v1", "api_key_env": "JUDGE_API_KEY"}]},
             "checkpoints": {"every": 2}},
    "expect": {"forgetting": {"warn": -0.01, "fail": -0.05}, "target_gain": 0.02},
    "resources": {"gpus": 2, "strategy": "ddp"},
}
BASES = [QUICKSTART, RICH]

NASTY_TEXT = ["", " ", "~", "null", "yes", "0x1F", "1e400", ".nan", "-.inf", "2020-13-45", "12:30:00", "{{ 7*7 }}",
              "{% for x in y %}", "<script>alert(1)</script>", "../../../etc/passwd", "/etc/passwd", "~/x", "a\u0000b",
              "\u202eevil", "🤖" * 50, "x" * 5000, "!!python/object/apply:os.system", "*alias", "&anchor", "- a", "a: b",
              "builtin:nope", "hf:", "hf:../../x", "\t", "line\nbreak", "\x1b[31mred"]


def deep(depth: int):
    v = "bottom"
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**60), max_value=10**60),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), st.sampled_from(NASTY_TEXT),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
nasty_values = st.one_of(values, st.integers(min_value=10, max_value=120).map(deep))


def paths_of(doc, prefix=()):
    """Every key path in a document (dict keys and list indexes)."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths_of(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths_of(v, prefix + (i,))
    return out


def set_at(doc, path, value):
    for p in path[:-1]:
        doc = doc[p]
    doc[path[-1]] = value


def delete_at(doc, path):
    for p in path[:-1]:
        doc = doc[p]
    del doc[path[-1]]


def dump(doc) -> bytes:
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=10_000)
    return text.encode("utf-8", "surrogatepass")
