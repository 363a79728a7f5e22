"""GPU figures: tokens/s and model FLOPs utilisation of tunebook's training and evaluation paths,
each beside a bare loop doing the same work, on a random-init Llama built from bench/gpu.yaml.

    python -m bench --gpu            # make bench-gpu: CUDA, ~370M params, bf16 (minutes)
    python -m bench --gpu --small    # any machine: a tiny float32 model on CPU, one thread (< 3 min)

| line | what | target |
| --- | --- | --- |
| `gpu_sft_tokens_per_s_{lora,full}` | tokens/s of `runtime.train.run` (the train stage itself) | >= 0.9 x the bare loop's |
| `gpu_sft_mfu_{lora,full}` | achieved training FLOP/s over the device's bf16 peak | >= 0.9 x the bare loop's |
| `gpu_sft_vs_bare_loop_ratio_{lora,full}` | tunebook tokens/s over a bare transformers+peft loop (same model, precision, batch, optimizer, clipping; no autocast, no checkpointing) | >= 0.90 |
| `gpu_kl_anchor_cost_ratio` | step time with `anchor: {type: kl}` over plain LoRA SFT | <= 1.30 (floor: one no-grad forward, ~ +1/3) |
| `gpu_eval_loglik_speedup` | lm-eval loglikelihood requests/s, HFLM built as runtime/suites/general.py builds it, general-suite batch size over 1 | >= 3 |
| `gpu_generate_tokens_per_s` | `runtime.generation.generate` at the target suite's batch size | >= 0.9 x a bare batched `generate` loop |
| `gpu_*_peak_mib` | peak memory of tunebook's side (CUDA: max allocated; CPU: peak RSS above the RSS at the side's start) | <= 1.1 x the bare side's |

FLOPs per trained token (PaLM appendix B convention): 6 x N for full fine-tuning, where N counts the
weights of every matmul (embedding lookups excluded, LM head included), plus 12 x layers x sequence x
hidden for attention scores; LoRA trains no weight gradient for frozen weights, so 4 x N_frozen + 6 x
N_adapter + the attention term. The peak is the datasheet's dense bf16 tensor-core figure for the
device (`PEAKS`); on CPU, and on a GPU not in the table, it is a measured matmul peak instead (said so
in the output), so MFU then means "share of what this machine's matmul reaches".

Sides alternate (tunebook, bare, [anchored]) in each repeat; medians. Training throughput is the
steady state after step `WARM_STEPS` (`steady_seconds`: on CUDA the synchronized window to the last
step, on CPU the median step), read on tunebook's side by a callback that only looks at the clock
(added to the trainer the train stage builds), on the bare side in its loop. Model loading, tokenization, trainer
set-up and teardown and the first steps are outside both clocks; the whole `trainer.train()` against
the whole bare loop is printed beside it as a comment (fixed costs per run). One torch thread on CPU,
as the stages run there.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench import line, observed_train_run

ROOT = Path(__file__).resolve().parent.parent
CONFIG = Path(__file__).with_name("gpu.yaml")
WARM_STEPS = 5  # steps before the clock starts: allocator growth, kernel selection, first log
WORDS = 1000  # tokenizer vocabulary: w0..w999 plus 4 specials; one word is one token
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]

# Dense bf16 tensor-core peak FLOP/s per device, from the vendors' datasheets (no sparsity). Matched
# by substring of torch.cuda.get_device_name(), longest key first ("H100 PCIe" before "H100").
PEAKS = {
    "B200": 2250e12,
    "H200": 989.5e12,
    "GH200": 989.5e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989.5e12,  # SXM (HBM3)
    "H800": 989.5e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "RTX 6000 Ada": 364e12,
    "RTX A6000": 154.8e12,
    "RTX 4090": 165.2e12,
    "RTX 3090": 71e12,
    "MI300X": 1307e12,
}


# ---------------------------------------------------------------------------------------------------
# arithmetic (tests/unit/test_bench_gpu.py checks it)


def matmul_params(cfg: dict) -> int:
    """Weights that take part in a matmul per token: attention and MLP projections and the LM head
    (embedding lookups and norms do no matmul)."""
    d, layers, inter, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    head_dim = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    attn = d * head_dim * cfg["num_attention_heads"] * 2 + d * head_dim * kv * 2  # q, o; k, v
    return layers * (attn + 3 * d * inter) + d * vocab


def lora_params(cfg: dict, r: int) -> int:
    """Adapter weights of LoRA rank r on every linear layer of each block (peft's all-linear leaves out
    the LM head): A (in x r) plus B (r x out) per projection."""
    d, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    head_dim = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    q = head_dim * cfg["num_attention_heads"]
    kv = head_dim * (cfg.get("num_key_value_heads") or cfg["num_attention_heads"])
    shapes = [(d, q), (d, kv), (d, kv), (q, d), (d, inter), (d, inter), (inter, d)]
    return layers * sum(r * (i + o) for i, o in shapes)


def train_flops_per_token(cfg: dict, seq_len: int, lora_r: int | None) -> float:
    """Training FLOPs per token: forward 2N, backward 4N (2N for input grads, 2N for weight grads, which
    frozen LoRA bases skip), and attention scores 12 x layers x seq x (heads x head_dim)."""
    n = matmul_params(cfg)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    attention = 12 * cfg["num_hidden_layers"] * seq_len * head_dim * cfg["num_attention_heads"]
    if lora_r is None:
        return 6 * n + attention
    return 4 * n + 6 * lora_params(cfg, lora_r) + attention


def device_peak(name: str) -> float | None:
    """The datasheet bf16 peak of a CUDA device by name, or None when it is not in PEAKS."""
    for key in sorted(PEAKS, key=len, reverse=True):
        if key.lower() in name.lower():
            return PEAKS[key]
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak: float) -> float:
    return tokens_per_s * flops_per_token / peak


def measured_matmul_peak(device: str, dtype, n: int, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n matmul here: the denominator where no datasheet figure applies."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
    return best


# ---------------------------------------------------------------------------------------------------
# measuring


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _rss_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


class Peak:
    """Peak memory of one side, in MiB. CUDA: max allocated (caches emptied first). CPU: the process's
    peak RSS (VmHWM, reset through /proc/self/clear_refs) above its RSS at the start."""

    def __init__(self, device: str):
        self.device, self.mib = device, 0.0

    def __enter__(self):
        import torch

        if self.device == "cuda":  # on CPU a whole-heap collection per side costs ~0.5 s and frees no RSS
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            Path("/proc/self/clear_refs").write_text("5")
            self._start = _rss_kib("VmRSS")
        return self

    def __exit__(self, *exc):
        import torch

        if self.device == "cuda":
            self.mib = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.mib = (_rss_kib("VmHWM") - self._start) / 1024


def rotate(sides: dict, repeats: int, device: str) -> dict:
    """Run each side in turn, `repeats` rounds. A side returns its own seconds (one clock, or a tuple of
    clocks). Returns {name: (median seconds (per clock), highest peak MiB)}."""
    secs = {k: [] for k in sides}
    peaks = {k: 0.0 for k in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            with Peak(device) as p:
                secs[name].append(fn())
            peaks[name] = max(peaks[name], p.mib)
    med = {k: tuple(map(statistics.median, zip(*v))) if isinstance(v[0], tuple) else statistics.median(v) for k, v in secs.items()}
    return {k: (med[k], peaks[k]) for k in sides}


def memory_line(name: str, ours: float, bare: float, device: str, labels: tuple[str, str] = ("tunebook", "bare")) -> None:
    what = "max CUDA memory allocated" if device == "cuda" else "peak RSS above the side's starting RSS"
    print(f"# {name}: {what}: {labels[0]} {ours:.0f} MiB, {labels[1]} {bare:.0f} MiB", flush=True)
    line(name, ours, "MiB" if device == "cuda" else "MiB-rss", "<=", round(1.1 * bare, 1))


# ---------------------------------------------------------------------------------------------------
# the model, the tokenizer, the rows


def build_model(folder: Path, size: dict) -> int:
    """A random-init Llama and a word-level tokenizer (one word, one token), saved as a model folder in
    the size's dtype. Returns the number of parameters."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + [f"w{i}" for i in range(WORDS)])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.add_special_tokens(SPECIALS)  # matched before splitting: trl appends "</s>" to the last word
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    cfg = LlamaConfig(**size["model"], pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # no early EOS in greedy decoding: every prompt generates max_new_tokens
        model.lm_head.weight[: len(SPECIALS)] = 0.0
    model.to(getattr(torch, size["dtype"])).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    (folder / "generation_config.json").unlink(missing_ok=True)
    return sum(p.numel() for p in model.parameters())


def words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(WORDS)}" for _ in range(n))


