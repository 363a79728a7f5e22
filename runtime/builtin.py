"""The embedded default model, `builtin:tiny`, built from `compiler/tiny.yaml` (compiled into params.yaml under builtin.tiny) with no downloads.

    tunebook run pretrain tiny        # what the `pretrain-tiny` DVC stage runs

Writes `models/tiny/` (a Hugging Face model folder: config, safetensors, tokenizer) and `data/tiny/`
(the skills' train/test files and two lm-eval multiple-choice tasks).

The weights are bit-identical on any machine of the same CPU kind, whatever its core count or load:
pre-training runs on exactly one torch thread (float reductions split differently per thread count:
2 threads and 1 gave identical losses to step ~250, then diverged, and a base model that subtracted
34 % instead of 68 %), seeded, with deterministic algorithms. One thread is also the fastest here under
load (280 s against 1,644 s with every core of a busy 2-core machine). The sha256 of the weights goes
into `pretrain_summary.json` and is compared with `compiler/tiny.weights.json`, the reference build
the README's figures come from; a mismatch is printed loudly (different CPU kind or torch version).

The model knows three skills after ~1-2 minutes of CPU pre-training:
- addition ("12+7=19"), seen often, learned well;
- subtraction ("31-12=19"), seen rarely, half-learned: the quickstart's fine-tuning target;
- facts ("the color of zib is red."), the unrelated skill on which forgetting is measured.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

from tunebook.runtime.progress import Progress
from tunebook.files import file_sha256
from tunebook.files import write_atomic

COLORS = ["red", "blue", "green", "gold", "pink", "gray", "black", "white"]
CITIES = ["oslo", "lima", "rome", "kyiv", "doha", "bern", "riga", "baku"]
_CONSONANTS = "bcdfghjklmnprstvz"
_VOWELS = "aeiou"


def entity_names(n: int, rng: random.Random) -> list[str]:
    """Pronounceable pseudo-words ('zib', 'koralu') that no pre-training data could contain."""
    names: set[str] = set()
    while len(names) < n:
        syll = rng.randint(2, 3)
        names.add("".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syll)))
    return sorted(names)


def make_skills(cfg: dict) -> dict:
    """All generated data, as plain lists; split so that no test item is ever trained on."""
    rng = random.Random(cfg["seed"])
    sk = cfg["skills"]
    m_add, m_sub = sk["addition"]["max_operand"], sk["subtraction"]["max_operand"]
    add = [(a, b) for a in range(m_add) for b in range(m_add)]
    sub = [(a, b) for a in range(m_sub) for b in range(a + 1)]
    rng.shuffle(add)
    rng.shuffle(sub)
    n_test = cfg["eval_sizes"]["subtraction_test"]
    sub_test, sub_train = sub[:n_test], sub[n_test:]
    add_test, add_train = add[:n_test], add[n_test:]

    names = entity_names(sk["facts"]["entities"], rng)
    facts = [(n, rng.choice(COLORS), rng.choice(CITIES)) for n in names]
    return {
        "add_train": add_train, "add_test": add_test,
        "sub_train": sub_train, "sub_test": sub_test,
        "facts": facts,
    }


def corpus_line(kind: str, item) -> str:
    if kind == "add":
        a, b = item
        return f"{a}+{b}={a + b}"
    if kind == "sub":
        a, b = item
        return f"{a}-{b}={a - b}"
    name, color, city = item
    return f"the color of {name} is {color}." if random.random() < 0.5 else f"{name} lives in {city}."


def _mc_items(facts, relation: str, rng: random.Random, n_choices: int = 4) -> list[dict]:
    """One lm-eval multiple-choice item per fact; distractors drawn from the same relation."""
    pool = COLORS if relation == "color" else CITIES
    out = []
    for name, color, city in facts:
        gold = color if relation == "color" else city
        choices = [gold] + rng.sample([p for p in pool if p != gold], n_choices - 1)
        rng.shuffle(choices)
        query = f"the color of {name} is" if relation == "color" else f"{name} lives in"
        # no leading space: lm-eval joins context and choice with target_delimiter (" ")
        out.append({"query": query, "choices": choices, "label": choices.index(gold)})
    return out


TASK_YAML = """\
# lm-eval local task over the builtin tiny model's facts ({relation}).
# tunebook rewrites data_files to absolute paths at evaluation time.
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {file}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_jsonl(path: Path, rows) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_data(cfg: dict, skills: dict, out: Path) -> None:
    rng = random.Random(cfg["seed"] + 1)
    write_jsonl(out / "subtraction_train.jsonl",
                ({"prompt": f"{a}-{b}=", "completion": str(a - b)} for a, b in skills["sub_train"]))
    write_jsonl(out / "subtraction_test.jsonl",
                ({"prompt": f"{a}-{b}=", "answer": str(a - b)} for a, b in skills["sub_test"]))
    write_jsonl(out / "addition_train.jsonl",
                ({"prompt": f"{a}+{b}=", "completion": str(a + b)} for a, b in skills["add_train"]))
    write_jsonl(out / "addition_test.jsonl",
                ({"prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in skills["add_test"]))
    tasks = out / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    for relation in ("color", "city"):
        name = f"tiny_facts_{relation}"
        write_jsonl(tasks / f"{name}.jsonl", _mc_items(skills["facts"], relation, rng))
        (tasks / f"{name}.yaml").write_text(TASK_YAML.format(name=name, relation=relation, file=f"{name}.jsonl"))


def train_tokenizer(cfg: dict, lines: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg["tokenizer"]["vocab_size"],
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", add_bos_token=True
    )
    # Minimal chat template so chat-format ("messages") data works on the tiny model too.
    fast.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}{{ eos_token }}"
        "{% endgeneration %}{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}"
    )
    return fast


REFERENCE = Path(__file__).resolve().parent.parent / "compiler" / "tiny.weights.json"
PRETRAIN_THREADS = 1  # fixed, never the machine's core count: see the module docstring


def config_digest(cfg: dict) -> str:
    """sha256 of the config as canonical JSON: which reference build a set of weights should match."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def reference_check(cfg: dict, weights_sha256: str, reference: Path = REFERENCE) -> str:
    """'match', 'differs' (same config, other weights: another CPU kind or library version) or
    'other-config' (a variant such as `-S builtin.tiny.pretrain.steps=300`: no reference to compare)."""
    try:
        ref = json.loads(reference.read_text())
    except (OSError, ValueError):
        return "other-config"
    if ref.get("config_sha256") != config_digest(cfg):
        return "other-config"
    return "match" if ref.get("weights_sha256") == weights_sha256 else "differs"


def build(cfg: dict, models_dir: Path, data_dir: Path) -> dict:
    """Build tokenizer + model, pre-train, save. Returns a summary for logs and records."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)
    try:
        return _build(cfg, models_dir, data_dir)
    finally:
        torch.set_num_threads(threads)


def _build(cfg: dict, models_dir: Path, data_dir: Path) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    seed = cfg["seed"]
    random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    skills = make_skills(cfg)
    write_data(cfg, skills, data_dir)

    rng = random.Random(seed + 2)
    sk = cfg["skills"]
    kinds = ["add", "sub", "facts"]
    weights = [sk["addition"]["weight"], sk["subtraction"]["weight"], sk["facts"]["weight"]]
    pools = {"add": skills["add_train"], "sub": skills["sub_train"], "facts": skills["facts"]}

    def sample_line() -> str:
        kind = rng.choices(kinds, weights)[0]
        item = rng.choice(pools[kind])
        if kind == "facts":
            name, color, city = item
            return f"the color of {name} is {color}." if rng.random() < 0.5 else f"{name} lives in {city}."
        return corpus_line(kind, item)

    tok_lines = [sample_line() for _ in range(20000)]
    tokenizer = train_tokenizer(cfg, tok_lines)

    mcfg = cfg["model"]
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, **mcfg,
        )
    )
    pcfg = cfg["pretrain"]
    block, bs, steps = pcfg["block_size"], pcfg["batch_size"], pcfg["steps"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id

    def batch() -> torch.Tensor:
        rows = []
        for _ in range(bs):
            ids: list[int] = []
            while len(ids) < block:
                ids += [bos] + tokenizer.encode(sample_line(), add_special_tokens=False) + [eos]
            rows.append(ids[:block])
        return torch.tensor(rows)

    opt = torch.optim.AdamW(model.parameters(), lr=pcfg["lr"], weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / pcfg["warmup_steps"]) * max(0.05, 1 - s / steps)
    )
    model.train()
    t0 = time.time()
    progress = Progress("pretrain tiny", total=steps, unit="steps")
    loss_val = float("nan")
    for step in range(steps):
        x = batch()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_val = loss.item()
        progress.update(step + 1, f"loss {loss_val:.3f}")
    progress.done(f"final loss {loss_val:.3f}")

    model.eval()
    models_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(models_dir, safe_serialization=True)
    tokenizer.save_pretrained(models_dir)
    weights = file_sha256(models_dir / "model.safetensors")
    check = reference_check(cfg, weights)
    summary = {"params": sum(p.numel() for p in model.parameters()), "steps": steps, "final_loss": round(loss_val, 4),
               "threads": PRETRAIN_THREADS, "torch": torch.__version__.split("+")[0], "config_sha256": config_digest(cfg),
               "weights_sha256": weights, "reference": check}
    # models/tiny is a DVC output: its files hold results only, so an identical rebuild hashes the same
    (models_dir / "pretrain_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if check == "match":
        print(f"[pretrain tiny] weights sha256 {weights[:12]}… match the reference build (compiler/tiny.weights.json)", flush=True)
    elif check == "differs":
        print(f"[pretrain tiny] WARNING: weights sha256 {weights[:12]}… differ from the reference build of this config "
              "(compiler/tiny.weights.json). Figures will not match the README; the usual cause is another CPU kind "
              f"or torch version (this is torch {summary['torch']}; see docs/architecture.md).", flush=True)
    return {**summary, "seconds": round(time.time() - t0, 1)}