def sft_rows(sft: dict) -> list[dict]:
    rng = random.Random(0)
    n = sft["steps"] * sft["batch_size"]
    return [{"prompt": words(rng, sft["prompt_tokens"]), "completion": " " + words(rng, sft["completion_tokens"])} for _ in range(n)]


def seq_len(sft: dict) -> int:
    return sft["prompt_tokens"] + sft["completion_tokens"] + 1  # + EOS


# ---------------------------------------------------------------------------------------------------
# training: tunebook's train stage, and the bare loop


def project(root: Path, size: dict, rows: list[dict]) -> dict:
    """A throwaway project with the model, the rows and three compiled specs (LoRA, full, LoRA + KL
    anchor), their data stages run. Returns {name: StageContext}."""
    from tunebook.compiler import compile_specs, load_specs, write_pipeline
    from tunebook.runtime import data
    from tunebook.runtime.context import experiment_context
    from tunebook.runtime.stages import _quiet_libraries

    sft = size["sft"]
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    method = {"kind": "sft", "lr": 1e-4, "max_steps": sft["steps"], "batch_size": sft["batch_size"],
              "max_seq_length": seq_len(sft), "log_every": 10, "watchdog": {"samples_every": None}}
    variants = {"sft_lora": {"lora": size["lora"]}, "sft_full": {"lora": None},
                "sft_kl": {"lora": size["lora"], "anchor": {"type": "kl", "coef": 0.1}}}
    (root / "specs").mkdir(exist_ok=True)
    for name, extra in variants.items():
        spec = {"name": name, "model": {"base": "models/llama", "dtype": size["dtype"]},
                "data": {"train": [{"source": "data/rows.jsonl"}]}, "method": {**method, **extra}}
        (root / "specs" / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    write_pipeline(root, compile_specs(load_specs(sorted((root / "specs").glob("*.yaml")), root)), force=True)
    _quiet_libraries()
    ctxs = {}
    for name in variants:
        ctxs[name] = experiment_context(root, name)
        with contextlib.redirect_stdout(io.StringIO()):
            data.run(ctxs[name])
    return ctxs


def steady_seconds(ends: list[float], device: str) -> float:
    """Seconds of the steps after WARM_STEPS, from `ends` (the clock at the end of steps 1, 2, ...).
    CPU: the median step time times their number, so a burst of other people's load on the shared
    machine does not land in one side's figure; CUDA: the window between the two synchronized marks
    (kernels run ahead of the host: only synchronized readings mean anything)."""
    after = ends[WARM_STEPS - 1 :]
    if device == "cuda":
        return after[-1] - after[0]
    return statistics.median(b - a for a, b in zip(after, after[1:])) * (len(after) - 1)


def step_clock(device: str):
    """A trainer callback that only reads the clock at each step's end (synchronizing the device at
    the end of step WARM_STEPS and of the last step)."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kw):
            if state.global_step in (WARM_STEPS, state.max_steps):
                sync(device)
            self.ends.append(time.perf_counter())

    return StepClock()


def tunebook_seconds(ctx, device: str) -> tuple[float, float]:
    """One fresh run of the train stage: (steady-state seconds after step WARM_STEPS, training seconds
    as its summary.json times them). The stage builds its trainer itself; the clock is added to it."""
    clock = step_clock(device)
    observed_train_run(ctx, clock)
    whole = json.loads((ctx.run_dir / "train" / "summary.json").read_text())["timings"]["training"]
    return steady_seconds(clock.ends, device), whole


def bare_seconds(folder: Path, size: dict, rows: list[dict], lora: bool, device: str) -> tuple[float, float]:
    """The same training as a plain transformers+peft loop: AdamW as the Trainer picks it, linear decay,
    gradient clipping at 1.0, prompt tokens masked; the weights' own precision, no autocast, no
    gradient checkpointing. Returns (steady-state seconds after step WARM_STEPS, seconds from optimizer
    creation to the last step's end)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sft, dtype = size["sft"], getattr(torch, size["dtype"])
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    if lora:
        lc = size["lora"]
        model = get_peft_model(model, LoraConfig(r=lc["r"], lora_alpha=lc["alpha"], lora_dropout=lc["dropout"],
                                                 target_modules=lc["target_modules"], task_type="CAUSAL_LM"))
    model.to(device).train()
    ids = [tok(r["prompt"])["input_ids"] + tok(r["completion"])["input_ids"] + [tok.eos_token_id] for r in rows]
    input_ids = torch.tensor(ids)
    labels = input_ids.clone()
    labels[:, : sft["prompt_tokens"]] = -100
    b = sft["batch_size"]
    batches = [(input_ids[i : i + b], labels[i : i + b]) for i in range(0, len(rows), b)][: sft["steps"]]

    sync(device)
    t0 = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, fused=device == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / sft["steps"])
    ends = []
    for step, (x, y) in enumerate(batches, 1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = model(input_ids=x, labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step in (WARM_STEPS, len(batches)):
            sync(device)
        ends.append(time.perf_counter())
    return steady_seconds(ends, device), ends[-1] - t0


# ---------------------------------------------------------------------------------------------------
# evaluation: lm-eval loglikelihood, batched generation


def loglik_requests(n: int, context_tokens: int) -> list:
    from lm_eval.api.instance import Instance

    rng = random.Random(1)
    reqs = []
    for i in range(n):
        ctx = words(rng, rng.randint(context_tokens // 2, context_tokens))  # lengths vary, as in real tasks
        reqs.append(Instance(request_type="loglikelihood", doc={}, arguments=(ctx, " " + words(rng, rng.randint(1, 4))), idx=i))
    return reqs


def bare_generate(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int) -> int:
    """What anyone would write: left-padded batches through model.generate, greedy. Returns new tokens."""
    import torch

    tok.padding_side = "left"
    new = 0
    for i in range(0, len(prompts), batch_size):
        enc = tok(prompts[i : i + batch_size], return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        new += (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    return new


# ---------------------------------------------------------------------------------------------------


def main(small: bool = False) -> None:
    import datasets
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not small:
        print("# bench_gpu: no CUDA device here: running the --small size on CPU instead", flush=True)
        small = True
    device = "cuda" if cuda and not small else "cpu"
    size = yaml.safe_load(CONFIG.read_text())["small" if small else "gpu"]
    if device == "cpu":
        torch.set_num_threads(1)  # as the stages run on CPU (runtime/stages.py: _cpu_threads)
    datasets.disable_progress_bars()
    import logging

    logging.getLogger("lm_eval").setLevel(logging.ERROR)

    versions = {m: __import__(m).__version__ for m in ("torch", "transformers", "peft", "trl", "lm_eval")}
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} torch thread(s)"
    print(f"# {where}; {', '.join(f'{k} {v}' for k, v in versions.items())}", flush=True)

    peak, dtype = None, getattr(torch, size["dtype"])
    if device == "cuda":
        peak = device_peak(where)
        if peak:
            print(f"# MFU denominator: {where} datasheet dense bf16 peak {peak / 1e12:.0f} TFLOP/s", flush=True)
    if peak is None:
        peak = measured_matmul_peak(device, dtype, 4096 if device == "cuda" else 512)
        print(f"# MFU denominator: MEASURED {size['dtype']} matmul peak here, {peak / 1e9:.1f} GFLOP/s "
              f"({'device not in PEAKS' if device == 'cuda' else 'CPU: no datasheet figure'})", flush=True)

    sft = size["sft"]
    rows = sft_rows(sft)
    with tempfile.TemporaryDirectory(prefix="tunebook-bench-gpu-") as d:
        root = Path(d)
        folder = root / "models" / "llama"
        n_params = build_model(folder, size)
        print(f"# random-init Llama {n_params / 1e6:.1f}M params, {size['dtype']}, {device}; SFT {sft['steps']} steps x "
              f"batch {sft['batch_size']} x {seq_len(sft)} tokens; {sft['repeats']} alternated repeats, medians", flush=True)
        ctxs = project(root, size, rows)
        model_spec = {"base": "models/llama", "dtype": size["dtype"]}
        # each part reports on its own: a failure (out of memory, say) leaves the others' lines standing
        for part in (lambda: train_lora_and_kl(ctxs, folder, size, rows, peak, device),
                     lambda: train_full(ctxs, folder, size, rows, peak, device),
                     lambda: evaluation(root, model_spec, size, device)):
            t0 = time.perf_counter()
            try:
                part()
            except Exception:  # noqa: BLE001 - a benchmark reports, it never fails the build
                import traceback

                print("# part failed:\n# " + traceback.format_exc().replace("\n", "\n# "), flush=True)
            print(f"# ({time.perf_counter() - t0:.0f} s)", flush=True)


def train_lora_and_kl(ctxs: dict, folder: Path, size: dict, rows: list[dict], peak: float, device: str) -> None:
    """LoRA: tunebook, the bare loop and tunebook with the KL anchor, in rotation."""
    sft, cfg = size["sft"], size["model"]
    steady = (sft["steps"] - WARM_STEPS) * sft["batch_size"] * seq_len(sft)  # tokens on the steady-state clock
    tokens = sft["steps"] * sft["batch_size"] * seq_len(sft)  # tokens of a whole run
    tunebook_seconds(ctxs["sft_lora"], device)  # warm-up: first-call imports, allocator, kernels on no clock
    bare_seconds(folder, size, rows, True, device)
    if device == "cuda":  # new shapes, new kernels; on CPU the median of the repeats absorbs a first run
        tunebook_seconds(ctxs["sft_kl"], device)
    got = rotate({"tunebook": lambda: tunebook_seconds(ctxs["sft_lora"], device),
                  "bare": lambda: bare_seconds(folder, size, rows, True, device),
                  "kl": lambda: tunebook_seconds(ctxs["sft_kl"], device)}, sft["repeats"], device)
    report_sft("lora", got, steady, tokens, train_flops_per_token(cfg, seq_len(sft), size["lora"]["r"]), peak, device)
    ((t_kl, _), m_kl), ((t_plain, _), m_plain) = got["kl"], got["tunebook"]
    per_step = sft["steps"] - WARM_STEPS
    print(f"# KL anchor: {t_kl / per_step * 1e3:.1f} ms/step vs {t_plain / per_step * 1e3:.1f} ms/step plain LoRA", flush=True)
    line("gpu_kl_anchor_cost_ratio", t_kl / t_plain, "x", "<=", 1.30)
    memory_line("gpu_kl_anchor_peak_mib", m_kl, m_plain, device, ("anchored", "plain LoRA"))


def train_full(ctxs: dict, folder: Path, size: dict, rows: list[dict], peak: float, device: str) -> None:
    sft, cfg = size["sft"], size["model"]
    steady = (sft["steps"] - WARM_STEPS) * sft["batch_size"] * seq_len(sft)
    tokens = sft["steps"] * sft["batch_size"] * seq_len(sft)
    if device == "cuda":
        tunebook_seconds(ctxs["sft_full"], device)
        bare_seconds(folder, size, rows, False, device)
    got = rotate({"tunebook": lambda: tunebook_seconds(ctxs["sft_full"], device),
                  "bare": lambda: bare_seconds(folder, size, rows, False, device)}, sft["repeats"], device)
    report_sft("full", got, steady, tokens, train_flops_per_token(cfg, seq_len(sft), None), peak, device)
    shutil.rmtree(ctxs["sft_full"].run_dir, ignore_errors=True)  # a full checkpoint with optimizer state


def evaluation(root: Path, model_spec: dict, size: dict, device: str) -> None:
    """Both evaluation figures on one loaded model, as the eval stage loads it."""
    from tunebook.compiler.schema import GeneralEval, ModelSpec, TargetTask
    from tunebook.runtime.models import load_model, load_tokenizer

    spec = ModelSpec(**model_spec)
    model, tok = load_model(root, spec).to(device).eval(), load_tokenizer(root, spec)
    eval_loglik(model, tok, size, GeneralEval.model_fields["batch_size"].default, device)
    eval_generate(model, tok, size, TargetTask.model_fields["batch_size"].default, device)


def report_sft(kind: str, got: dict, steady: int, tokens: int, flops_per_token: float, peak: float, device: str) -> None:
    ((t_tb, whole_tb), m_tb), ((t_bare, whole_bare), m_bare) = got["tunebook"], got["bare"]
    tps, tps_bare = steady / t_tb, steady / t_bare
    mfu_tb, mfu_bare = mfu(tps, flops_per_token, peak), mfu(tps_bare, flops_per_token, peak)
    print(f"# {kind} SFT, steady state: tunebook {tps:,.0f} tokens/s (MFU {mfu_tb:.1%}), bare loop {tps_bare:,.0f} tokens/s "
          f"(MFU {mfu_bare:.1%}); {flops_per_token / 1e6:.3g} MFLOP per token", flush=True)
    print(f"# {kind} SFT, whole run with set-up and teardown: tunebook {tokens / whole_tb:,.0f} tokens/s, "
          f"bare {tokens / whole_bare:,.0f} tokens/s ({whole_bare / whole_tb:.2f}x)", flush=True)
    line(f"gpu_sft_tokens_per_s_{kind}", tps, "tokens/s", ">=", round(0.9 * tps_bare, 1))
    line(f"gpu_sft_mfu_{kind}", mfu_tb, "fraction", ">=", float(f"{0.9 * mfu_bare:.3g}"))
    line(f"gpu_sft_vs_bare_loop_ratio_{kind}", tps / tps_bare, "x", ">=", 0.90)
    memory_line(f"gpu_sft_peak_mib_{kind}", m_tb, m_bare, device)


def eval_loglik(model, tok, size: dict, batch_size: int, device: str) -> None:
    """lm-eval's HFLM as runtime/general.eval_general builds it, at the general suite's batch size and at 1."""
    from tunebook.runtime.suites.general import _quiet_hflm

    ll = size["loglik"]
    reqs = loglik_requests(ll["requests"], ll["context_tokens"])

    def lm(bs: int):
        return _quiet_hflm()(pretrained=model, tokenizer=tok, batch_size=bs, max_length=model.config.max_position_embeddings,
                             add_bos_token=bool(getattr(tok, "add_bos_token", False)))

    batched, single = lm(batch_size), lm(1)
    ref = single.loglikelihood(reqs)  # warm-up, and a check that batching changes no score
    worst = max(abs(a[0] - b[0]) for a, b in zip(ref, batched.loglikelihood(reqs)))

    def timed(m):
        def run():
            sync(device)
            t0 = time.perf_counter()
            m.loglikelihood(reqs)
            sync(device)
            return time.perf_counter() - t0
        return run

    got = rotate({"batched": timed(batched), "single": timed(single)}, ll["repeats"], device)
    (t_b, m_b), (t_1, m_1) = got["batched"], got["single"]
    print(f"# {len(reqs)} loglikelihood requests: batch {batch_size} {len(reqs) / t_b:,.0f} req/s, batch 1 {len(reqs) / t_1:,.0f} req/s; "
          f"max |delta logprob| {worst:.2e}", flush=True)
    line("gpu_eval_loglik_speedup", t_1 / t_b, "x", ">=", 3)
    memory_line("gpu_eval_loglik_peak_mib", m_b, m_1, device, (f"batch {batch_size}", "batch 1"))


def eval_generate(model, tok, size: dict, batch_size: int, device: str) -> None:
    """runtime.generation.generate (the target suite's loop) beside a bare batched generate loop."""
    from tunebook.runtime.generation import generate

    g = size["generate"]
    rng = random.Random(2)
    prompts = [words(rng, g["prompt_tokens"]) for _ in range(g["prompts"])]
    new = bare_generate(model, tok, prompts, g["max_new_tokens"], batch_size)  # warm-up
    generate(model, tok, prompts, g["max_new_tokens"], batch_size)
    if new != len(prompts) * g["max_new_tokens"]:
        print(f"# generate: {new} new tokens, not {len(prompts) * g['max_new_tokens']}: some batch stopped early", flush=True)

    def timed(loop):  # one side of the comparison: the same prompts, timed between device syncs
        def run():
            sync(device)
            t0 = time.perf_counter()
            loop(model, tok, prompts, g["max_new_tokens"], batch_size)
            sync(device)
            return time.perf_counter() - t0
        return run

    ours, bare = timed(generate), timed(bare_generate)

    got = rotate({"tunebook": ours, "bare": bare}, g["repeats"], device)
    (t_tb, m_tb), (t_bare, m_bare) = got["tunebook"], got["bare"]
    print(f"# generate, {len(prompts)} prompts x {g['max_new_tokens']} new tokens, batch {batch_size}: tunebook "
          f"{new / t_tb:,.0f} tokens/s, bare generate loop {new / t_bare:,.0f} tokens/s", flush=True)
    line("gpu_generate_tokens_per_s", new / t_tb, "tokens/s", ">=", round(0.9 * new / t_bare, 1))
    memory_line("gpu_generate_peak_mib", m_tb, m_bare, device)


if __name__ == "__main__":
    main(small="--small" in sys.argv)
